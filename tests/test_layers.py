"""workloads.layers: every backward pass against central finite differences (float64), the
forward passes against naive loop implementations, the numba kernels against their NumPy
references (bit-exact), BatchNorm statistics, pooling/dropout/loss semantics, the sparsity
hooks of the weight layers, and the module tree (names, modes, state_dict round trip)."""

import numpy as np
import pytest

from simulator.trace import LayerSpec
from workloads import kernels as K
from workloads import layers as L
from workloads import weight_layers

F64 = np.float64


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def conv_spec(cin, cout, k, s=1, p=0, d=1, g=1, hw=(6, 5), bias=False, name="c"):
    out = tuple((v + 2 * p - d * (k - 1) - 1) // s + 1 for v in hw)
    return LayerSpec(name, "conv", cin, cout, k, s, p, d, g, hw, out, bias)


def fc_spec(cin, cout, bias=True, name="fc"):
    return LayerSpec(name, "fc", cin, cout, bias=bias)


def naive_conv(x, w, b, s, p, d, groups):
    """Direct loop convolution (torch semantics), float64."""
    N, C, H, W = x.shape
    O, cpg, k, _ = w.shape
    og = O // groups
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    Ho = (H + 2 * p - d * (k - 1) - 1) // s + 1
    Wo = (W + 2 * p - d * (k - 1) - 1) // s + 1
    y = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            g = o // og
            for ho in range(Ho):
                for wo in range(Wo):
                    patch = xp[n, g * cpg:(g + 1) * cpg,
                               ho * s:ho * s + d * (k - 1) + 1:d, wo * s:wo * s + d * (k - 1) + 1:d]
                    y[n, o, ho, wo] = np.sum(patch * w[o]) + (0.0 if b is None else b[o])
    return y


def rel_err(a, b, floor=1e-3):
    """max |a - b| relative to the larger magnitude (at least `floor`: a gradient that is
    zero in theory, like a conv bias before training-mode BN, is compared absolutely)."""
    a, b = np.asarray(a, F64), np.asarray(b, F64)
    scale = max(np.abs(a).max(initial=0), np.abs(b).max(initial=0), floor)
    return float(np.abs(a - b).max(initial=0) / scale)


def gradcheck(module, x, before_forward=None, eps=1e-6, tol=1e-5, rng=None):
    """Check dL/dx and dL/dparam of L = sum(forward(x) * R) against central differences."""
    rng = rng or np.random.default_rng(123)

    def fwd(inp):
        if before_forward is not None:
            before_forward()
        return module.forward(inp)

    y = fwd(x)
    R = rng.standard_normal(y.shape)
    module.zero_grad()
    dx = module.backward(R.copy())
    analytic = [("input", x, dx)] + [(p.name, p.value, p.grad.copy()) for p in module.params()]
    for name, arr, grad in analytic:
        assert grad.shape == arr.shape, name
        num = np.zeros_like(arr)
        flat, nflat = arr.reshape(-1), num.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            lp = np.sum(fwd(x) * R)
            flat[i] = old - eps
            lm = np.sum(fwd(x) * R)
            flat[i] = old
            nflat[i] = (lp - lm) / (2 * eps)
        err = rel_err(grad, num)
        assert err < tol, f"{type(module).__name__} d/d{name}: relative error {err:.2e}"


def away_from(x, points, gap=1e-2):
    """Move entries of x at least `gap` away from each kink in `points`."""
    x = x.copy()
    for p in points:
        close = np.abs(x - p) < gap
        x[close] = p + np.where(x[close] >= p, gap, -gap)
    return x


# ------------------------------------------------------------------------------------------------
# Conv2d
# ------------------------------------------------------------------------------------------------

# (cin, cout, kernel, stride, padding, dilation, groups, hw, bias)
CONV_CASES = [
    (3, 4, 3, 1, 1, 1, 1, (6, 5), True),
    (4, 6, 3, 2, 0, 1, 1, (7, 6), False),
    (4, 6, 3, 3, 2, 1, 2, (8, 7), True),
    (3, 5, 2, 2, 1, 2, 1, (7, 9), False),
    (4, 4, 3, 1, 2, 2, 4, (6, 7), True),       # depthwise, dilated
    (4, 8, 3, 2, 1, 1, 4, (7, 5), False),      # depthwise with channel multiplier 2
    (4, 6, 1, 1, 0, 1, 1, (5, 3), True),       # pointwise: plain matmul
    (4, 6, 1, 1, 0, 1, 2, (4, 4), False),      # grouped pointwise
    (2, 3, 1, 2, 0, 1, 1, (5, 6), False),      # strided 1x1 (ResNet downsample)
    (3, 2, 5, 1, 2, 1, 1, (5, 4), True),
    (2, 4, 3, 3, 1, 2, 2, (9, 8), False),
    (2, 5, 3, 1, 1, 1, 1, (5, 4), False),      # stride 1, out >> in: dX by matmul + col2im
    (2, 3, 1, 1, 1, 1, 1, (4, 5), True),       # padded 1x1: dX by matmul + col2im
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "c{}o{}k{}s{}p{}d{}g{}".format(*c))
def test_conv_forward_matches_naive_loop(case):
    cin, cout, k, s, p, d, g, hw, bias = case
    rng = np.random.default_rng(0)
    conv = L.Conv2d(conv_spec(cin, cout, k, s, p, d, g, hw, bias), rng, dtype=F64)
    if bias:
        conv.bias.value[...] = rng.standard_normal(cout)
    x = rng.standard_normal((3, cin, *hw))
    y = conv.forward(x)
    ref = naive_conv(x, conv.weight.value, conv.bias.value if bias else None, s, p, d, g)
    assert y.shape == ref.shape == (3, cout, *conv.spec.out_hw)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "c{}o{}k{}s{}p{}d{}g{}".format(*c))
