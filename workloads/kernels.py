"""Numba kernels and batch-parallel execution behind `workloads.layers` (units: elements).

What is here: im2col / col2im (unfolding a padded NCHW input into the [C, k, k, N, Ho, Wo]
column layout and folding it back), padding with a Top-K mask, the flipped transposed
weight of the input gradient, max-pooling and its gradient routing, batch-norm statistics
/ apply / backward, ReLU(6) forward / backward and the residual sum, each a small numba
kernel; NumPy references sit beside them in the tests (`im2col`/`col2im`/max-pool
references here). Then the thread machinery: a large pass is split over the batch (or
channels, or elements) into pieces that one Python thread per core takes in turn, each
running GIL-free numba kernels and single-threaded BLAS (OpenBLAS's own thread count is
pinned to 1 for the duration through ctypes and restored); where the BLAS cannot be
controlled, everything runs serially. Results do not depend on thread timing (fixed cut,
reductions in range order).
"""

from __future__ import annotations

import ctypes
import glob
import math
import os
import threading

import numba
import numpy as np


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# ================================================================================================
# numba kernels (GIL-free, run per thread; see the module docstring) and NumPy references
# ================================================================================================

# Reductions may be reordered (vectorised); no other fast-math assumptions (NaNs propagate).
_REASSOC = {"reassoc", "contract"}


@numba.njit(cache=True, nogil=True)
def _zero_border(dst, p, H, W):
    """Zero the p-wide border of one padded map dst [H + 2p, W + 2p]."""
    for h in range(p):
        for w in range(W + 2 * p):
            dst[h, w] = 0
            dst[h + H + p, w] = 0
    for h in range(H):
        for w in range(p):
            dst[h + p, w] = 0
            dst[h + p, w + W + p] = 0


@numba.njit(cache=True, nogil=True)
def _pad_kernel(x, p, xp):
    """xp = x zero-padded by p on both spatial sides (every element of xp is written)."""
    N, C, H, W = x.shape
    for n in range(N):
        for c in range(C):
            dst = xp[n, c]
            _zero_border(dst, p, H, W)
            for h in range(H):
                for w in range(W):
                    dst[h + p, w + p] = x[n, c, h, w]


@numba.njit(cache=True, nogil=True)
def _masked_pad_kernel(x, bits, threshold_bits, p, xp):
    """xp = x zero-padded by p (p may be 0), with every element whose magnitude is below
    its [sample, channel] threshold zeroed: x float32 [N, C, H, W], bits its bit patterns
    (x viewed as uint32), threshold_bits the thresholds' patterns [N, C] (a Top-K-sparsified
    input, masked as it is unfolded rather than copied beforehand)."""
    N, C, H, W = x.shape
    z = xp.dtype.type(0)
    for n in range(N):
        for c in range(C):
            t = threshold_bits[n, c]
            dst = xp[n, c]
            _zero_border(dst, p, H, W)
            for h in range(H):
                row, rbits = x[n, c, h], bits[n, c, h]
                out = dst[h + p]
                for w in range(W):
                    out[w + p] = row[w] if (rbits[w] & np.uint32(0x7FFFFFFF)) >= t else z


@numba.njit(cache=True, nogil=True)
def _mask_cols_kernel(cols, threshold_bits):
    """Zero, in place, every element of the unfolded input cols [C, k, k, n, Ho, Wo]
    (float32) whose magnitude is below its [sample, channel] threshold (bit patterns
    [n, C]): the masking of an unpadded Top-K input after im2col, which for a strided
    conv touches fewer elements than masking the input first."""
    C, k, _, nb, Ho, Wo = cols.shape
    flat = cols.reshape(-1)
    bits = flat.view(np.uint32)
    z = flat.dtype.type(0)
    block = Ho * Wo
    o = 0
    for c in range(C):
        for ij in range(k * k):
            for n in range(nb):
                t = threshold_bits[n, c]
                for q in range(o, o + block):
                    flat[q] = flat[q] if (bits[q] & np.uint32(0x7FFFFFFF)) >= t else z
                o += block


