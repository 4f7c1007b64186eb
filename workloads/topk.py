"""Magnitude Top-K sparsification, as SWAT does it (units: fractions of elements).

Top-K keeps the K = n - round(sparsity * n) largest magnitudes of each Top-K group and
zeroes the rest. Groups (SWAT A.6): the whole tensor (`NCHW`, default), each sample or
filter (`CHW`: axis 0), each channel map or kernel slice (`HW`: axes 0 and 1; a 2-D
[N, C] tensor has no maps, so `HW` acts as `CHW` there). The threshold is the K-th
largest magnitude (O(n), no sort); elements at or above it are kept (ties at the
threshold are kept, a measure-zero event for continuous values).

Two implementations of the same thresholds: `np.partition` (the reference, any dtype)
and, for float32, a numba radix select: the bit patterns of non-negative floats sort
like their values, so two 16-bit histogram passes find exactly the value np.partition
finds, and a fused kernel then zeroes and counts in one pass. The trainer thresholds
every activation tensor every iteration, so this is where Top-K's cost lives; the tests
compare the two bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np

from . import kernels

SCOPES = ("NCHW", "CHW", "HW")


def keep_count(size: int, sparsity: float) -> int:
    """Elements kept by Top-K at `sparsity` (fraction of zeros) in a group of `size`."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return size - int(round(sparsity * size))