def test_conv_backward_finite_differences(case):
    cin, cout, k, s, p, d, g, hw, bias = case
    rng = np.random.default_rng(1)
    conv = L.Conv2d(conv_spec(cin, cout, k, s, p, d, g, hw, bias), rng, dtype=F64)
    gradcheck(conv, rng.standard_normal((2, cin, *hw)))


@pytest.mark.parametrize("pointwise", [False, True])
def test_conv_batch_chunks_with_remainder(monkeypatch, pointwise):
    """Several samples per chunk plus a smaller last chunk give the same result as one chunk."""
    k, p = (1, 0) if pointwise else (3, 1)
    rng = np.random.default_rng(2)
    conv = L.Conv2d(conv_spec(4, 6, k, 1, p, 1, 2, (5, 4)), rng, dtype=F64)
    x = rng.standard_normal((7, 4, 5, 4))
    dy = rng.standard_normal((7, 6, 5, 4))
    conv.forward(x)
    dx1 = conv.backward(dy)
    dw1 = conv.weight.grad.copy()
    y_ref = naive_conv(x, conv.weight.value, None, 1, p, 1, 2)
    for nb in (1, 3):
        monkeypatch.setattr(weight_layers, "_chunk_size", lambda batch, rows, positions, nb=nb: nb)
        conv.zero_grad()
        y = conv.forward(x)
        dx = conv.backward(dy)
        np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, dx1, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(conv.weight.grad, dw1, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [(4, 4, 3, 1, 1, 1, 1), (4, 6, 3, 1, 2, 2, 2),
                                  (3, 3, 5, 1, 1, 1, 3)])