@numba.njit(cache=True, nogil=True)
def _im2col_kernel(x, k, s, p, d, xp, cols):
    """cols[c, i, j, n, ho, wo] = x[n, c, ho*s + i*d - p, wo*s + j*d - p] (0 in the padding).

    `xp` is scratch of shape [N, C, H + 2p, W + 2p] (ignored when p == 0). Flat unsigned
    offsets rather than per-row views: numba then needs no negative-index checks and the
    copies vectorise (1.4-1.8x faster than the same loops over views)."""
    if p > 0:
        _pad_kernel(x, p, xp)
        src4 = xp
    else:
        src4 = x
    nb, C = x.shape[0], x.shape[1]
    Hp, Wp = src4.shape[2], src4.shape[3]
    Ho, Wo = cols.shape[4], cols.shape[5]
    src = src4.reshape(-1)
    dst = cols.reshape(-1)
    o = np.uint64(0)
    for c in range(C):
        for i in range(k):
            for j in range(k):
                for n in range(nb):
                    base = np.uint64((n * C + c) * Hp * Wp + i * d * Wp + j * d)
                    for ho in range(Ho):
                        row = base + np.uint64(ho * s * Wp)
                        if s == 1:
                            for wo in range(Wo):
                                dst[o + np.uint64(wo)] = src[row + np.uint64(wo)]
                        else:
                            for wo in range(Wo):
                                dst[o + np.uint64(wo)] = src[row + np.uint64(wo * s)]
                        o += np.uint64(Wo)


@numba.njit(cache=True, nogil=True)
def _col2im_kernel(cols, k, s, p, d, dxp, dx):
    """dx = 0, then dx[n, c, ho*s + i*d - p, wo*s + j*d - p] += cols[c, i, j, n, ho, wo] in
    (i, j, ho, wo) order, accumulated in the padded input `dxp` (scratch of shape
    [N, C, H + 2p, W + 2p]; pass dx itself when p == 0); the padding is then dropped."""
    nb, C, H, W = dx.shape
    Ho, Wo = cols.shape[4], cols.shape[5]
    dxp[...] = 0
    for c in range(C):
        for i in range(k):
            for j in range(k):
                for n in range(nb):
                    dst = dxp[n, c]
                    src = cols[c, i, j, n]
                    for ho in range(Ho):
                        h = ho * s + i * d
                        if s == 1:
                            for wo in range(Wo):
                                dst[h, wo + j * d] += src[ho, wo]
                        else:
                            for wo in range(Wo):
                                dst[h, wo * s + j * d] += src[ho, wo]
    if p > 0:
        for n in range(nb):
            for c in range(C):
                for h in range(H):
                    for w in range(W):
                        dx[n, c, h, w] = dxp[n, c, h + p, w + p]


@numba.njit(cache=True, nogil=True)
def _flip_transpose_kernel(w, out):
    """out[g, c, o, i, j] = w[g, o, c, k-1-i, k-1-j]: the weight of dX computed as a forward
    conv of dy (w [G, O/G, C/G, k, k], out [G, C/G, O/G, k, k]). Tiles of 16 x 16 kernels
    keep both sides in cache; flat unsigned offsets let the copies compile without index
    checks: 0.4-0.9 ns per element (NumPy's copy of the reversed, transposed view: 3.5;
    the same loops with signed offsets: 3.1)."""
    G, O, C, k, _ = w.shape
    kk = k * k
    src, dst = w.reshape(-1), out.reshape(-1)
    B = 16
    for g in range(G):
        for o0 in range(0, O, B):
            for c0 in range(0, C, B):
                for o in range(o0, min(o0 + B, O)):
                    row = np.uint64((g * O + o) * C * kk + kk - 1)
                    for c in range(c0, min(c0 + B, C)):
                        last = row + np.uint64(c * kk)         # the block's last element
                        d0 = np.uint64(((g * C + c) * O + o) * kk)
                        for t in range(kk):                    # reversing the k*k block
                            dst[d0 + np.uint64(t)] = src[last - np.uint64(t)]