def _groups(x: np.ndarray, scope: str) -> tuple[int, tuple[int, ...]]:
    """(number of Top-K groups, threshold shape broadcasting against x)."""
    if scope not in SCOPES:
        raise ValueError(f"Top-K scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    lead = {"NCHW": 0, "CHW": 1, "HW": 2 if x.ndim > 2 else 1}[scope]
    return int(np.prod(x.shape[:lead])), x.shape[:lead] + (1,) * (x.ndim - lead)


def topk_threshold_reference(x: np.ndarray, sparsity: float, scope: str = "NCHW") -> np.ndarray:
    """`topk_threshold` by `np.partition` (any float dtype)."""
    groups, shape = _groups(x, scope)
    mags = np.abs(x).reshape(groups, -1)
    n = mags.shape[1]
    keep = keep_count(n, sparsity)
    if keep >= n:
        return np.zeros(shape, dtype=x.dtype)
    if keep == 0:
        return np.full(shape, np.inf, dtype=x.dtype)
    return np.partition(mags, n - keep, axis=1)[:, n - keep].reshape(shape)


@numba.njit(cache=True, nogil=True)
def _select_bucket(hist, need):
    """Highest bucket b with count(buckets >= b) >= need; returns (b, need left in b)."""
    b = hist.shape[0] - 1
    while hist[b] < need:
        need -= hist[b]
        b -= 1
    return b, need


@numba.njit(cache=True, nogil=True)
def _histogram(bits, lo, hi, hist):
    """hist[4096] = counts of the top 12 magnitude bits of bits[lo:hi]; four interleaved
    counters, so a repeated value (ReLU's zeros) does not chain the increments."""
    lanes = np.zeros((4, 4096), dtype=np.int64)
    end4 = lo + (hi - lo) // 4 * 4
    for i in range(lo, end4, 4):
        lanes[0, (bits[i] & 0x7FFFFFFF) >> 19] += 1
        lanes[1, (bits[i + 1] & 0x7FFFFFFF) >> 19] += 1
        lanes[2, (bits[i + 2] & 0x7FFFFFFF) >> 19] += 1
        lanes[3, (bits[i + 3] & 0x7FFFFFFF) >> 19] += 1
    for i in range(end4, hi):
        lanes[0, (bits[i] & 0x7FFFFFFF) >> 19] += 1
    for j in range(4096):
        hist[j] = lanes[0, j] + lanes[1, j] + lanes[2, j] + lanes[3, j]


@numba.njit(cache=True, nogil=True)
def _extract(bits, lo, hi, top, out):
    """Copy the magnitudes of bits[lo:hi] whose top 12 bits equal `top` into out."""
    c = 0
    for i in range(lo, hi):
        m = bits[i] & 0x7FFFFFFF
        if (m >> 19) == top:
            out[c] = m
            c += 1


@numba.njit(cache=True, nogil=True)
def _refine(cand, top, need):
    """The exact threshold pattern from the candidates of bucket `top`: 12 more bits,
    then the last 7."""
    hist = np.zeros(4096, dtype=np.int64)
    for m in cand:
        hist[(m >> 7) & 0xFFF] += 1
    mid, need = _select_bucket(hist, need)
    hist[:128] = 0
    for m in cand:
        if ((m >> 7) & 0xFFF) == mid:
            hist[m & 0x7F] += 1
    low, need = _select_bucket(hist[:128], need)
    return (top << 19) | (mid << 7) | low


@numba.njit(cache=True, nogil=True)
def _kth_largest_bits(bits, keep, out):
    """Per row of `bits` (uint32 float patterns), the pattern of the keep-th largest
    magnitude: radix select on the 31 magnitude bits, 12 over the whole row, then 12 and
    7 over the chosen bucket's candidates only."""
    hist = np.empty(4096, dtype=np.int64)
    for g in range(bits.shape[0]):
        row = bits[g]
        _histogram(row, 0, row.shape[0], hist)
        top, need = _select_bucket(hist, keep)
        cand = np.empty(hist[top], dtype=np.uint32)
        _extract(row, 0, row.shape[0], top, cand)
        out[g] = _refine(cand, top, need)


def _kth_largest_parallel(flat: np.ndarray, keep: int) -> int:
    """`_kth_largest_bits` of one long row, its two passes split over the cores."""
    n = flat.shape[0]
    chunks = max(1, min(kernels._WORKERS, n // (1 << 18)))
    bounds = [n * i // chunks for i in range(chunks + 1)]
    partial = np.zeros((chunks, 4096), dtype=np.int64)
    kernels._run_split(lambda a, b: [_histogram(flat, bounds[i], bounds[i + 1], partial[i])
                                     for i in range(a, b)], chunks, n)
    top, need = _select_bucket(partial.sum(axis=0), keep)
    sizes = partial[:, top]
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    cand = np.empty(int(offsets[-1]), dtype=np.uint32)
    kernels._run_split(lambda a, b: [_extract(flat, bounds[i], bounds[i + 1], top,
                                              cand[offsets[i]:offsets[i + 1]])
                                     for i in range(a, b)], chunks, n)
    return int(_refine(cand, top, need))


@numba.njit(cache=True, nogil=True)
def _mask_count(x, bits, threshold_bits, lo, hi, out):
    """out = x where |x| >= threshold (compared as bit patterns), else 0, for the rows
    lo..hi of x; returns the number of non-zeros kept."""
    kept = 0
    for g in range(lo, hi):
        t = threshold_bits[g]
        for i in range(x.shape[1]):
            if (bits[g, i] & 0x7FFFFFFF) >= t and x[g, i] != 0:
                out[g, i] = x[g, i]
                kept += 1
            else:
                out[g, i] = 0
    return kept


def _fast(x: np.ndarray) -> bool:
    return x.dtype == np.float32 and x.flags.c_contiguous and x.size > 0


def topk_threshold(x: np.ndarray, sparsity: float, scope: str = "NCHW") -> np.ndarray:
    """Smallest magnitude Top-K keeps, per group, shaped to broadcast against `x`:
    0 where everything is kept, +inf where nothing is."""
    groups, shape = _groups(x, scope)
    n = x.size // groups if groups else 0
    keep = keep_count(n, sparsity)
    if not _fast(x) or keep in (0, n):
        return topk_threshold_reference(x, sparsity, scope)
    out = np.empty(groups, dtype=np.uint32)
    if groups == 1:
        out[0] = _kth_largest_parallel(x.reshape(-1).view(np.uint32), keep)
    else:
        _kth_largest_bits(x.reshape(groups, n).view(np.uint32), keep, out)
    return out.view(np.float32).reshape(shape)


def apply_threshold(x: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Copy of `x` with every element whose magnitude is below `threshold` set to zero."""
    return apply_threshold_count(x, threshold)[0]


def apply_threshold_count(x: np.ndarray, threshold: np.ndarray) -> tuple[np.ndarray, int]:
    """(`apply_threshold(x, threshold)`, its number of non-zeros), in one pass for float32."""
    threshold = np.asarray(threshold)
    # the threshold varies along the leading axes of x and is constant over the rest
    lead = next((i for i in range(threshold.ndim) if threshold.shape[i] == 1
                 and all(d == 1 for d in threshold.shape[i:])), threshold.ndim)
    if (not _fast(x) or threshold.dtype != np.float32 or x.ndim != threshold.ndim
            or threshold.shape[:lead] != x.shape[:lead] or not np.all(threshold >= 0)):
        out = np.where(np.abs(x) >= threshold, x, np.zeros((), dtype=x.dtype))
        return out, int(np.count_nonzero(out))
    rows = int(np.prod(x.shape[:lead]))
    if rows == 1:  # one threshold: split the tensor into rows, so the cores can share it
        rows = next(r for r in (64, 32, 16, 8, 4, 2, 1) if x.size % r == 0)
        threshold = np.broadcast_to(threshold.reshape(-1)[:1], (rows,))
    x2 = x.reshape(rows, -1)
    out = np.empty_like(x2)
    tbits = np.ascontiguousarray(threshold, dtype=np.float32).reshape(rows).view(np.uint32)
    parts = kernels._run_split(lambda a, b: _mask_count(x2, x2.view(np.uint32), tbits, a, b, out),
                               rows, x.size)
    return out.reshape(x.shape), int(sum(parts))


def topk_sparsify(x: np.ndarray, sparsity: float, scope: str = "NCHW") -> np.ndarray:
    """Copy of `x` with all but the Top-K largest magnitudes of each group set to zero."""
    if sparsity == 0.0:
        return x.copy()
    return apply_threshold(x, topk_threshold(x, sparsity, scope))


def zero_fraction(x: np.ndarray) -> float:
    """Measured sparsity: the fraction of elements that are exactly zero."""
    return 1.0 - np.count_nonzero(x) / x.size if x.size else 0.0
