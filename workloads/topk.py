"""Magnitude Top-K sparsification, as SWAT does it (units: fractions of elements).

`topk_threshold` finds the magnitude of the K-th largest element with `np.partition`
(O(n), no sort); `topk_sparsify` zeroes everything below it, so a tensor of n elements
keeps K = n - round(sparsity * n) of them (ties at the threshold are kept, a
measure-zero event for continuous values).
"""

from __future__ import annotations

import numpy as np


def keep_count(size: int, sparsity: float) -> int:
    """Elements kept by Top-K at `sparsity` (fraction of zeros) in a tensor of `size`."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return size - int(round(sparsity * size))


def topk_threshold(x: np.ndarray, sparsity: float) -> float:
    """Smallest magnitude Top-K keeps; 0.0 at sparsity 0, +inf when K is 0."""
    k = keep_count(x.size, sparsity)
    if k == x.size:
        return 0.0
    if k == 0:
        return float("inf")
    mags = np.abs(x).ravel()
    return float(np.partition(mags, x.size - k)[x.size - k])


def topk_sparsify(x: np.ndarray, sparsity: float) -> np.ndarray:
    """Copy of `x` with all but the Top-K largest magnitudes set to zero."""
    if sparsity == 0.0:
        return x.copy()
    thr = topk_threshold(x, sparsity)
    return np.where(np.abs(x) >= thr, x, np.zeros((), dtype=x.dtype))