@numba.njit(cache=True, nogil=True)
def _maxpool_forward_kernel(x, k, s, p, c0, c1, y, arg):
    """y[n, c, ho, wo] = max of the k x k window at (ho*s - p, wo*s - p) of x [N, C, H, W]
    (padding counts as -inf), arg = i*k + j of its first maximum in row-major window order
    (a later tap wins only if strictly greater), for the flat (n, c) maps c0..c1-1."""
    N, C, H, W = x.shape
    Ho, Wo = y.shape[2], y.shape[3]
    ninf = x.dtype.type(-np.inf)
    for nc in range(c0, c1):
        n, c = nc // C, nc % C
        for ho in range(Ho):
            for wo in range(Wo):
                h0, w0 = ho * s - p, wo * s - p
                best = x[n, c, h0, w0] if h0 >= 0 and w0 >= 0 else ninf
                where = 0
                for t in range(1, k * k):
                    h, w = h0 + t // k, w0 + t % k
                    if h >= 0 and h < H and w >= 0 and w < W:   # (padding never wins)
                        v = x[n, c, h, w]
                        if v > best:
                            best = v
                            where = t
                y[n, c, ho, wo] = best
                arg[n, c, ho, wo] = where


@numba.njit(cache=True, nogil=True)
def _maxpool_backward_kernel(dy, arg, k, s, p, dx):
    """dx = 0; dx[n, c, ho*s + a//k - p, wo*s + a%k - p] += dy[n, c, ho, wo], a = arg[...]."""
    N, C, Ho, Wo = dy.shape
    H, W = dx.shape[2], dx.shape[3]
    dx[...] = 0
    for n in range(N):
        for c in range(C):
            for ho in range(Ho):
                for wo in range(Wo):
                    a = arg[n, c, ho, wo]
                    h = ho * s + a // k - p
                    w = wo * s + a % k - p
                    if h >= 0 and h < H and w >= 0 and w < W:
                        dx[n, c, h, w] += dy[n, c, ho, wo]


@numba.njit(cache=True, nogil=True, fastmath=_REASSOC)
def _bn_stats_kernel(x, c0, c1, mean, var):
    """Mean and biased variance (float64, two passes) of channels c0..c1-1 of x [N, C, L]."""
    N, C, L = x.shape
    m = N * L
    for c in range(c0, c1):
        acc = 0.0
        for n in range(N):
            for i in range(L):
                acc += x[n, c, i]
        mu = acc / m
        acc2 = 0.0
        for n in range(N):
            for i in range(L):
                v = x[n, c, i] - mu
                acc2 += v * v
        mean[c] = mu
        var[c] = acc2 / m


@numba.njit(cache=True, nogil=True)
def _bn_apply_kernel(x, scale, shift, y, c0, c1):
    """y = x * scale[c] + shift[c] on channels c0..c1-1 of [N, C, L]."""
    N, C, L = x.shape
    for n in range(N):
        for c in range(c0, c1):
            a = scale[c]
            b = shift[c]
            for i in range(L):
                y[n, c, i] = x[n, c, i] * a + b


@numba.njit(cache=True, nogil=True, fastmath=_REASSOC)
def _bn_backward_kernel(dy, x, mean, invstd, gamma, batch_stats, dx, c0, c1, sdy, sdyx):
    """BatchNorm input gradient of channels c0..c1-1 into dx, and per channel sum(dy) into
    sdy and sum(dy*xhat) into sdyx (float64).

    With batch statistics: dx = gamma*invstd*(dy - mean(dy) - xhat*mean(dy*xhat));
    with fixed (running) statistics: dx = gamma*invstd*dy.
    """
    N, C, L = x.shape
    m = N * L
    for c in range(c0, c1):
        mu = mean[c]
        a = 0.0
        b = 0.0
        for n in range(N):
            for i in range(L):
                g = dy[n, c, i]
                a += g
                b += g * (x[n, c, i] - mu)
        sdy[c] = a
        sdyx[c] = b * invstd[c]
    for c in range(c0, c1):
        scale = gamma[c] * invstd[c]
        k1 = x.dtype.type(scale)
        if batch_stats:
            k2 = x.dtype.type(scale * sdy[c] / m)
            k3 = x.dtype.type(scale * invstd[c] * sdyx[c] / m)
            mu = x.dtype.type(mean[c])
            for n in range(N):
                for i in range(L):
                    dx[n, c, i] = k1 * dy[n, c, i] - k2 - (x[n, c, i] - mu) * k3
        else:
            for n in range(N):
                for i in range(L):
                    dx[n, c, i] = k1 * dy[n, c, i]


