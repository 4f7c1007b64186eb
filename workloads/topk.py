"""Magnitude Top-K sparsification, as SWAT does it (units: fractions of elements).

Top-K keeps the K = n - round(sparsity * n) largest magnitudes of each Top-K group and
zeroes the rest. Groups (SWAT A.6): the whole tensor (`NCHW`, default), each sample or
filter (`CHW`: axis 0), each channel map or kernel slice (`HW`: axes 0 and 1; a 2-D
[N, C] tensor has no maps, so `HW` acts as `CHW` there). The threshold is the K-th
largest magnitude (O(n), no sort); elements at or above it are kept (ties at the
threshold are kept, a measure-zero event for continuous values).

Three ways to the same thresholds, compared bit for bit by the tests:

- `topk_threshold_reference`: `np.partition` (any dtype);
- `topk_threshold`: for float32, a numba radix select. The bit patterns of non-negative
  floats sort like their values, so a 12-bit histogram pass and a pass collecting the
  chosen bucket find exactly the value np.partition finds;
- `TopKSelector`: for a tensor met again (the same layer's weights or input, iteration
  after iteration), one pass that counts what lies above a narrow bracket around the last
  threshold and collects what lies inside it; the K-th largest is selected from those
  few values (and the radix select runs if it is not in the bracket).

The trainer thresholds every activation tensor every iteration, so this is where Top-K's
cost lives. `Thresholded` keeps a sparsified tensor as its values plus the threshold, so
the conv masks the saved activation while unfolding it in the backward pass instead of
writing a masked copy. The weights need a masked copy: `TopKSelector.sparsify` writes it
in the same pass that finds the threshold, and `apply_threshold_count` masks and counts
in one pass where the threshold is already known.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np

from . import kernels

SCOPES = ("NCHW", "CHW", "HW")
# Top-K passes are one long loop each: from _PARALLEL elements on they are split over the
# cores, in chunks of at least _CHUNK elements (so on two cores even ResNet-18's layer4
# inputs at batch 64, 0.26M elements, take both).
_PARALLEL = 1 << 18
_CHUNK = 1 << 17


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
def _histogram(bits, hist):
    """hist[4096] = counts of the top 12 magnitude bits of bits; four interleaved
    counters, so a repeated value (ReLU's zeros) does not chain the increments. (Kernels
    here take slices, not lo/hi bounds: numba compiled lo..hi loops into gathers.)"""
    lanes = np.zeros((4, 4096), dtype=np.int64)
    hi = bits.shape[0]
    end4 = hi // 4 * 4
    for i in range(0, end4, 4):
        lanes[0, (bits[i] & 0x7FFFFFFF) >> 19] += 1
        lanes[1, (bits[i + 1] & 0x7FFFFFFF) >> 19] += 1
        lanes[2, (bits[i + 2] & 0x7FFFFFFF) >> 19] += 1
        lanes[3, (bits[i + 3] & 0x7FFFFFFF) >> 19] += 1
    for i in range(end4, hi):
        lanes[0, (bits[i] & 0x7FFFFFFF) >> 19] += 1
    for j in range(4096):
        hist[j] = lanes[0, j] + lanes[1, j] + lanes[2, j] + lanes[3, j]


@numba.njit(cache=True, nogil=True)
def _extract(bits, top, out):
    """Copy the magnitudes of bits whose top 12 bits equal `top` into out."""
    c = 0
    for i in range(bits.shape[0]):
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
        _histogram(row, hist)
        top, need = _select_bucket(hist, keep)
        cand = np.empty(hist[top], dtype=np.uint32)
        _extract(row, top, cand)
        out[g] = _refine(cand, top, need)


def _kth_largest_parallel(flat: np.ndarray, keep: int) -> int:
    """`_kth_largest_bits` of one long row, its two passes split over the cores."""
    n = flat.shape[0]
    bounds = _split_bounds(n)
    chunks = len(bounds) - 1
    partial = np.zeros((chunks, 4096), dtype=np.int64)
    kernels._run_split(lambda a, b: [_histogram(flat[bounds[i]:bounds[i + 1]], partial[i])
                                     for i in range(a, b)], chunks, n, _PARALLEL)
    top, need = _select_bucket(partial.sum(axis=0), keep)
    sizes = partial[:, top]
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    cand = np.empty(int(offsets[-1]), dtype=np.uint32)
    kernels._run_split(lambda a, b: [_extract(flat[bounds[i]:bounds[i + 1]], top,
                                              cand[offsets[i]:offsets[i + 1]])
                                     for i in range(a, b)], chunks, n, _PARALLEL)
    return int(_refine(cand, top, need))


@numba.njit(cache=True, nogil=True)
def _mask_count(x, bits, threshold_bits, lo, hi, out):
    """out = x where |x| >= threshold (compared as bit patterns), else 0, for the rows
    lo..hi of x; returns the number of non-zeros kept. Branch-free, so it vectorises."""
    kept = 0
    z = out.dtype.type(0)
    for g in range(lo, hi):
        t = max(threshold_bits[g], np.uint32(1))   # a zero is never kept
        row, rbits, dst = x[g], bits[g], out[g]
        for i in range(row.shape[0]):
            keep = (rbits[i] & np.uint32(0x7FFFFFFF)) >= t
            dst[i] = row[i] if keep else z
            kept += np.int64(keep)
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


# ------------------------------------------------------------------------------------------
# Thresholds of tensors that change little between calls: one pass around the last threshold
# ------------------------------------------------------------------------------------------

_BLOCK = 64  # elements per block of the bracket pass


@numba.njit(cache=True, nogil=True)
def _bracket(bits, low, width, high, buf):
    """One pass over float32 patterns `bits`: (count of magnitudes >= high, count in
    [low, low + width) ), the latter's magnitudes copied to buf while it has room (64 slots
    of slack). Per block of 64 a vectorised loop counts and flags the in-bracket elements;
    only the 8-element groups of a block with a flag are compacted (at the 2-10% densities
    of a bracket this halves the scalar work of compacting whole blocks)."""
    above = 0
    c = 0
    room = buf.shape[0] - _BLOCK
    n = bits.shape[0]
    flags = np.zeros(_BLOCK, np.uint8)
    groups = flags.view(np.uint64)          # 8 flags per word
    for s in range(0, n - _BLOCK + 1, _BLOCK):
        blk = bits[s:s + _BLOCK]
        hits = 0
        for i in range(_BLOCK):
            m = blk[i] & np.uint32(0x7FFFFFFF)
            above += np.int64(m >= high)
            f = np.uint8((m - low) < width)   # unsigned: low <= m < low + width
            flags[i] = f
            hits += np.int64(f)
        if hits > 0:
            if c <= room:
                for g in range(_BLOCK // 8):
                    if groups[g] != 0:
                        for i in range(8 * g, 8 * g + 8):
                            buf[c] = blk[i] & np.uint32(0x7FFFFFFF)
                            c += np.int64(flags[i])
            else:
                c += hits
    for i in range(n - n % _BLOCK, n):       # the last partial block
        m = bits[i] & np.uint32(0x7FFFFFFF)
        above += np.int64(m >= high)
        if (m - low) < width:
            if c < buf.shape[0]:
                buf[c] = m
            c += 1
    return above, c


@numba.njit(cache=True, nogil=True)
def _bracket_mask(x, bits, low, width, high, out, pos, offset):
    """`_bracket` that also writes out = x where the magnitude is >= low, else 0 (in-bracket
    values kept provisionally) and notes the in-bracket positions (+ offset) in pos instead
    of their values: Top-K of a tensor and its masked copy in one pass, once the few
    in-bracket elements below the threshold are zeroed."""
    above = 0
    c = 0
    room = pos.shape[0] - _BLOCK
    n = bits.shape[0]
    z = out.dtype.type(0)
    for s in range(0, n, _BLOCK):
        e = min(s + _BLOCK, n)
        blk, xb, ob = bits[s:e], x[s:e], out[s:e]
        hits = 0
        for i in range(blk.shape[0]):
            m = blk[i] & np.uint32(0x7FFFFFFF)
            ob[i] = xb[i] if m >= low else z
            above += np.int64(m >= high)
            hits += np.int64((m - low) < width)
        if hits > 0:
            if c <= room:
                for i in range(blk.shape[0]):
                    m = blk[i] & np.uint32(0x7FFFFFFF)
                    pos[c] = offset + s + i
                    c += np.int64((m - low) < width)
            else:
                c += hits
    return above, c


@numba.njit(cache=True, nogil=True)
def _count_at_least(bits, threshold):
    """Number of float32 patterns whose magnitude pattern is >= threshold (a uint32)."""
    kept = 0
    for i in range(bits.shape[0]):
        kept += np.int64((bits[i] & np.uint32(0x7FFFFFFF)) >= threshold)
    return kept


def _split_bounds(n: int) -> list[int]:
    """Bounds of the chunks a pass over n elements is split into (see _CHUNK)."""
    chunks = max(1, min(kernels._WORKERS, n // _CHUNK))
    return [n * i // chunks for i in range(chunks + 1)]


def count_kept(x: np.ndarray, threshold: np.ndarray) -> int:
    """Non-zeros `apply_threshold(x, threshold)` would keep, without writing it."""
    threshold = np.asarray(threshold)
    if _fast(x) and threshold.size == 1 and threshold.dtype == np.float32 and threshold.flat[0] >= 0:
        t = max(int(threshold.reshape(-1).view(np.uint32)[0]), 1)   # zeros are never kept
        flat = x.reshape(-1).view(np.uint32)
        b = _split_bounds(flat.size)
        parts = kernels._run_split(lambda i, j: [_count_at_least(flat[b[k]:b[k + 1]], np.uint32(t))
                                                 for k in range(i, j)], len(b) - 1, flat.size,
                                   _PARALLEL)
        return int(sum(sum(p) for p in parts))
    return apply_threshold_count(x, threshold)[1]   # per-group thresholds: the same mask


class TopKSelector:
    """Exact Top-K thresholds (bit-identical to `topk_threshold`) and kept counts, fast for
    tensors met again and again that change little between calls: the same layer's weights
    or input activations from one iteration to the next (units: elements).

    `threshold(key, x, sparsity, scope)` remembers each key's last threshold t. Next time
    (float32, scope NCHW), one pass counts the magnitudes above t(1 + w) and collects those
    in [t(1 - w), t(1 + w)); if the K-th largest lies in that bracket it is selected from
    the few collected values, and the kept count comes with it. If it does not (the tensor
    changed more than w), the radix select runs instead and w doubles. w follows the
    observed change: four times the last relative move, shrinking by at most a tenth per
    call, between 0.004 and 0.25 (a layer's input threshold moves by 2% per iteration in
    the median, 5% at the 90th percentile, on Fashion-MNIST; its weights' by 0.01%; a
    pass costs about the same for any width, a miss twice as much). Selecting
    from a bracket is exact, so the result never depends on the hint, only the time."""

    MIN_WIDTH, MAX_WIDTH = 0.004, 0.25

    def __init__(self):
        self._last: dict = {}          # key -> (threshold as float, relative width)
        self._buf = np.empty(0, dtype=np.uint32)    # in-bracket values, per chunk
        self._pos = np.empty(0, dtype=np.int64)     # in-bracket positions (`sparsify`)
        self._outputs: dict = {}                     # key -> the array `sparsify` returned last
        self.bracketed = self.searched = 0   # calls answered each way (for tests, benchmarks)

    def threshold(self, key, x: np.ndarray, sparsity: float,
                  scope: str = "NCHW") -> tuple[np.ndarray, int]:
        """(topk_threshold(x, sparsity, scope), non-zeros apply_threshold would keep)."""
        groups, shape = _groups(x, scope)
        n = x.size // groups if groups else 0
        keep = keep_count(n, sparsity)
        last = self._last.get(key)
        t = None
        if last is not None and groups == 1 and _fast(x) and 0 < keep < n:
            t, kept = self._bracketed(x.reshape(-1).view(np.uint32), keep, *last)
        if t is None:
            self.searched += 1
            thr = topk_threshold(x, sparsity, scope)
            kept = count_kept(x, thr)
        else:
            self.bracketed += 1
            thr = np.full(shape, t, dtype=np.float32)
        if thr.dtype == np.float32:
            self._remember(key, thr, last, bracketed=t is not None)
        else:
            self._last.pop(key, None)
        return thr, kept

    def sparsify(self, key, x: np.ndarray, sparsity: float,
                 scope: str = "NCHW") -> tuple[np.ndarray, np.ndarray, int]:
        """(topk_sparsify(x, sparsity, scope), its threshold, its non-zeros). Bracketed, the
        threshold and the masked copy come from one pass: the copy keeps everything from the
        bracket's low end up and notes the in-bracket positions, and those below the exact
        threshold are zeroed afterwards. That copy is written into the array the last
        bracketed call with the same key returned, when the shapes match (no fresh pages
        every step): a caller that keeps one across calls must copy it."""
        groups, _ = _groups(x, scope)
        n = x.size // groups if groups else 0
        keep = keep_count(n, sparsity)
        last = self._last.get(key)
        if last is None or groups != 1 or not _fast(x) or not 0 < keep < n:
            thr, _ = self.threshold(key, x, sparsity, scope)   # no bracket to try
        else:
            out = self._outputs.get(key)      # the copy is rewritten in place every call
            if out is None or out.shape != x.shape or out.dtype != x.dtype:
                out = self._outputs[key] = np.empty_like(x)
            t, kept = self._bracketed(x.reshape(-1).view(np.uint32), keep, *last,
                                      values=x.reshape(-1), out=out.reshape(-1))
            if t is not None:
                self.bracketed += 1
                self._remember(key, t, last, bracketed=True)
                return out, np.full((1,) * x.ndim, t, dtype=np.float32), kept
            self.searched += 1
            thr = topk_threshold(x, sparsity, scope)
            self._remember(key, thr, last, bracketed=False)
        out, kept = apply_threshold_count(x, thr)
        return out, thr, kept

    def _remember(self, key, t, last, bracketed: bool) -> None:
        """Keep threshold t (a float32 array of one element, or scalar) and the next width."""
        t = np.asarray(t, dtype=np.float32)
        if t.size == 1 and 0 < t.flat[0] < np.inf:
            new = float(t.flat[0])
            width = self.MIN_WIDTH if last is None else 4 * abs(new / last[0] - 1)
            if last is not None:
                width = max(width, (0.9 if bracketed else 2.0) * last[1])
            self._last[key] = (new, min(max(width, self.MIN_WIDTH), self.MAX_WIDTH))
        else:
            self._last.pop(key, None)

    def _bracketed(self, flat: np.ndarray, keep: int, hint: float, width: float,
                   values: np.ndarray | None = None, out: np.ndarray | None = None):
        """(threshold, kept) from one pass around `hint`, or (None, 0) if it is not there.
        With `out` (and the flat float32 `values`), also writes the masked copy."""
        low = int(np.float32(hint * (1 - width)).view(np.uint32))
        high = int(np.float32(hint * (1 + width)).view(np.uint32))
        if low < 1 or high <= low:
            return None, 0
        b = _split_bounds(flat.size)
        room = max(4096, (b[1] - b[0]) // 6)                # per chunk, plus _BLOCK of slack
        size = (len(b) - 1) * (room + _BLOCK)
        lo, wd, hi = np.uint32(low), np.uint32(high - low), np.uint32(high)
        if out is None:                                     # in-bracket values
            if self._buf.size < size:
                self._buf = np.empty(size, dtype=np.uint32)
            bufs = [self._buf[k * (room + _BLOCK):(k + 1) * (room + _BLOCK)]
                    for k in range(len(b) - 1)]

            def run(i, j):
                return [_bracket(flat[b[k]:b[k + 1]], lo, wd, hi, bufs[k]) for k in range(i, j)]
        else:                                               # in-bracket positions
            if self._pos.size < size:
                self._pos = np.empty(size, dtype=np.int64)
            bufs = [self._pos[k * (room + _BLOCK):(k + 1) * (room + _BLOCK)]
                    for k in range(len(b) - 1)]

            def run(i, j):
                return [_bracket_mask(values[b[k]:b[k + 1]], flat[b[k]:b[k + 1]], lo, wd, hi,
                                      out[b[k]:b[k + 1]], bufs[k], b[k]) for k in range(i, j)]
        parts = kernels._run_split(run, len(b) - 1, flat.size, _PARALLEL)
        counts = [c for part in parts for c in part]
        above = sum(a for a, _ in counts)
        inside = sum(c for _, c in counts)
        need = keep - above
        if not 0 < need <= inside or any(c > room for _, c in counts):
            return None, 0
        found = np.concatenate([buf[:c] for buf, (_, c) in zip(bufs, counts)])
        vals = found if out is None else flat[found] & np.uint32(0x7FFFFFFF)
        t = np.partition(vals, inside - need)[inside - need]
        below = vals < t
        if out is not None:
            out[found[below]] = 0
        kept = above + inside - int(np.count_nonzero(below))
        return np.uint32(t).view(np.float32), kept


@dataclass(frozen=True)
class Thresholded:
    """A Top-K-sparsified tensor kept as the dense `values` and the `threshold` (broadcasting
    against them): elements whose magnitude is below it read as zero. Who reads it masks on
    the fly (the conv's unfold in the backward pass), so no masked copy is written;
    `dense()` writes one. `kept` is the number of non-zeros it stands for."""

    values: np.ndarray
    threshold: np.ndarray
    kept: int

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    def dense(self) -> np.ndarray:
        return apply_threshold(self.values, self.threshold)

    @cached_property
    def channel_threshold_bits(self) -> np.ndarray | None:
        """The threshold per [sample, channel] as float32 bit patterns (uint32 [N, C]), or
        None if it varies within a channel map or the tensor is not float32 NC... (computed
        once: the forward pass checks it, the backward pass masks with it)."""
        x, t = self.values, np.asarray(self.threshold)
        if (not _fast(x) or x.ndim < 2 or t.dtype != np.float32 or t.ndim != x.ndim
                or any(d != 1 for d in t.shape[2:]) or not np.all(t >= 0)):
            return None
        per_channel = np.broadcast_to(t.reshape(t.shape[:2]), x.shape[:2])
        return np.ascontiguousarray(per_channel).view(np.uint32)


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
                               rows, x.size, _PARALLEL)
    return out.reshape(x.shape), int(sum(parts))


def topk_sparsify(x: np.ndarray, sparsity: float, scope: str = "NCHW") -> np.ndarray:
    """Copy of `x` with all but the Top-K largest magnitudes of each group set to zero."""
    if sparsity == 0.0:
        return x.copy()
    return apply_threshold(x, topk_threshold(x, sparsity, scope))


def zero_fraction(x: np.ndarray) -> float:
    """Measured sparsity: the fraction of elements that are exactly zero."""
    if not x.size:
        return 0.0
    nonzero = count_kept(x, np.zeros((), x.dtype)) if _fast(x) else np.count_nonzero(x)
    return 1.0 - nonzero / x.size
