"""A learned rate predictor feeding the exact optimizer (the alternative to a learned plan).

It predicts, from the device's last k one-second samples of both directions, the expected
time a reference transfer of ``ref_bits`` starting now takes per direction (outages
included), by ridge regression on the log samples over every second of the training
routes, and hands the optimizer the effective rate ``ref_bits / predicted time``. Least
squares on the time, not on the log rate, so an outage's long wait weighs what it costs.
numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from system.linktrace import LinkPair
from system.realised import history_features
from system.traces import ZERO_FLOOR_BPS

#: Reference transfer: 1 Mbit, about a raw 224x224 RGB image at 8 bits (1.2 Mbit).
REF_BITS = 1.0e6
RIDGE = 1e-3


@dataclass(frozen=True, eq=False)
class RatePredictor:
    """Ridge coefficients per direction over [1, history features]."""

    coef_up: np.ndarray
    coef_down: np.ndarray
    ref_bits: float = REF_BITS

    @classmethod
    def fit(cls, routes: list[LinkPair] | tuple[LinkPair, ...], history_k: int,
            stride_s: float = 0.25, ref_bits: float = REF_BITS) -> RatePredictor:
        """Fit on every ``stride_s`` of every route after its first ``history_k`` seconds."""
        X, yu, yd = [], [], []
        for r in routes:
            t = np.arange(float(history_k), r.period_s - 1.0, stride_s)
            X.append(history_features(r.up.throughput_bps(t, history_k),
                                      r.down.throughput_bps(t, history_k)))
            yu.append(r.up.drain_s(t, ref_bits))
            yd.append(r.down.drain_s(t, ref_bits))
        A = np.concatenate(X)
        A = np.concatenate([np.ones((len(A), 1)), A], axis=1)
        G = A.T @ A + RIDGE * len(A) * np.eye(A.shape[1])
        return cls(np.linalg.solve(G, A.T @ np.concatenate(yu)),
                   np.linalg.solve(G, A.T @ np.concatenate(yd)), ref_bits)

    def predict(self, up_hist_bps: np.ndarray, down_hist_bps: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Effective (up, down) rates in bit/s for histories (N, k) each."""
        f = history_features(up_hist_bps, down_hist_bps)
        A = np.concatenate([np.ones((len(f), 1)), f], axis=1)
        hi = np.maximum(up_hist_bps.max(axis=1), down_hist_bps.max(axis=1)) * 10 + 1e6
        out = []
        for coef in (self.coef_up, self.coef_down):
            t = np.maximum(A @ coef, self.ref_bits / hi)     # a time no faster than 10x seen
            out.append(np.maximum(self.ref_bits / t, ZERO_FLOOR_BPS))
        return out[0], out[1]