def test_conv_stride1_dx_paths_agree(monkeypatch, case):
    """Stride-1 dX as the forward conv of dy with the flipped weight == matmul + col2im."""
    cin, cout, k, s, p, d, g = case
    rng = np.random.default_rng(30)
    conv = L.Conv2d(conv_spec(cin, cout, k, s, p, d, g, (6, 7)), rng, dtype=F64)
    x = rng.standard_normal((3, cin, 6, 7))
    dy = rng.standard_normal(conv.forward(x).shape)
    assert conv._transposed_dx(cin, cout)
    out = {}
    for transposed in (True, False):
        monkeypatch.setattr(L.Conv2d, "_transposed_dx", lambda self, C, O, t=transposed: t)
        conv.zero_grad()
        conv.forward(x)
        out[transposed] = (conv.backward(dy), conv.weight.grad.copy())
    np.testing.assert_allclose(out[True][0], out[False][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(out[True][1], out[False][1])


@pytest.mark.skipif(not K._blas.ok, reason="BLAS thread count not controllable: passes are serial")
def test_threaded_passes_match_serial(monkeypatch):
    """Splitting a pass over threads gives the serial results and restores the BLAS threads."""
    monkeypatch.setattr(K, "_WORKERS", 2)
    rng = np.random.default_rng(31)
    blas_threads = K._blas._get()
    conv = L.Conv2d(conv_spec(4, 6, 3, 2, 1, g=2, hw=(7, 6)), rng, dtype=F64)
    conv1 = L.Conv2d(conv_spec(4, 4, 3, 1, 1, hw=(7, 6)), rng, dtype=F64)
    bn, relu = L.BatchNorm2d(4, dtype=F64), L.ReLU(6.0)
    x = rng.standard_normal((5, 4, 7, 6)) * 4
    results = []
    for threshold in (1 << 60, 0):
        monkeypatch.setattr(K, "_PARALLEL_ELEMENTS", threshold)
        res = []
        for m in (conv, conv1, bn, relu):
            m.zero_grad()
            y = m.forward(x)
            dy = np.cos(np.arange(y.size)).reshape(y.shape)
            res += [y, m.backward(dy)] + [p.grad.copy() for p in m.params()]
        results.append(res)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert K._blas._get() == blas_threads


def test_conv_float32_default_and_close_to_float64():
    spec = conv_spec(8, 16, 3, 1, 1, hw=(9, 9))
    c32 = L.Conv2d(spec, np.random.default_rng(0))
    c64 = L.Conv2d(spec, np.random.default_rng(0), dtype=F64)
    assert c32.weight.value.dtype == np.float32 and c32.weight.grad.dtype == np.float32
    x = np.random.default_rng(1).standard_normal((4, 8, 9, 9))
    y32 = c32.forward(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, c64.forward(x), rtol=1e-4, atol=1e-4)
    dy = np.ones_like(y32)
    dx32 = c32.backward(dy)
    assert dx32.dtype == np.float32
    np.testing.assert_allclose(dx32, c64.backward(dy.astype(F64)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(c32.weight.grad, c64.weight.grad, rtol=1e-4, atol=1e-3)


def test_weight_layer_init_and_flags():
    rng = np.random.default_rng(0)
    conv = L.Conv2d(conv_spec(64, 128, 3, 1, 1, g=2, hw=(4, 4), bias=True), rng)
    assert conv.weight.value.shape == (128, 32, 3, 3)
    assert conv.weight.value.std() == pytest.approx(np.sqrt(2 / (32 * 9)), rel=0.03)
    assert conv.weight.decay and not conv.bias.decay
    assert not conv.bias.value.any() and not conv.weight.grad.any()
    fc = L.Linear(fc_spec(500, 300), rng)
    assert fc.weight.value.shape == (300, 500)
    # PyTorch's nn.Linear default: uniform in +-1/sqrt(fan_in), std 1/sqrt(3 fan_in)
    assert np.abs(fc.weight.value).max() <= 1 / np.sqrt(500)
    assert fc.weight.value.std() == pytest.approx(1 / np.sqrt(3 * 500), rel=0.03)
    for m in (conv, fc):
        assert m.forward_weight is None and m.backward_weight is None
        assert m.save_input is None and m.grad_output_hook is None and m.record is False
    with pytest.raises(ValueError):
        L.Conv2d(fc_spec(3, 4), rng)
    with pytest.raises(ValueError):
        L.Linear(conv_spec(3, 4, 3), rng)


def test_linear_forward_and_finite_differences():
    rng = np.random.default_rng(3)
    fc = L.Linear(fc_spec(5, 4), rng, dtype=F64)
    fc.bias.value[...] = rng.standard_normal(4)
    x = rng.standard_normal((3, 5))
    np.testing.assert_allclose(fc.forward(x), x @ fc.weight.value.T + fc.bias.value, rtol=1e-12)
    gradcheck(fc, x)
    gradcheck(L.Linear(fc_spec(5, 4, bias=False), rng, dtype=F64), x)


# ------------------------------------------------------------------------------------------------
# numba kernels vs NumPy references
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("geom", [(3, 1, 1, 1), (3, 2, 0, 1), (3, 3, 2, 1), (2, 2, 1, 2),
                                  (3, 1, 2, 2), (1, 2, 0, 1), (5, 2, 2, 1)])
def test_col2im_kernel_equals_numpy_reference(geom):
    k, s, p, d = geom
    rng = np.random.default_rng(4)
    shape = (3, 4, 9, 7)
    Ho, Wo = ((v + 2 * p - d * (k - 1) - 1) // s + 1 for v in shape[2:])
    for dtype in (np.float32, F64):
        cols = rng.standard_normal((4, k, k, 3, Ho, Wo)).astype(dtype)
        out = L.col2im(cols, shape, k, s, p, d)
        ref = L.col2im_reference(cols, shape, k, s, p, d)
        assert out.dtype == ref.dtype == dtype
        np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("geom", [(3, 1, 1, 1), (3, 2, 0, 1), (2, 3, 2, 2)])
def test_im2col_matches_definition_and_is_col2im_adjoint(geom):
    k, s, p, d = geom
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 8, 7))
    cols = L.im2col(x, k, s, p, d)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    C, _, _, N, Ho, Wo = cols.shape
    for i in range(k):
        for j in range(k):
            win = xp[:, :, i * d:i * d + s * (Ho - 1) + 1:s, j * d:j * d + s * (Wo - 1) + 1:s]
            np.testing.assert_array_equal(cols[:, i, j], win.transpose(1, 0, 2, 3))
    # <im2col(x), c> == <x, col2im(c)>
    c = rng.standard_normal(cols.shape)
    adjoint = np.sum(x * L.col2im(c, x.shape, k, s, p, d))
    assert np.sum(cols * c) == pytest.approx(adjoint, rel=1e-12)


@pytest.mark.parametrize("geom", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (3, 3, 0)])
def test_maxpool_backward_kernel_equals_numpy_reference(geom):
    k, s, p = geom
    rng = np.random.default_rng(6)
    pool = L.MaxPool2d(k, s, p)
    for dtype in (np.float32, F64):
        x = rng.standard_normal((2, 3, 7, 8)).astype(dtype)
        y = pool.forward(x)
        arg = pool._cache[1]
        dy = rng.standard_normal(y.shape).astype(dtype)
        out = L.maxpool_backward(dy, arg, x.shape, k, s, p)
        ref = L.maxpool_backward_reference(dy, arg, x.shape, k, s, p)
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_array_equal(pool.backward(dy), ref)


# ------------------------------------------------------------------------------------------------
# BatchNorm
# ------------------------------------------------------------------------------------------------

def test_batchnorm2d_train_statistics_and_running_update():
    rng = np.random.default_rng(7)
    bn = L.BatchNorm2d(3, momentum=0.1, eps=1e-5, dtype=F64)
    x = rng.standard_normal((4, 3, 5, 6)) * np.array([1.0, 2.0, 0.5])[:, None, None] + 3.0
    y = bn.forward(x)
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))                       # biased
    np.testing.assert_allclose(y, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-10)
    m = 4 * 5 * 6
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var * m / (m - 1), rtol=1e-12)
    bn.forward(x)
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean + 0.9 * 0.1 * mean, rtol=1e-12)


def test_batchnorm_eval_uses_running_statistics():
    rng = np.random.default_rng(8)
    bn = L.BatchNorm2d(2, dtype=F64)
    bn.running_mean[...] = [1.0, -2.0]
    bn.running_var[...] = [4.0, 0.25]
    bn.weight.value[...] = [2.0, 3.0]
    bn.bias.value[...] = [0.5, -1.0]
    bn.eval()
    x = rng.standard_normal((3, 2, 4, 4))
    before = (bn.running_mean.copy(), bn.running_var.copy())
    y = bn.forward(x)
    rm, rv = bn.running_mean[:, None, None], bn.running_var[:, None, None]
    gamma, beta = bn.weight.value[:, None, None], bn.bias.value[:, None, None]
    ref = (x - rm) / np.sqrt(rv + 1e-5) * gamma + beta
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    np.testing.assert_array_equal(bn.running_mean, before[0])
    np.testing.assert_array_equal(bn.running_var, before[1])


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_finite_differences(training):
    rng = np.random.default_rng(9)
    bn2 = L.BatchNorm2d(3, dtype=F64)
    bn1 = L.BatchNorm1d(4, dtype=F64)
    for bn in (bn2, bn1):
        bn.weight.value[...] = rng.uniform(0.5, 2.0, bn.channels)
        bn.bias.value[...] = rng.standard_normal(bn.channels)
        bn.running_mean[...] = rng.standard_normal(bn.channels)
        bn.running_var[...] = rng.uniform(0.5, 2.0, bn.channels)
        bn.train(training)
    gradcheck(bn2, rng.standard_normal((3, 3, 4, 3)))
    gradcheck(bn1, rng.standard_normal((5, 4)))