@numba.njit(cache=True, nogil=True)
def _relu_forward_kernel(x, cap, y):
    """y = max(x, 0), and min(., cap) if cap > 0, over flat x and y (NaN stays NaN). The
    element kernels take slices, not lo/hi bounds: numba compiled lo..hi loops into gathers."""
    z = y.dtype.type(0)
    c = y.dtype.type(cap)
    if cap > 0:
        for i in range(x.shape[0]):
            v = x[i]
            v = z if v < 0 else v
            y[i] = c if v > c else v
    else:
        for i in range(x.shape[0]):
            v = x[i]
            y[i] = z if v < 0 else v


@numba.njit(cache=True, nogil=True)
def _relu_backward_kernel(y, dy, cap, dx):
    """dx = dy where 0 < y < cap (cap <= 0 means no cap), else 0; over flat arrays.

    The zero is typed like dx so both arms of the select have one type and LLVM emits a
    vectorised, branch-free select (with an untyped 0 the float32 loop became a
    data-dependent branch: ~5x slower on ReLU outputs, which are zero about half the time)."""
    z = dx.dtype.type(0)
    if cap > 0:
        c = y.dtype.type(cap)
        for i in range(y.shape[0]):
            v = y[i]
            dx[i] = dy[i] if (v > 0 and v < c) else z
    else:
        for i in range(y.shape[0]):
            dx[i] = dy[i] if y[i] > 0 else z


@numba.njit(cache=True, nogil=True)
def _add_kernel(a, b, out):
    """out = a + b over flat arrays."""
    for i in range(out.shape[0]):
        out[i] = a[i] + b[i]


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b (a residual sum): a numba kernel for contiguous operands of one float dtype,
    split over the cores when large; NumPy's `+` for anything else."""
    if (a.shape != b.shape or a.dtype != b.dtype or a.dtype not in (np.float32, np.float64)
            or not (a.flags.c_contiguous and b.flags.c_contiguous)):
        return a + b
    out = np.empty_like(a)
    af, bf, of = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    _run_split(lambda lo, hi: _add_kernel(af[lo:hi], bf[lo:hi], of[lo:hi]), af.size, 3 * af.size,
               pieces=PIECES_PER_WORKER * _WORKERS)
    return out


def im2col(x: np.ndarray, kernel: int, stride: int = 1, padding: int = 0,
           dilation: int = 1) -> np.ndarray:
    """Unfold x [N, C, H, W] into cols [C, k, k, N, Ho, Wo] (zero padding; numba)."""
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    Ho, Wo = (_out_size(v, kernel, stride, padding, dilation) for v in (H, W))
    cols = np.empty((C, kernel, kernel, N, Ho, Wo), dtype=x.dtype)
    xp = np.empty((N, C, H + 2 * padding, W + 2 * padding), dtype=x.dtype) if padding else x
    _im2col_kernel(x, kernel, stride, padding, dilation, xp, cols)
    return cols


def col2im(cols: np.ndarray, x_shape: tuple[int, ...], kernel: int, stride: int = 1,
           padding: int = 0, dilation: int = 1) -> np.ndarray:
    """Fold cols [C, k, k, N, Ho, Wo] back into an [N, C, H, W] gradient: scatter-add of every
    column entry into the (padded) input position it was read from; the padding is dropped
    (numba kernel; `col2im_reference` is the NumPy equivalent)."""
    cols = np.ascontiguousarray(cols)
    N, C, H, W = x_shape
    dx = np.empty(x_shape, dtype=cols.dtype)
    dxp = np.empty((N, C, H + 2 * padding, W + 2 * padding), cols.dtype) if padding else dx
    _col2im_kernel(cols, kernel, stride, padding, dilation, dxp, dx)
    return dx


