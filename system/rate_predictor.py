"""A learned rate predictor feeding the exact optimizer (the alternative to a learned plan).

From the device's last k one-second samples of both directions it predicts each direction's
throughput over the next ``horizon_s`` seconds, by ridge regression of its log10 on the log
samples over every quarter second of the training routes, and hands the optimizer those
rates. The log target estimates a typical rate, not the mean time of a transfer: a target
weighted by outages (the expected time of a fixed transfer) gives a pessimistic rate, which
pushes work onto the slow device. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from system.linktrace import LinkPair
from system.realised import log_history
from system.traces import ZERO_FLOOR_BPS

HORIZON_S = 3.0
RIDGE = 1e-3


@dataclass(frozen=True, eq=False)
class RatePredictor:
    """Ridge coefficients (1 + 2k, 2) over [1, history features] -> log10 (up, down) bit/s."""

    coef: np.ndarray
    horizon_s: float = HORIZON_S

    @classmethod
    def fit(cls, routes: list[LinkPair] | tuple[LinkPair, ...], history_k: int,
            stride_s: float = 0.25, horizon_s: float = HORIZON_S) -> RatePredictor:
        """Fit on every ``stride_s`` of every route after its first ``history_k`` seconds."""
        X, Y = [], []
        for r in routes:
            t = np.arange(float(history_k), r.period_s - horizon_s, stride_s)
            X.append(log_history(r.up.throughput_bps(t, history_k),
                                      r.down.throughput_bps(t, history_k)))
            Y.append(np.stack([(c.delivered_bits(t + horizon_s) - c.delivered_bits(t))
                               / horizon_s for c in (r.up, r.down)], axis=1))
        A = np.concatenate(X)
        A = np.concatenate([np.ones((len(A), 1)), A], axis=1)
        y = np.log10(np.maximum(np.concatenate(Y), ZERO_FLOOR_BPS))
        G = A.T @ A + RIDGE * len(A) * np.eye(A.shape[1])
        return cls(np.linalg.solve(G, A.T @ y), horizon_s)

    def predict(self, up_hist_bps: np.ndarray, down_hist_bps: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted (up, down) rates in bit/s for histories (N, k) each."""
        f = log_history(up_hist_bps, down_hist_bps)
        A = np.concatenate([np.ones((len(f), 1)), f], axis=1)
        r = np.maximum(10.0 ** (A @ self.coef), ZERO_FLOOR_BPS)
        return r[:, 0], r[:, 1]