def test_batchnorm1d_matches_2d_and_needs_more_than_one_value():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((6, 4))
    y1 = L.BatchNorm1d(4, dtype=F64).forward(x)
    y2 = L.BatchNorm2d(4, dtype=F64).forward(x[:, :, None, None])
    np.testing.assert_allclose(y1, y2[:, :, 0, 0], rtol=1e-12)
    with pytest.raises(ValueError):
        L.BatchNorm1d(4).forward(x[:1])


def test_batchnorm_params_have_no_weight_decay():
    bn = L.BatchNorm2d(5)
    assert [p.name for p in bn.params()] == ["weight", "bias"]
    assert all(not p.decay for p in bn.params())
    assert (bn.weight.value == 1).all() and (bn.bias.value == 0).all()
    assert bn.weight.value.dtype == np.float32


# ------------------------------------------------------------------------------------------------
# activations, pooling, reshaping, dropout
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cap", [None, 6.0])
def test_relu_forward_and_finite_differences(cap):
    rng = np.random.default_rng(11)
    x = away_from(rng.standard_normal((2, 3, 4, 4)) * 5, [0.0, 6.0])
    relu = L.ReLU(cap)
    ref = np.maximum(x, 0) if cap is None else np.clip(x, 0, cap)
    np.testing.assert_array_equal(relu.forward(x), ref)
    gradcheck(relu, x)


@pytest.mark.parametrize("dtype", [np.float32, F64])
@pytest.mark.parametrize("cap", [None, 6.0])
def test_relu_backward_exact_semantics(cap, dtype):
    """dx = dy where 0 < y < cap else +0.0, bit for bit (NaN in dy passes only where the mask
    is on; NaN in y, y == 0 and y == cap give +0.0), whole-tensor and threaded."""
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((3, 5, 7, 9)) * 5).astype(dtype)
    x.reshape(-1)[::13] = 0.0
    x.reshape(-1)[::17] = 6.0
    x.reshape(-1)[::19] = np.nan
    dy = rng.standard_normal(x.shape).astype(dtype)
    dy.reshape(-1)[::7] = np.nan
    dy.reshape(-1)[::11] = -0.0
    relu = L.ReLU(cap)
    y = relu.forward(x)
    hi = np.inf if cap is None else cap
    with np.errstate(invalid="ignore"):
        ref = np.where((y > 0) & (y < hi), dy, dtype(0))
    dx = relu.backward(dy)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx.view(np.uint8), ref.view(np.uint8))


@pytest.mark.skipif(not K._blas.ok, reason="BLAS thread count not controllable: passes are serial")
def test_small_pass_runs_with_single_threaded_blas(monkeypatch):
    """A pass below the split threshold runs once, with BLAS at one thread (a threaded BLAS
    call would leave OpenBLAS's pool spinning), and the thread count is restored."""
    monkeypatch.setattr(K, "_WORKERS", 2)
    before = K._blas._get()
    seen = []
    out = K._run_split(lambda lo, hi: seen.append((lo, hi, K._blas._get())) or hi - lo, 10, 100)
    assert out == [10] and seen == [(0, 10, 1)]
    assert K._blas._get() == before


@pytest.mark.parametrize("geom", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 3, 1)])
def test_maxpool_forward_naive_and_finite_differences(geom):
    k, s, p = geom
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 2, 7, 6))
    pool = L.MaxPool2d(k, s, p)
    y = pool.forward(x)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    Ho, Wo = (7 + 2 * p - k) // s + 1, (6 + 2 * p - k) // s + 1
    assert y.shape == (2, 2, Ho, Wo)
    for ho in range(Ho):
        for wo in range(Wo):
            np.testing.assert_array_equal(
                y[:, :, ho, wo], xp[:, :, ho * s:ho * s + k, wo * s:wo * s + k].max(axis=(2, 3)))
    gradcheck(pool, x)


def maxpool_reference(x, k, s, p):
    """NumPy max pooling: (max, i*k + j of the first maximum) per window, padding -inf."""
    N, C, H, W = x.shape
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    win = lambda t: xp[:, :, t // k:t // k + s * (Ho - 1) + 1:s, t % k:t % k + s * (Wo - 1) + 1:s]
    best, arg = win(0).copy(), np.zeros((N, C, Ho, Wo), dtype=np.int32)
    for t in range(1, k * k):
        better = win(t) > best
        np.copyto(best, win(t), where=better)
        np.copyto(arg, t, where=better)
    return best, arg


@pytest.mark.parametrize("geom", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (3, 3, 0)])
def test_maxpool_kernel_equals_numpy_reference_with_ties_and_nans(monkeypatch, geom):
    """Values, first-maximum indices (ties: the first tap wins) and NaN handling of the
    numba kernel, cut into the pieces of 3 workers, against the NumPy reference."""
    k, s, p = geom
    monkeypatch.setattr(K, "_WORKERS", 3)
    monkeypatch.setattr(K, "_PARALLEL_ELEMENTS", 1)
    rng = np.random.default_rng(13)
    x = rng.integers(-2, 3, (3, 4, 9, 8)).astype(np.float32)       # many ties
    x[0, 0, 0, 0] = x[1, 2, 4, 4] = np.nan
    pool = L.MaxPool2d(k, s, p)
    y = pool.forward(x)
    ref, arg = maxpool_reference(x, k, s, p)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(pool._cache[1], arg)