def col2im_reference(cols: np.ndarray, x_shape: tuple[int, ...], kernel: int, stride: int = 1,
                     padding: int = 0, dilation: int = 1) -> np.ndarray:
    """Plain NumPy col2im (np.add.at into the padded input, then cropped), for the tests."""
    N, C, H, W = x_shape
    k, s, p, d = kernel, stride, padding, dilation
    Ho, Wo = cols.shape[4], cols.shape[5]
    Hp, Wp = H + 2 * p, W + 2 * p
    hh = (np.arange(k) * d)[:, None, None, None] + (np.arange(Ho) * s)[None, None, :, None]
    ww = (np.arange(k) * d)[None, :, None, None] + (np.arange(Wo) * s)[None, None, None, :]
    pos = (hh * Wp + ww).reshape(1, -1)                                  # (1, k*k*Ho*Wo)
    rows = np.arange(N * C).reshape(-1, 1)                               # (N*C, 1)
    vals = cols.transpose(3, 0, 1, 2, 4, 5).reshape(N * C, -1)           # (N*C, k*k*Ho*Wo)
    dxp = np.zeros((N * C, Hp * Wp), dtype=cols.dtype)
    np.add.at(dxp, (rows, pos), vals)
    return dxp.reshape(N, C, Hp, Wp)[:, :, p:p + H, p:p + W].copy()


def maxpool_backward(dy: np.ndarray, argmax: np.ndarray, x_shape: tuple[int, ...], kernel: int,
                     stride: int, padding: int = 0) -> np.ndarray:
    """Route dy [N, C, Ho, Wo] to the argmax of each window (argmax: i*kernel + j within the
    window), accumulating where windows overlap (numba kernel)."""
    dx = np.empty(x_shape, dtype=dy.dtype)
    _maxpool_backward_kernel(np.ascontiguousarray(dy), np.ascontiguousarray(argmax), kernel,
                             stride, padding, dx)
    return dx


def maxpool_backward_reference(dy: np.ndarray, argmax: np.ndarray, x_shape: tuple[int, ...],
                               kernel: int, stride: int, padding: int = 0) -> np.ndarray:
    """Plain NumPy `maxpool_backward` (np.add.at), for the tests."""
    N, C, Ho, Wo = dy.shape
    n, c, ho, wo = np.indices((N, C, Ho, Wo))
    h = ho * stride + argmax // kernel - padding
    w = wo * stride + argmax % kernel - padding
    dx = np.zeros(x_shape, dtype=dy.dtype)
    np.add.at(dx, (n, c, h, w), dy)
    return dx


# ================================================================================================
# Parallel execution: the batch (or the channels) split over Python threads
# ================================================================================================

class _BlasThreads:
    """Scoped control of the BLAS library's thread count (numpy's bundled OpenBLAS, found
    with ctypes). The conv passes split the batch over Python threads, each running its
    single-threaded BLAS calls and numba kernels (which release the GIL) on its own core;
    for that BLAS must not start threads of its own meanwhile. Unavailable (`ok` False)
    with another BLAS, and then the passes run serially."""

    _SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                "openblas_set_num_threads64_", "openblas_set_num_threads")

    def __init__(self):
        self._set = self._get = None
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = 1
        try:
            root = os.path.dirname(np.__file__)
            libs = sorted(glob.glob(os.path.join(root, "..", "numpy.libs", "*openblas*"))
                          + glob.glob(os.path.join(root, ".dylibs", "*openblas*")))
            for path in libs:
                lib = ctypes.CDLL(path)
                for name in self._SETTERS:
                    getter = name.replace("_set_", "_get_")
                    if hasattr(lib, name) and hasattr(lib, getter):
                        self._set, self._get = getattr(lib, name), getattr(lib, getter)
                        self._get.restype = ctypes.c_int
                        self._set.argtypes = [ctypes.c_int]
                        return
        except (OSError, AttributeError):
            self._set = self._get = None

    @property
    def ok(self) -> bool:
        return self._set is not None

    def __enter__(self):
        """BLAS limited to one thread until the (outermost) exit restores it."""
        with self._lock:
            if self._depth == 0:
                self._saved = int(self._get())
                self._set(1)
            self._depth += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                self._set(self._saved)


