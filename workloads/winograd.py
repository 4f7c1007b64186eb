"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (units: elements).

What this computes: y = conv(x, w) for x [N, C, H, W], w [O, C, 3, 3], zero padding p
(0..2), stride 1, dilation 1, one group: the forward pass of a 3x3 conv layer, and its input
gradient, which for stride 1 is the same kind of conv of dy with the flipped, transposed
weight (`workloads.layers.Conv2d`). The same numbers as im2col + GEMM up to float rounding
(float32: about 1e-6 relative; the tests hold it to the direct conv).

How (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016): the
output is cut into 2x2 tiles; each tile's 4x4 input patch d and each 3x3 kernel g are
transformed, V = B^T d B and U = G g G^T (16 values each), multiplied element by element
and summed over the input channels, which for the 16 positions xi of the 4x4 tile is 16
matrix products M[xi] = U[xi] [O, C] @ V[xi] [C, tiles], and transformed back,
y = A^T M A. That is 16 multiplications per 2x2 outputs instead of 36: 2.25x fewer
multiply-adds in the BLAS calls, for transforms that move less memory than im2col's 9x copy
of the input.

Layout and chunking: the 16 planes V[xi] (and M[xi]) sit in one buffer with a 64-byte gap
between planes, so the transforms' 16 streams do not fall on the same cache sets (without
the gap, the input transform of ResNet-18's first stage ran 2.4x slower). A pass runs in
chunks of whole samples, or of bands of one sample's tile rows, of about `tiles_per_chunk`
tiles: measured (OpenBLAS sgemm, 1 thread, Zen 4), 64- and 128-channel products run at
88-102 GFLOP/s on 64-128 tiles and 60-80 on 1024; 256 and 512 channels want 512 or more.
Chunks split over the cores like the other conv passes (`kernels._run_split`).
"""

from __future__ import annotations

import numba
import numpy as np

from . import kernels as _kernels

# Channels from which the forward pass and input gradient of an eligible layer use this
# path (`Conv2d`); below it the 16 products are too thin for BLAS to gain from.
MIN_CHANNELS = 16
# Tiles (2x2 outputs, over the batch) from which it pays: transforming an O x C weight
# writes 16*O*C values, the products take 16*O*C multiply-adds per tile.
MIN_TILES = 64
_PLANE_GAP = 16          # elements between the 16 planes of V and M (64 bytes of float32)


def supports(kernel: int, stride: int, padding: int, dilation: int, groups: int) -> bool:
    """Whether a conv of this geometry can run as F(2x2, 3x3) here."""
    return kernel == 3 and stride == 1 and dilation == 1 and groups == 1 and 0 <= padding <= 2


def tiles_per_chunk(channels: int) -> int:
    """Tiles per chunk for products over `channels` input channels (see module docstring)."""
    return 128 if channels <= 128 else 512


@numba.njit(inline="always")
def _bt(a0, a1, a2, a3):
    """One row (or column) of B^T d."""
    return a0 - a2, a1 + a2, a2 - a1, a1 - a3


@numba.njit(inline="always")
def _at(a0, a1, a2, a3):
    """One row (or column) of A^T m."""
    return a0 + a1 + a2, a1 - a2 - a3


@numba.njit(inline="always")
def _g(a0, a1, a2, half):
    """One row (or column) of G g."""
    return a0, half * (a0 + a1 + a2), half * (a0 - a1 + a2), a2


@numba.njit(inline="always")
def _store(P, a, b, r0, r1, r2, r3):
    """P[4i + j, a, b] = ri[j]: one transformed 4x4 tile into the 16 planes."""
    P[0, a, b], P[1, a, b], P[2, a, b], P[3, a, b] = r0
    P[4, a, b], P[5, a, b], P[6, a, b], P[7, a, b] = r1
    P[8, a, b], P[9, a, b], P[10, a, b], P[11, a, b] = r2
    P[12, a, b], P[13, a, b], P[14, a, b], P[15, a, b] = r3


@numba.njit(cache=True, nogil=True)
def _weight_kernel(w, U):
    """U[xi, o, c] = (G w[o, c] G^T) at xi = 4*i + j, for w [O, C, 3, 3]."""
    O, C = w.shape[0], w.shape[1]
    half = w.dtype.type(0.5)
    for o in range(O):
        for c in range(C):
            g = w[o, c]
            t00, t10, t20, t30 = _g(g[0, 0], g[1, 0], g[2, 0], half)     # columns: G g
            t01, t11, t21, t31 = _g(g[0, 1], g[1, 1], g[2, 1], half)
            t02, t12, t22, t32 = _g(g[0, 2], g[1, 2], g[2, 2], half)
            _store(U, o, c, _g(t00, t01, t02, half), _g(t10, t11, t12, half),   # rows:
                   _g(t20, t21, t22, half), _g(t30, t31, t32, half))           # (G g) G^T


@numba.njit(cache=True, nogil=True)
def _input_kernel(x, p, th0, TW, V):
    """V[xi, c, q] = (B^T d B)[xi] for the 4x4 patch d of tile q: tile rows th0 .. th0 + R - 1
    of every sample of x [n, C, H, W] (zero padding p implied), q = (n*R + th - th0)*TW + tw,
    R = V.shape[2] // (n * TW). The patch of tile (th, tw) starts at input (2th - p, 2tw - p)."""
    nb, C, H, W = x.shape
    R = V.shape[2] // (nb * TW)
    for c in range(C):
        for n in range(nb):
            q = n * R * TW
            for th in range(th0, th0 + R):
                h0 = 2 * th - p
                for tw in range(TW):
                    w0 = 2 * tw - p
                    if h0 >= 0 and h0 + 4 <= H and w0 >= 0 and w0 + 4 <= W:
                        r = x[n, c, h0]
                        d00, d01, d02, d03 = r[w0], r[w0 + 1], r[w0 + 2], r[w0 + 3]
                        r = x[n, c, h0 + 1]
                        d10, d11, d12, d13 = r[w0], r[w0 + 1], r[w0 + 2], r[w0 + 3]
                        r = x[n, c, h0 + 2]
                        d20, d21, d22, d23 = r[w0], r[w0 + 1], r[w0 + 2], r[w0 + 3]
                        r = x[n, c, h0 + 3]
                        d30, d31, d32, d33 = r[w0], r[w0 + 1], r[w0 + 2], r[w0 + 3]
                    else:                                   # a tile touching the padding
                        d = np.zeros(16, dtype=x.dtype)
                        for i in range(4):
                            h = h0 + i
                            if h >= 0 and h < H:
                                for j in range(4):
                                    w = w0 + j
                                    if w >= 0 and w < W:
                                        d[4 * i + j] = x[n, c, h, w]
                        d00, d01, d02, d03 = d[0], d[1], d[2], d[3]
                        d10, d11, d12, d13 = d[4], d[5], d[6], d[7]
                        d20, d21, d22, d23 = d[8], d[9], d[10], d[11]
                        d30, d31, d32, d33 = d[12], d[13], d[14], d[15]
                    t00, t10, t20, t30 = _bt(d00, d10, d20, d30)     # columns: B^T d
                    t01, t11, t21, t31 = _bt(d01, d11, d21, d31)
                    t02, t12, t22, t32 = _bt(d02, d12, d22, d32)
                    t03, t13, t23, t33 = _bt(d03, d13, d23, d33)
                    _store(V, c, q, _bt(t00, t01, t02, t03), _bt(t10, t11, t12, t13),
                           _bt(t20, t21, t22, t23), _bt(t30, t31, t32, t33))  # (B^T d) B
                    q += 1