def test_maxpool_padding_is_minus_infinity():
    x = -np.ones((1, 1, 2, 2)) * 5.0
    y = L.MaxPool2d(3, 1, 1).forward(x)
    np.testing.assert_array_equal(y, -5.0 * np.ones((1, 1, 2, 2)))


@pytest.mark.parametrize("geom", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_avgpool_count_include_pad_and_finite_differences(geom):
    k, s, p = geom
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 2, 6, 7))
    pool = L.AvgPool2d(k, s, p)
    y = pool.forward(x)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    for ho in range(y.shape[2]):
        for wo in range(y.shape[3]):
            win = xp[:, :, ho * s:ho * s + k, wo * s:wo * s + k]
            np.testing.assert_allclose(y[:, :, ho, wo], win.sum(axis=(2, 3)) / (k * k), rtol=1e-12)
    gradcheck(pool, x)


def naive_adaptive(x, oh, ow):
    N, C, H, W = x.shape
    y = np.zeros((N, C, oh, ow))
    for i in range(oh):
        h0, h1 = (i * H) // oh, -((-(i + 1) * H) // oh)
        for j in range(ow):
            w0, w1 = (j * W) // ow, -((-(j + 1) * W) // ow)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


@pytest.mark.parametrize("shapes", [((1, 1), (7, 7)), ((2, 3), (7, 7)), ((5, 7), (3, 2)),
                                    ((6, 6), (1, 1)), ((4, 4), (4, 4)), ((5, 3), (2, 4))])
def test_adaptive_avgpool_bins_and_finite_differences(shapes):
    (H, W), out = shapes
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, H, W))
    pool = L.AdaptiveAvgPool2d(out)
    y = pool.forward(x)
    np.testing.assert_allclose(y, naive_adaptive(x, *out), rtol=1e-12, atol=1e-15)
    if (H, W) == (1, 1):   # VGG at 32x32: 1x1 -> 7x7 is pure replication
        np.testing.assert_array_equal(y, np.broadcast_to(x, y.shape))
    gradcheck(pool, x)


def test_flatten_roundtrip():
    x = np.arange(2 * 3 * 2 * 2, dtype=F64).reshape(2, 3, 2, 2)
    f = L.Flatten()
    y = f.forward(x)
    np.testing.assert_array_equal(y, x.reshape(2, 12))
    np.testing.assert_array_equal(f.backward(y), x)


def test_dropout_eval_identity_and_train_scaling():
    x = np.random.default_rng(15).standard_normal((200, 500)).astype(np.float32)
    d = L.Dropout(0.3, np.random.default_rng(0))
    d.eval()
    np.testing.assert_array_equal(d.forward(x), x)
    np.testing.assert_array_equal(d.backward(x), x)
    d.train()
    y = d.forward(x)
    assert y.dtype == np.float32
    kept = y != 0
    assert kept.mean() == pytest.approx(0.7, abs=0.01)
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-6)
    g = d.backward(np.ones_like(x))
    np.testing.assert_allclose(g, kept / 0.7, rtol=1e-6)
    assert L.Dropout(0.0, np.random.default_rng(0)).forward(x) is x


def test_dropout_finite_differences_with_fixed_mask():
    d = L.Dropout(0.4, None)
    reset = lambda: setattr(d, "rng", np.random.default_rng(5))  # noqa: E731
    gradcheck(d, np.random.default_rng(16).standard_normal((3, 7)), before_forward=reset)


# ------------------------------------------------------------------------------------------------
# loss
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_softmax_cross_entropy_value_and_gradient(smoothing):
    rng = np.random.default_rng(17)
    logits = rng.standard_normal((5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2])
    loss, grad = L.softmax_cross_entropy(logits, labels, smoothing)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(5), labels].mean()
    smooth = -logp.mean(axis=1).mean()              # torch: (1-eps)*nll + eps*mean_k(-logp_k)
    assert loss == pytest.approx((1 - smoothing) * nll + smoothing * smooth, rel=1e-12)
    num = np.zeros_like(logits)
    for idx in np.ndindex(*logits.shape):
        z = logits.copy()
        z[idx] += 1e-6
        lp = L.softmax_cross_entropy(z, labels, smoothing)[0]
        z[idx] -= 2e-6
        lm = L.softmax_cross_entropy(z, labels, smoothing)[0]
        num[idx] = (lp - lm) / 2e-6
    assert rel_err(grad, num) < 1e-6
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-12)


def test_softmax_cross_entropy_is_stable_and_keeps_dtype():
    logits = np.array([[1000.0, 0.0], [0.0, -1000.0]], dtype=np.float32)
    loss, grad = L.softmax_cross_entropy(logits, np.array([0, 0]))
    assert loss == pytest.approx(0.0, abs=1e-6) and np.isfinite(grad).all()
    assert grad.dtype == np.float32
    with pytest.raises(ValueError):
        L.softmax_cross_entropy(logits, np.array([0, 2]))