class _Scratch(threading.local):
    """Per-thread scratch memory of the conv passes: one flat buffer per role and dtype,
    grown to the largest request and handed out as reshaped views. Layers run one at a
    time, so sharing the buffers between layers bounds the memory to the largest layer's
    chunk; a view is only valid until the next request for the same role."""

    def __init__(self):
        self.buffers: dict = {}

    def get(self, role: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        size = math.prod(shape)
        key = (role, np.dtype(dtype))
        buf = self.buffers.get(key)
        if buf is None or buf.size < size:
            buf = self.buffers[key] = np.empty(max(size, 1), dtype=dtype)
        return buf[:size].reshape(shape)


_scratch = _Scratch()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_blas = _BlasThreads()
# One worker per core the process may use, at most as many as BLAS would use itself (so
# OPENBLAS_NUM_THREADS / OMP_NUM_THREADS limit these layers too).
_WORKERS = min(8, _cpu_count(), max(1, int(_blas._get()))) if _blas.ok else 1
# Work (elements touched by a pass) from which it is split over threads; below it, handing
# work to the threads costs more than it saves. Conv passes (a BLAS call per chunk, each
# far longer than the hand-over) are split from `_PARALLEL_CONV_ELEMENTS` on: measured on 2
# cores, ResNet-18's stride-2 1x1 downsample convs (0.25M-0.5M, batch 64) run ~2x faster so.
_PARALLEL_ELEMENTS = 1 << 20
_PARALLEL_CONV_ELEMENTS = 1 << 18
# Pieces per worker of a pass whose pieces cost nothing to combine (`_run_split`).
PIECES_PER_WORKER = 4
_pool = None
_pool_pid = None
_pool_lock = threading.Lock()
_in_worker = threading.local()


def _worker_init() -> None:
    _in_worker.active = True


def _run_split(fn, count: int, work: int, min_work: int | None = None,
               pieces: int | None = None) -> list:
    """fn(lo, hi) over contiguous ranges of range(count) (samples or channels): on
    `_WORKERS` threads, BLAS single-threaded meanwhile, when `work` (elements touched) is
    at least `_PARALLEL_ELEMENTS`, or `min_work` if that is lower, else once over the whole
    range (BLAS single-threaded as well when below the threshold).

    The range is cut into `pieces` equal parts (default: one per worker; at least one per
    worker, at most one per element of the range), which the workers take in turn as they
    finish: with more pieces than workers, a core slowed by something else on the machine
    does less of the work instead of holding up the pass (measured on the shared 2-core
    machine: a static half each lost 85-135 ms of a 1.9 s ResNet-18 step to the slower
    half). The cut depends only on `count`, `pieces` and the number of workers, and the
    results come back in range order, so reductions over them are deterministic. fn must
    release the GIL to gain anything (BLAS, nogil numba kernels)."""
    workers = min(_WORKERS, count)
    if getattr(_in_worker, "active", False):
        return [fn(0, count)]
    if work < (_PARALLEL_ELEMENTS if min_work is None else min(min_work, _PARALLEL_ELEMENTS)):
        if _blas.ok:
            # Small pass: single-threaded BLAS as well. A multithreaded OpenBLAS call wakes
            # its thread pool, whose threads then busy-wait for more work for a long while
            # (~0.1 s) and take a core from the split passes that follow (measured: the next
            # conv layers up to 1.5-2x slower). Splitting a call this small gains nothing.
            with _blas:
                return [fn(0, count)]
        return [fn(0, count)]
    if workers < 2:
        return [fn(0, count)]
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():   # new, or inherited through fork()
            from concurrent.futures import ThreadPoolExecutor
            _pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="accelsim-layers",
                                       initializer=_worker_init)
            _pool_pid = os.getpid()
    parts = min(count, max(workers, pieces or workers))
    bounds = [count * i // parts for i in range(parts + 1)]
    with _blas:
        futures = [_pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(parts)]
        return [f.result() for f in futures]


