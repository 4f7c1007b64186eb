"""Magnitude Top-K sparsification, as SWAT does it (units: fractions of elements).

Top-K keeps the K = n - round(sparsity * n) largest magnitudes of each Top-K group and
zeroes the rest. Groups (SWAT A.6): the whole tensor (`NCHW`, default), each sample or
filter (`CHW`: axis 0), each channel map or kernel slice (`HW`: axes 0 and 1; a 2-D
[N, C] tensor has no maps, so `HW` acts as `CHW` there). The threshold is the K-th
largest magnitude, found with `np.partition` (O(n), no sort); elements at or above it
are kept (ties at the threshold are kept, a measure-zero event for continuous values).
"""

from __future__ import annotations

import numpy as np

SCOPES = ("NCHW", "CHW", "HW")


def keep_count(size: int, sparsity: float) -> int:
    """Elements kept by Top-K at `sparsity` (fraction of zeros) in a group of `size`."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return size - int(round(sparsity * size))


def topk_threshold(x: np.ndarray, sparsity: float, scope: str = "NCHW") -> np.ndarray:
    """Smallest magnitude Top-K keeps, per group, shaped to broadcast against `x`:
    0 where everything is kept, +inf where nothing is."""
    if scope not in SCOPES:
        raise ValueError(f"Top-K scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    lead = {"NCHW": 0, "CHW": 1, "HW": 2 if x.ndim > 2 else 1}[scope]
    shape = x.shape[:lead] + (1,) * (x.ndim - lead)
    mags = np.abs(x).reshape(int(np.prod(x.shape[:lead])), -1)
    n = mags.shape[1]
    keep = keep_count(n, sparsity)
    if keep >= n:
        return np.zeros(shape, dtype=x.dtype)
    if keep == 0:
        return np.full(shape, np.inf, dtype=x.dtype)
    return np.partition(mags, n - keep, axis=1)[:, n - keep].reshape(shape)


def apply_threshold(x: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Copy of `x` with every element whose magnitude is below `threshold` set to zero."""
    return np.where(np.abs(x) >= threshold, x, np.zeros((), dtype=x.dtype))


def topk_sparsify(x: np.ndarray, sparsity: float, scope: str = "NCHW") -> np.ndarray:
    """Copy of `x` with all but the Top-K largest magnitudes of each group set to zero."""
    if sparsity == 0.0:
        return x.copy()
    return apply_threshold(x, topk_threshold(x, sparsity, scope))


def zero_fraction(x: np.ndarray) -> float:
    """Measured sparsity: the fraction of elements that are exactly zero."""
    return 1.0 - np.count_nonzero(x) / x.size if x.size else 0.0