# ------------------------------------------------------------------------------------------------
# sparsity hooks
# ------------------------------------------------------------------------------------------------

def sparsify(x, keep=0.3):
    thr = np.quantile(np.abs(x), 1 - keep)
    return np.where(np.abs(x) >= thr, x, 0.0)


def hook_layers(kind):
    rng = np.random.default_rng(18)
    if kind == "conv":
        spec = conv_spec(4, 6, 3, 2, 1, g=2, hw=(7, 6), bias=True)
        make = lambda: L.Conv2d(spec, np.random.default_rng(0), dtype=F64)  # noqa: E731
        x = rng.standard_normal((3, 4, 7, 6))
    else:
        spec = fc_spec(7, 5)
        make = lambda: L.Linear(spec, np.random.default_rng(0), dtype=F64)  # noqa: E731
        x = rng.standard_normal((3, 7))
    return make, x, rng


def run(layer, x, dy):
    layer.zero_grad()
    y = layer.forward(x)
    dx = layer.backward(dy)
    return y, dx, layer.weight.grad.copy()


@pytest.mark.parametrize("kind", ["conv", "fc"])
def test_forward_weight_is_used_in_forward_and_by_default_for_dx(kind):
    make, x, rng = hook_layers(kind)
    hooked, plain = make(), make()
    fw = sparsify(hooked.weight.value)
    hooked.forward_weight = fw
    plain.weight.value[...] = fw
    y0 = plain.forward(x)
    dy = rng.standard_normal(y0.shape)
    y, dx, dw = run(hooked, x, dy)
    yr, dxr, dwr = run(plain, x, dy)
    np.testing.assert_allclose(y, yr, rtol=1e-12)
    np.testing.assert_allclose(dx, dxr, rtol=1e-12)     # dX with the weight the forward used
    np.testing.assert_allclose(dw, dwr, rtol=1e-12)
    assert not np.allclose(y, make().forward(x))        # and not the dense weight


@pytest.mark.parametrize("kind", ["conv", "fc"])
def test_backward_weight_is_used_for_dx_only(kind):
    make, x, rng = hook_layers(kind)
    hooked, plain, with_bw = make(), make(), make()
    bw = sparsify(hooked.weight.value, 0.5)
    hooked.backward_weight = bw
    with_bw.weight.value[...] = bw
    dy = rng.standard_normal(plain.forward(x).shape)
    y, dx, dw = run(hooked, x, dy)
    yr, dxr, dwr = run(plain, x, dy)
    _, dx_bw, _ = run(with_bw, x, dy)
    np.testing.assert_allclose(y, yr, rtol=1e-12)        # forward: the dense weight
    np.testing.assert_allclose(dx, dx_bw, rtol=1e-12)    # dX: the backward weight
    assert not np.allclose(dx, dxr)
    np.testing.assert_allclose(dw, dwr, rtol=1e-12)      # dW does not depend on the weight


@pytest.mark.parametrize("kind", ["conv", "fc"])
def test_save_input_is_used_for_dw(kind):
    make, x, rng = hook_layers(kind)
    hooked, dense, on_sparse = make(), make(), make()
    xs = sparsify(x)
    calls = []
    hooked.save_input = lambda t: calls.append(t.shape) or sparsify(t)
    dy = rng.standard_normal(dense.forward(x).shape)
    y, dx, dw = run(hooked, x, dy)
    yd, dxd, dwd = run(dense, x, dy)
    _, _, dws = run(on_sparse, xs, dy)
    assert calls == [x.shape]
    np.testing.assert_allclose(y, yd, rtol=1e-12)        # forward uses the dense input
    np.testing.assert_allclose(dx, dxd, rtol=1e-12)      # dX does not use the input
    np.testing.assert_allclose(dw, dws, rtol=1e-12)      # dW from the sparse saved input
    assert not np.allclose(dw, dwd)
    np.testing.assert_allclose(hooked.bias.grad, dy.sum(axis=(0,) + tuple(range(2, dy.ndim))))
    # eval mode: nothing is saved sparsely
    calls.clear()
    hooked.eval()
    hooked.forward(x)
    assert calls == []


@pytest.mark.parametrize("kind", ["conv", "fc"])
def test_grad_output_hook_applies_to_dx_dw_and_bias(kind):
    make, x, rng = hook_layers(kind)
    hooked, plain = make(), make()
    hooked.grad_output_hook = lambda g: sparsify(g, 0.2)
    dy = rng.standard_normal(plain.forward(x).shape)
    _, dx, dw = run(hooked, x, dy)
    _, dxr, dwr = run(plain, x, sparsify(dy, 0.2))
    np.testing.assert_allclose(dx, dxr, rtol=1e-12)
    np.testing.assert_allclose(dw, dwr, rtol=1e-12)
    np.testing.assert_allclose(hooked.bias.grad, plain.bias.grad, rtol=1e-12)


@pytest.mark.parametrize("kind", ["conv", "fc"])
def test_weight_gradient_is_dense_and_accumulates(kind):
    make, x, rng = hook_layers(kind)
    lay = make()
    lay.forward_weight = sparsify(lay.weight.value, 0.2)
    lay.save_input = sparsify
    dy = rng.standard_normal(lay.forward(x).shape)
    lay.backward(dy)
    g1 = lay.weight.grad.copy()
    assert (g1[lay.forward_weight == 0] != 0).any()      # pruned weights get gradients too
    lay.forward(x)
    lay.backward(dy)
    np.testing.assert_allclose(lay.weight.grad, 2 * g1, rtol=1e-12)


