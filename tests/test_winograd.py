"""Winograd F(2x2, 3x3) convolution (workloads.winograd) against NumPy references."""

import numpy as np
import pytest

from tests.test_layers import conv_spec, gradcheck, naive_conv
from workloads import kernels as K
from workloads import layers as L
from workloads import winograd as W

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)


def test_transform_matrices_compute_a_2x2_correlation():
    """The matrices of the module docstring: A^T[(G g G^T) * (B^T d B)]A = 3x3 correlation."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    y = AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)) @ AT.T
    ref = np.array([[np.sum(d[a:a + 3, b:b + 3] * g) for b in range(2)] for a in range(2)])
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_weight_transform_equals_numpy():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 7, 3, 3))
    U = W.transform_weight(w)
    ref = np.einsum("ik,ockl,jl->ijoc", G, w, G).reshape(16, 5, 7)
    np.testing.assert_allclose(U, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_input_transform_equals_numpy_including_padding_and_bands(padding):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 6))
    Ho, Wo = 7 + 2 * padding - 2, 6 + 2 * padding - 2
    TH, TW = -(-Ho // 2), -(-Wo // 2)
    xp = np.zeros((2, 3, 2 * TH + 2, 2 * TW + 2))        # padded, and past the edge
    xp[:, :, padding:padding + 7, padding:padding + 6] = x
    for th0, R in ((0, TH), (1, TH - 1)):                # whole samples, a band of rows
        V = np.empty((16, 3, 2 * R * TW))
        W._input_kernel(x, padding, th0, TW, V)
        q = 0
        for n in range(2):
            for th in range(th0, th0 + R):
                for tw in range(TW):
                    d = xp[n, :, 2 * th:2 * th + 4, 2 * tw:2 * tw + 4]
                    ref = np.einsum("ik,ckl,jl->ijc", BT, d, BT).reshape(16, 3)
                    np.testing.assert_allclose(V[:, :, q], ref, rtol=1e-12, atol=1e-12)
                    q += 1


@pytest.mark.parametrize("shape", [(11, 16, 16, 8, 8, 1), (2, 17, 19, 7, 9, 0), (1, 16, 20, 5, 6, 2),
                                   (3, 4, 3, 33, 31, 1), (1, 2, 2, 1, 1, 1)],
                         ids=["even", "odd-unpadded", "pad2", "large-maps", "1x1-input"])
@pytest.mark.parametrize("workers", [1, 3])
def test_conv3x3_equals_direct_convolution(monkeypatch, shape, workers):
    """Float64 to 1e-12 of the direct loop, cut every way `conv3x3` cuts: chunks of several
    samples with a shorter last chunk (11 samples, 16 tiles each, 40 tiles a chunk), one
    sample per chunk, bands of several tile rows with a shorter last band (17 x 16 tiles,
    40 a chunk), bands of one row; serial, and in more pieces than 3 workers."""
    N, C, O, H, Wd, p = shape
    monkeypatch.setattr(K, "_WORKERS", workers)
    monkeypatch.setattr(K, "_PARALLEL_CONV_ELEMENTS", 1)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, C, H, Wd))
    w = rng.standard_normal((O, C, 3, 3))
    ref = naive_conv(x, w, None, 1, p, 1, 1)
    cuts = []
    run_split = K._run_split
    monkeypatch.setattr(K, "_run_split", lambda fn, count, *a, **k: cuts.append(
        k.get("pieces")) or run_split(fn, count, *a, **k))
    for tiles in (512, 40, 5, 1):
        monkeypatch.setattr(W, "tiles_per_chunk", lambda channels, t=tiles: t)
        y = W.conv3x3(x, W.transform_weight(w), p)
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    if N == 11 and workers == 3:
        assert max(cuts) > workers                         # more pieces than workers


def test_conv3x3_cuts_chunks_and_bands_as_documented(monkeypatch):
    """The chunks `conv3x3` hands to its kernels: (samples, first tile row, tile rows)."""
    calls = []
    kernel = W._input_kernel
    monkeypatch.setattr(W, "_input_kernel", lambda x, p, th0, TW, V, *a: calls.append(
        (x.shape[0], th0, V.shape[2] // (x.shape[0] * TW))) or kernel(x, p, th0, TW, V, *a))
    x = np.zeros((11, 16, 8, 8))                           # 16 tiles per sample
    monkeypatch.setattr(W, "tiles_per_chunk", lambda channels: 40)
    W.conv3x3(x, W.transform_weight(np.zeros((4, 16, 3, 3))), 1)
    assert sorted(calls) == sorted([(2, 0, 4)] * 5 + [(1, 0, 4)])
    calls.clear()
    x = np.zeros((1, 16, 34, 32))                          # 17 x 16 tiles
    monkeypatch.setattr(W, "tiles_per_chunk", lambda channels: 40)
    W.conv3x3(x, W.transform_weight(np.zeros((4, 16, 3, 3))), 1)
    assert calls == [(1, th0, 3) for th0 in range(0, 15, 3)] + [(1, 15, 2)]   # 7 bands


def test_conv3x3_float32_is_close_to_the_direct_convolution():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 64, 12, 12))
    w = rng.standard_normal((32, 64, 3, 3)) / 24
    ref = naive_conv(x, w, None, 1, 1, 1, 1)
    y = W.conv3x3(x.astype(np.float32), W.transform_weight(w.astype(np.float32)), 1)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-5 * np.abs(ref).max())


def test_conv3x3_rejects_an_input_too_small():
    with pytest.raises(ValueError, match="too small"):
        W.conv3x3(np.zeros((1, 2, 1, 1)), W.transform_weight(np.zeros((2, 2, 3, 3))), 0)


@pytest.mark.parametrize("geometry", [(3, 1, 1, 1, 1), (3, 1, 0, 1, 1), (3, 1, 2, 1, 1),
                                      (3, 2, 1, 1, 1), (3, 1, 1, 2, 1), (3, 1, 1, 1, 2),
                                      (1, 1, 0, 1, 1), (5, 1, 2, 1, 1)])
def test_conv2d_uses_winograd_exactly_where_it_applies(geometry):
    k, s, p, d, g = geometry
    conv = L.Conv2d(conv_spec(16, 16, k, s, p, d, g), np.random.default_rng(0))
    expected = k == 3 and s == 1 and d == 1 and g == 1
    big = (8, 16, 8, 8)                                  # 8 samples of 4 x 4 tiles
    assert conv._uses_winograd(p, 16, 16, big) == expected
    assert not conv._uses_winograd(p, 16, W.MIN_CHANNELS - 1, big)
    assert not conv._uses_winograd(p, 16, 16, (1000, 16, 1, 1))     # 1x1 maps
    assert not conv._uses_winograd(p, 16, 16, (1, 16, 8, 8))        # 16 tiles in all
    conv.winograd = False
    assert not conv._uses_winograd(p, 16, 16, big)


@pytest.mark.parametrize("shape", [(16, 16, 1, (8, 8)), (16, 24, 0, (7, 9)), (20, 16, 2, (5, 6))])
@pytest.mark.parametrize("masked", [False, True])
def test_conv2d_with_and_without_winograd_agree(monkeypatch, shape, masked):
    """Forward, input gradient (the transposed conv of dy) and weight gradient, with Winograd
    really taken for both the forward pass and the input gradient; also with a Top-K
    saved input (`Thresholded`, masked as the weight gradient unfolds it)."""
    from workloads.topk import Thresholded, topk_threshold

    cin, cout, p, hw = shape
    dtype = np.float32 if masked else np.float64
    spec = conv_spec(cin, cout, 3, 1, p, hw=hw)
    fast, plain = (L.Conv2d(spec, np.random.default_rng(0), dtype=dtype) for _ in range(2))
    plain.winograd = False
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, cin, *hw)).astype(dtype)
    if masked:
        threshold = topk_threshold(x, 0.7, "CHW")
        fast.save_input = plain.save_input = lambda t: Thresholded(t, threshold, 0)
    calls = []
    conv3x3 = W.conv3x3
    monkeypatch.setattr(W, "conv3x3", lambda *a: calls.append(a[0].shape) or conv3x3(*a))
    tol = dict(rtol=1e-4, atol=1e-4) if masked else dict(rtol=1e-12, atol=1e-12)
    y = fast.forward(x)
    np.testing.assert_allclose(y, plain.forward(x), **tol)
    dy = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(fast.backward(dy), plain.backward(dy), **tol)
    np.testing.assert_allclose(fast.weight.grad, plain.weight.grad, **tol)
    assert calls == [x.shape, y.shape]                   # forward of x, then dX from dy


def test_conv2d_winograd_finite_differences(monkeypatch):
    monkeypatch.setattr(W, "MIN_CHANNELS", 1)
    monkeypatch.setattr(W, "MIN_TILES", 1)
    rng = np.random.default_rng(6)
    conv = L.Conv2d(conv_spec(3, 4, 3, 1, 1, hw=(5, 4), bias=True), rng, dtype=np.float64)
    assert conv._uses_winograd(1, 3, 4, (2, 4, 5, 4))
    gradcheck(conv, rng.standard_normal((2, 3, 5, 4)))