@numba.njit(cache=True, nogil=True)
def _output_kernel(M, th0, TW, y):
    """y[n, o, 2th + a, 2tw + b] = (A^T M[:, o, q] A)[a, b] for the tiles of `_input_kernel`'s
    numbering, cropped to y [n, O, Ho, Wo]."""
    nb, O, Ho, Wo = y.shape
    R = M.shape[2] // (nb * TW)
    for n in range(nb):
        for o in range(O):
            q = n * R * TW
            for th in range(th0, th0 + R):
                h = 2 * th
                for tw in range(TW):
                    a0, b0 = _at(M[0, o, q], M[4, o, q], M[8, o, q], M[12, o, q])
                    a1, b1 = _at(M[1, o, q], M[5, o, q], M[9, o, q], M[13, o, q])
                    a2, b2 = _at(M[2, o, q], M[6, o, q], M[10, o, q], M[14, o, q])
                    a3, b3 = _at(M[3, o, q], M[7, o, q], M[11, o, q], M[15, o, q])
                    y00, y01 = _at(a0, a1, a2, a3)
                    y10, y11 = _at(b0, b1, b2, b3)
                    w = 2 * tw
                    if h + 1 < Ho and w + 1 < Wo:
                        y[n, o, h, w] = y00
                        y[n, o, h, w + 1] = y01
                        y[n, o, h + 1, w] = y10
                        y[n, o, h + 1, w + 1] = y11
                    else:                                   # a tile past the edge
                        y[n, o, h, w] = y00
                        if w + 1 < Wo:
                            y[n, o, h, w + 1] = y01
                        if h + 1 < Ho:
                            y[n, o, h + 1, w] = y10
                            if w + 1 < Wo:
                                y[n, o, h + 1, w + 1] = y11
                    q += 1