@pytest.mark.parametrize("kind", ["conv", "fc"])
def test_record_keeps_copies_of_the_four_tensors(kind):
    make, x, rng = hook_layers(kind)
    lay = make()
    fw = sparsify(lay.weight.value, 0.5)
    lay.forward_weight = fw
    lay.save_input = sparsify
    lay.grad_output_hook = lambda g: 2 * g
    lay.record = True
    y = lay.forward(x)
    rec = lay.recorded
    assert set(rec) == {"weight", "input", "input_saved"}
    dy = rng.standard_normal(y.shape)
    lay.backward(dy)
    assert set(rec) == {"weight", "input", "input_saved", "grad_output"}
    np.testing.assert_array_equal(rec["weight"], fw)
    np.testing.assert_array_equal(rec["input"], x)
    np.testing.assert_array_equal(rec["input_saved"], sparsify(x))
    np.testing.assert_array_equal(rec["grad_output"], 2 * dy)
    assert rec["weight"] is not fw and rec["input"] is not x
    x[...] = 0                                            # copies, not views of live tensors
    fw[...] = 0
    assert rec["input"].any() and rec["weight"].any()
    lay.record = False
    lay.recorded = None
    lay.forward(rng.standard_normal(x.shape))
    assert lay.recorded is None
    assert lay.spec.name in ("c", "fc")


def test_hook_shape_errors():
    make, x, _ = hook_layers("conv")
    lay = make()
    lay.forward_weight = np.zeros((1, 2))
    with pytest.raises(ValueError):
        lay.forward(x)
    lay.forward_weight = None
    lay.save_input = lambda t: t[:1]
    with pytest.raises(ValueError):
        lay.forward(x)
    with pytest.raises(RuntimeError):
        make().backward(np.zeros((3, 6, 4, 3)))


# ------------------------------------------------------------------------------------------------
# containers and the module tree
# ------------------------------------------------------------------------------------------------

def small_net(seed=0, dtype=F64):
    rng = np.random.default_rng(seed)
    c = lambda *a, **k: L.Conv2d(conv_spec(*a, **k), rng, dtype=dtype)  # noqa: E731
    bn = lambda ch: L.BatchNorm2d(ch, dtype=dtype)  # noqa: E731
    block = L.Residual(L.Sequential(c(4, 4, 3, 1, 1, hw=(6, 6)), bn(4), L.ReLU(),
                                    c(4, 4, 3, 1, 1, hw=(6, 6)), bn(4)))
    down = L.Residual(L.Sequential(c(4, 6, 3, 2, 1, hw=(6, 6)), bn(6)),
                      L.Sequential(c(4, 6, 1, 2, 0, hw=(6, 6)), bn(6)))
    dense = L.DenseConcat(L.Sequential(bn(6), L.ReLU(), c(6, 2, 3, 1, 1, hw=(3, 3))))
    return L.Sequential(
        c(3, 4, 3, 1, 1, hw=(6, 6), bias=True), bn(4), L.ReLU(),
        block, L.ReLU(), down, L.ReLU(6.0), dense,
        L.MaxPool2d(2, 1, 1), L.AvgPool2d(2, 2), L.AdaptiveAvgPool2d((1, 1)), L.Flatten(),
        L.Linear(fc_spec(8, 3), rng, dtype=dtype), L.BatchNorm1d(3, dtype=dtype))


def test_network_finite_differences_train_and_eval():
    net = small_net()
    x = np.random.default_rng(19).standard_normal((3, 3, 6, 6))
    gradcheck(net, x, tol=1e-5)
    net.eval()
    gradcheck(net, x, tol=1e-5)


def test_residual_and_denseconcat_semantics():
    rng = np.random.default_rng(20)
    x = rng.standard_normal((2, 3, 4, 4))
    relu = L.ReLU()
    r = L.Residual(L.Sequential(L.ReLU()))
    np.testing.assert_allclose(r.forward(x), relu.forward(x) + x)
    d = L.DenseConcat(L.Sequential(L.ReLU()))
    y = d.forward(x)
    np.testing.assert_array_equal(y, np.concatenate([x, np.maximum(x, 0)], axis=1))
    gradcheck(r, away_from(x, [0.0]))
    gradcheck(d, away_from(x, [0.0]))


def test_module_tree_names_modes_and_grads():
    net = small_net()
    mods = list(net.modules())
    assert mods[0] is net and mods[1] is net[0]
    assert len(mods) == len(set(map(id, mods)))
    names = [p.name for p in net.params()]
    assert len(names) == len(set(names))
    assert names[:3] == ["0.weight", "0.bias", "1.weight"]
    assert "3.main.0.weight" in names and "5.shortcut.0.weight" in names
    assert "7.branch.2.weight" in names
    assert [n for n, _ in net.named_params()] == names    # Param.name is the state_dict key
    assert net.children() == list(net)
    assert net.eval() is net and not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.forward(np.ones((2, 3, 6, 6)))
    net.backward(np.ones((2, 3)))
    assert any(p.grad.any() for p in net.params())
    net.zero_grad()
    assert not any(p.grad.any() for p in net.params())
    # wrapping a built model in a new parent renames its parameters consistently
    outer = L.Sequential(L.ReLU(), net)
    assert outer.params()[0].name == "1.0.weight"
    keys = [k for k in outer.state_dict() if "running" not in k]
    assert [p.name for p in outer.params()] == keys


