"""A reduction over a short last axis, as elementwise operations across its slices.

numpy reduces a short last axis one output at a time: ``x.max(axis=-1)`` of 1,024 x 13 x 4
float32 takes about 0.49 ms here, the same maxima taken with ``np.maximum`` across the four
slices about 0.02 ms. The values are the same (a maximum or minimum is exact, NaN
propagates alike); the batch decisions' heads and the repair's move tables have 4-8
options per row.
"""

from __future__ import annotations

import functools

import numpy as np


def max_last(x: np.ndarray) -> np.ndarray:
    """``x.max(axis=-1)`` for a short last axis."""
    return functools.reduce(np.maximum, [x[..., k] for k in range(x.shape[-1])])


__all__ = ["max_last"]