def _planes(role: str, rows: int, cols: int, dtype) -> np.ndarray:
    """Per-thread scratch (`kernels._scratch`) as [16, rows, cols] planes `_PLANE_GAP` apart."""
    flat = _kernels._scratch.get(role, (16 * (rows * cols + _PLANE_GAP),), dtype)
    return _gapped_planes(flat, rows, cols)


def _gapped_planes(buf: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A [16, rows, cols] view of the flat `buf` with its planes `_PLANE_GAP` elements apart."""
    size = buf.itemsize
    return np.lib.stride_tricks.as_strided(buf, (16, rows, cols),
                                           ((rows * cols + _PLANE_GAP) * size, cols * size, size))


def transform_weight(w: np.ndarray) -> np.ndarray:
    """U [16, O, C] of a weight w [O, C, 3, 3] (float32 or float64), its planes apart
    like V's (written in 16 streams, they would otherwise share cache sets too)."""
    O, C = w.shape[:2]
    U = _gapped_planes(np.empty(16 * (O * C + _PLANE_GAP), dtype=w.dtype), O, C)
    _weight_kernel(np.ascontiguousarray(w), U)
    return U


def conv3x3(x: np.ndarray, U: np.ndarray, padding: int) -> np.ndarray:
    """y [N, O, H + 2p - 2, W + 2p - 2] = conv(x, w) for the transformed weight U of w
    (`transform_weight`), x [N, C, H, W], stride 1, zero padding p."""
    N, C, H, W = x.shape
    O = U.shape[1]
    Ho, Wo = H + 2 * padding - 2, W + 2 * padding - 2
    if Ho < 1 or Wo < 1:
        raise ValueError(f"input {H}x{W} is too small for a 3x3 kernel with padding {padding}")
    TH, TW = -(-Ho // 2), -(-Wo // 2)
    y = np.empty((N, O, Ho, Wo), dtype=x.dtype)
    target = tiles_per_chunk(C)
    if TH * TW <= target:                        # whole samples per chunk
        nb, rb = max(1, target // (TH * TW)), TH
    else:                                        # one sample, in bands of tile rows
        nb, rb = 1, -(-TH // -(-(TH * TW) // target))

    def run(lo, hi):
        for q in range(lo, hi, nb):
            n = min(nb, hi - q)
            for th0 in range(0, TH, rb):
                R = min(rb, TH - th0)
                V = _planes("winograd-V", C, n * R * TW, x.dtype)
                M = _planes("winograd-M", O, n * R * TW, x.dtype)
                _input_kernel(x[q:q + n], padding, th0, TW, V)
                np.matmul(U, V, out=M)
                _output_kernel(M, th0, TW, y[q:q + n])

    _kernels._run_split(run, N, N * C * H * W * 4, _kernels._PARALLEL_CONV_ELEMENTS,
                        pieces=min(_kernels.PIECES_PER_WORKER * _kernels._WORKERS,
                                   max(1, N // nb)))
    return y
