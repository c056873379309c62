"""What a trace policy observes (DESIGN.md §8): the request as a certainty-equivalent planner
sees it, plus the device's recent past.

The observation is the project's request encoding of the planning request (rates at the mean
of the last k seconds, the device at its last share) followed by the history:

* per direction, the k one-second samples relative to their mean, log10, oldest first (the
  shape of the recent past: a fade, an outage);
* per direction, the share of those seconds below a tenth of the mean (outage pressure);
* the compute share now and its mean over the observed steps;
* log10 of the deadline over the server-only plan's expected latency.

numpy only: the runtime computes the same features from the samples a caller passes.
"""

from __future__ import annotations

import numpy as np

from system.codec import ObservationEncoder
from system.request import Request

#: Floor of a relative sample before the log (a zero-throughput second reads as -3).
REL_FLOOR = 1e-3
#: A second below this fraction of the mean counts as an outage.
OUTAGE_FRACTION = 0.1


def history_names(k: int) -> list[str]:
    """Names of the history features, in order."""
    return ([f"up_rel_{j}" for j in range(k)] + [f"down_rel_{j}" for j in range(k)]
            + ["up_outage_share", "down_outage_share", "share_now", "share_mean",
               "deadline_rel"])


def history_features(up_hist_bps: np.ndarray, down_hist_bps: np.ndarray,
                     share_hist: np.ndarray, deadline_rel: np.ndarray) -> np.ndarray:
    """(N, 2k + 5) float64 history features (see the module doc); ``deadline_rel`` is the
    deadline over the server-only plan's expected latency."""
    out = []
    for h in (np.asarray(up_hist_bps, np.float64), np.asarray(down_hist_bps, np.float64)):
        m = np.maximum(h.mean(axis=1, keepdims=True), 1.0)
        out.append(np.log10(np.maximum(h / m, REL_FLOOR)))
    for h in (np.asarray(up_hist_bps, np.float64), np.asarray(down_hist_bps, np.float64)):
        m = h.mean(axis=1, keepdims=True)
        out.append(np.mean(h < OUTAGE_FRACTION * m, axis=1, keepdims=True))
    s = np.asarray(share_hist, np.float64)
    out.append(s[:, -1:])
    out.append(s.mean(axis=1, keepdims=True))
    out.append(np.log10(np.asarray(deadline_rel, np.float64))[:, None])
    return np.concatenate(out, axis=1)


def trace_observation(encoder: ObservationEncoder, planning: list[Request],
                      up_hist_bps: np.ndarray, down_hist_bps: np.ndarray,
                      share_hist: np.ndarray, deadline_rel: np.ndarray,
                      ce_actions: np.ndarray | None = None, n_bits: int = 0) -> np.ndarray:
    """(N, F + 2k + 5 [+ CE plan]) float32: the encoder's features of the planning requests,
    then the history, clipped like the encoder's; then, given ``ce_actions`` (N, L+2) of a
    bit set of ``n_bits`` widths, :func:`ce_plan_features` of them."""
    base = encoder.encode_batch(planning).astype(np.float64)
    hist = history_features(up_hist_bps, down_hist_bps, share_hist, deadline_rel)
    obs = np.clip(np.concatenate([base, hist], axis=1), -encoder.clip, encoder.clip)
    if ce_actions is not None:
        n_units = np.asarray(ce_actions).shape[-1] - 2
        obs = np.concatenate([obs, ce_plan_features(ce_actions, n_units, n_bits)], axis=1)
    return obs.astype(np.float32)


def ce_plan_width(n_units: int, n_bits: int) -> int:
    """Features :func:`ce_plan_features` adds."""
    return (n_units + 1) + n_bits + n_units


def ce_plan_features(actions: np.ndarray, n_units: int, n_bits: int) -> np.ndarray:
    """The certainty-equivalent optimizer's plans as policy input, (N, ce_plan_width):
    one-hot cut, one-hot activation-bits index, then per unit (index + 1) / K on the device
    and 0 past the cut. With it the policy learns where to deviate from the optimizer's
    plan at the estimate instead of rebuilding that plan from the request."""
    a = np.asarray(actions, dtype=np.int64).reshape(-1, n_units + 2)
    n = len(a)
    cut = np.zeros((n, n_units + 1))
    cut[np.arange(n), a[:, 0]] = 1.0
    act = np.zeros((n, n_bits))
    act[np.arange(n), a[:, 1]] = 1.0
    on = np.arange(n_units)[None, :] < a[:, :1]
    w = np.where(on, (a[:, 2:] + 1.0) / n_bits, 0.0)
    return np.concatenate([cut, act, w], axis=1)