def test_state_dict_round_trip_through_npz(tmp_path):
    net = small_net(seed=0)
    x = np.random.default_rng(21).standard_normal((4, 3, 6, 6))
    net.forward(x)                           # move the BN running statistics
    net.backward(np.ones((4, 3)))
    for p in net.params():
        p.value -= 0.1 * p.grad
    sd = net.state_dict()
    assert "1.running_mean" in sd and "13.running_var" in sd
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    np.savez(tmp_path / "ckpt.npz", **sd)
    other = small_net(seed=1)
    assert list(other.state_dict()) == list(sd)             # keys stable across instances
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as data:
        other.load_state_dict(data)
    net.eval()
    other.eval()
    np.testing.assert_array_equal(other.forward(x), net.forward(x))
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    sd["0.weight"] = sd["0.weight"] + 1                    # copies: the model is unchanged
    assert not np.array_equal(net.state_dict()["0.weight"], sd["0.weight"])
    with pytest.raises(KeyError):
        other.load_state_dict({k: v for k, v in sd.items() if k != "0.bias"})
    with pytest.raises(ValueError):
        other.load_state_dict({**sd, "0.bias": np.zeros(7)})


def test_float32_network_step_runs_and_keeps_dtype():
    net = small_net(dtype=np.float32)
    x = np.random.default_rng(22).standard_normal((4, 3, 6, 6)).astype(np.float32)
    logits = net.forward(x)
    assert logits.dtype == np.float32
    loss, g = L.softmax_cross_entropy(logits, np.array([0, 1, 2, 0]), 0.1)
    dx = net.backward(g)
    assert dx.dtype == np.float32 and np.isfinite(loss)
    assert all(p.grad.dtype == np.float32 and np.isfinite(p.grad).all() for p in net.params())


@pytest.mark.parametrize("geometry", [
    dict(k=3, s=1, p=1), dict(k=3, s=2, p=1), dict(k=1, s=1, p=0), dict(k=1, s=2, p=0),
    dict(k=3, s=1, p=0, d=2), dict(k=3, s=1, p=1, g=2)])
@pytest.mark.parametrize("scope", ["NCHW", "CHW", "HW"])
def test_thresholded_saved_input_is_masked_as_it_is_unfolded(geometry, scope):
    """A `Thresholded` saved input gives bit for bit the dW of its masked copy, for every
    unfold path (padded, strided, pointwise one or many samples, dilated, grouped), and is
    never copied masked in the forward pass."""
    from workloads.topk import Thresholded, apply_threshold, topk_threshold

    g = geometry.pop("g", 1)
    spec = conv_spec(4, 6, g=g, hw=(7, 6), **geometry)
    rng = np.random.default_rng(3)
    for batch in (1, 5):
        x = np.maximum(rng.standard_normal((batch, 4, 7, 6)), 0).astype(np.float32)
        thr = topk_threshold(x, 0.7, scope)
        thresholded, copied = (L.Conv2d(spec, np.random.default_rng(0)) for _ in range(2))
        thresholded.save_input = lambda t: Thresholded(t, thr, 0)
        copied.save_input = lambda t: apply_threshold(t, thr)
        dy = rng.standard_normal(thresholded.forward(x).shape).astype(np.float32)
        assert isinstance(thresholded._cache[1], Thresholded)
        copied.forward(x)
        for lay in (thresholded, copied):
            lay.zero_grad()
        np.testing.assert_array_equal(thresholded.backward(dy), copied.backward(dy))
        np.testing.assert_array_equal(thresholded.weight.grad, copied.weight.grad)
        assert not np.array_equal(copied.weight.grad, dense_dw(spec, x, dy))


def dense_dw(spec, x, dy):
    lay = L.Conv2d(spec, np.random.default_rng(0))
    lay.forward(x)
    lay.zero_grad()
    lay.backward(dy)
    return lay.weight.grad


def test_thresholded_input_the_unfold_cannot_mask_is_masked_up_front():
    """float64 layers and thresholds that vary within a channel map take a masked copy."""
    from workloads.topk import Thresholded, apply_threshold

    spec = conv_spec(4, 6, 3, 1, 1, hw=(7, 6))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    per_pixel = np.abs(rng.standard_normal((1, 1, 7, 6))).astype(np.float32)
    lay = L.Conv2d(spec, np.random.default_rng(0))
    lay.save_input = lambda t: Thresholded(t, per_pixel, 0)
    lay.record = True
    lay.forward(x)
    saved = lay._cache[1]
    assert isinstance(saved, np.ndarray)
    np.testing.assert_array_equal(saved, apply_threshold(x, per_pixel))
    np.testing.assert_array_equal(lay.recorded["input_saved"], saved)


@pytest.mark.parametrize("shape", [(1, 37, 21, 3, 3), (2, 6, 4, 3, 3), (1, 5, 7, 1, 1), (4, 3, 2, 5, 5)])
def test_flip_transpose_kernel_equals_numpy(shape):
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = np.empty((shape[0], shape[2], shape[1], shape[3], shape[4]), np.float32)
    K._flip_transpose_kernel(w, out)
    np.testing.assert_array_equal(out, w[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4))


def test_add_equals_numpy(monkeypatch):
    monkeypatch.setattr(K, "_WORKERS", 3)             # the split path, also under CI
    monkeypatch.setattr(K, "_PARALLEL_ELEMENTS", 1)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 50, 7)).astype(np.float32), rng.standard_normal((2, 3, 50, 7)).astype(np.float32)
    np.testing.assert_array_equal(K.add(a, b), a + b)          # numba, split in 3
    monkeypatch.setattr(K, "_PARALLEL_ELEMENTS", 1 << 30)
    np.testing.assert_array_equal(K.add(a[0], b[0]), a[0] + b[0])  # numba, one call
