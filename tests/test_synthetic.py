"""Synthetic SWAT-style workloads and the Top-K sparsifier."""

import numpy as np
import pytest

from workloads.networks import build_network
from workloads.synthetic import input_kinds, synthetic_layers, synthetic_trace
from workloads.topk import keep_count, topk_sparsify, topk_threshold


def test_topk_keeps_exactly_the_largest_magnitudes():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    for s in (0.0, 0.5, 0.8, 0.9, 0.999):
        y = topk_sparsify(x, s)
        kept = np.flatnonzero(y)
        assert kept.size == keep_count(x.size, s) == 1000 - round(1000 * s)
        assert np.all(y[kept] == x[kept])
        # every kept magnitude is at least every dropped one
        dropped = np.setdiff1d(np.arange(1000), kept)
        if dropped.size and kept.size:
            assert np.abs(x[kept]).min() >= np.abs(x[dropped]).max()
    assert topk_threshold(x, 1.0) == np.inf and not topk_sparsify(x, 1.0).any()
    with pytest.raises(ValueError, match="sparsity"):
        topk_sparsify(x, 1.5)


def test_synthetic_trace_sparsity_and_dense_first_conv():
    net = build_network("resnet18-cifar", image_size=16)
    trace = synthetic_trace(net, 0.8, batch=2, seed=3)
    kinds = input_kinds(net)
    assert [l.spec for l in trace.layers] == list(net.layers)
    for layer in trace.layers:
        nz = np.count_nonzero(layer.weight)
        if layer.spec.name == net.first_conv:
            assert nz == layer.weight.size  # SWAT-U keeps the first conv dense
        else:
            assert nz == keep_count(layer.weight.size, 0.8)
        assert layer.input.shape == layer.spec.input_shape(2)
        zeros = 1 - np.count_nonzero(layer.input) / layer.input.size
        kind = kinds[layer.spec.name]
        if kind == "relu" and layer.input.size > 2000:
            assert 0.45 < zeros < 0.55  # ReLU-like
        elif kind != "relu":
            assert zeros == 0  # the image, a pooling or a linear op: no zeros
        if kind == "pooled":
            assert layer.input.min() >= 0
        # saved activations: Top-K to the layer's sparsity (dense layers: the input itself)
        if layer.spec.name == net.first_conv:
            assert np.array_equal(layer.input_saved, layer.input)
        else:
            kept = np.flatnonzero(layer.input_saved)
            assert kept.size == min(keep_count(layer.input.size, 0.8), np.count_nonzero(layer.input))
            assert np.array_equal(layer.input_saved.ravel()[kept], layer.input.ravel()[kept])
        assert layer.grad_output.shape == layer.spec.output_shape(2)
        assert np.count_nonzero(layer.grad_output) == layer.grad_output.size


def test_he_scale_and_determinism():
    net = build_network("resnet18-cifar", image_size=8)
    a = list(synthetic_layers(net, 0.0, seed=1))
    b = list(synthetic_layers(net, 0.0, seed=1))
    c = list(synthetic_layers(net, 0.0, seed=2))
    assert all(np.array_equal(x.weight, y.weight) and np.array_equal(x.input, y.input) for x, y in zip(a, b))
    assert not np.array_equal(a[3].weight, c[3].weight)
    w = a[5].weight
    fan_in = w.shape[1] * w.shape[2] * w.shape[3]
    assert abs(w.std() - np.sqrt(2 / fan_in)) < 0.05 * np.sqrt(2 / fan_in)


def test_sparsities_prune_the_same_dense_weights():
    # every sparsity of a run sparsifies the same dense tensor: the 90% support is inside
    # the 80% support, and the kept values are the dense ones
    net = build_network("resnet18-cifar", image_size=8)
    dense = list(synthetic_layers(net, 0.0, seed=0, dense_layers=[]))
    s80 = list(synthetic_layers(net, 0.8, seed=0, dense_layers=[]))
    s90 = list(synthetic_layers(net, 0.9, seed=0, dense_layers=[]))
    for d, a, b in zip(dense, s80, s90):
        assert np.all((b.weight != 0) <= (a.weight != 0))
        assert np.array_equal(a.weight[a.weight != 0], d.weight[a.weight != 0])


def test_unknown_dense_layer_is_an_error():
    net = build_network("resnet18-cifar", image_size=8)
    with pytest.raises(ValueError, match="nope"):
        list(synthetic_layers(net, 0.5, dense_layers=["nope"]))


def test_input_kinds_follow_the_graph():
    kinds = input_kinds(build_network("resnet50"))
    assert kinds["conv1"] == "image"
    assert kinds["layer1.0.conv1"] == kinds["layer1.0.downsample.0"] == "pooled"  # after the max-pool
    assert kinds["layer1.0.conv2"] == kinds["layer2.0.downsample.0"] == "relu"
    assert kinds["fc"] == "pooled"
    mb = input_kinds(build_network("mobilenet-v2"))
    # the expansion conv of a block reads the previous block's linear bottleneck
    assert mb["features.2.conv.0.0"] == "linear" and mb["features.2.conv.1.0"] == "relu"
    vgg = input_kinds(build_network("vgg16"))
    assert vgg["classifier.3"] == "relu"  # ReLU then dropout: zeros stay zeros


@pytest.mark.parametrize("scope", ["NCHW", "CHW", "HW"])
def test_radix_select_equals_np_partition_bit_for_bit(scope):
    from workloads.topk import apply_threshold_count, topk_threshold_reference

    rng = np.random.default_rng(5)
    for shape in [(7, 5, 6, 4), (3, 11), (2, 3, 1, 1), (64, 16, 8, 8)]:
        x = rng.standard_normal(shape).astype(np.float32)
        x[rng.random(shape) < 0.3] = 0            # ReLU-like zeros
        x[..., 0] = np.float32(0.5)               # ties
        x.flat[::7] *= np.float32(1e-30)          # denormal-ish magnitudes
        for s in (0.0, 0.1, 0.5, 0.8, 0.9, 0.999, 1.0):
            fast = topk_threshold(x, s, scope)
            ref = topk_threshold_reference(x, s, scope)
            assert fast.dtype == ref.dtype and np.array_equal(fast, ref), (shape, s)
            out, kept = apply_threshold_count(x, fast)
            want = np.where(np.abs(x) >= ref, x, np.float32(0))
            assert np.array_equal(out, want) and kept == np.count_nonzero(want)
    x64 = rng.standard_normal((4, 9))  # float64 takes the reference path
    assert np.array_equal(topk_threshold(x64, 0.5), topk_threshold_reference(x64, 0.5))



def test_parallel_radix_select_and_mask_equal_the_reference(monkeypatch):
    import workloads.kernels as kernels
    from workloads.topk import apply_threshold_count, topk_threshold_reference

    monkeypatch.setattr(kernels, "_WORKERS", 3)           # force the split paths, also
    monkeypatch.setattr(kernels, "_PARALLEL_ELEMENTS", 1)  # under CI's single thread
    rng = np.random.default_rng(11)
    x = np.maximum(rng.standard_normal((9, 8, 64, 64)).astype(np.float32), 0)  # 3 chunks
    for s in (0.5, 0.8, 0.97):
        fast, ref = topk_threshold(x, s), topk_threshold_reference(x, s)
        assert np.array_equal(fast, ref)
        out, kept = apply_threshold_count(x, fast)
        want = np.where(x >= ref, x, np.float32(0))
        assert np.array_equal(out, want) and kept == np.count_nonzero(want)


def test_bracketed_selection_equals_np_partition_through_drift_and_misses(monkeypatch):
    """TopKSelector answers from one pass around the last threshold when it can and falls
    back to the radix select when the tensor moved too far; either way the threshold is
    np.partition's, bit for bit, and the kept count is exact."""
    import workloads.kernels as kernels
    from workloads.topk import TopKSelector, apply_threshold_count, topk_threshold_reference

    import workloads.topk as topk

    monkeypatch.setattr(kernels, "_WORKERS", 3)            # the split path (3 chunks per
    monkeypatch.setattr(topk, "_CHUNK", 1 << 12)           # pass), also under CI
    monkeypatch.setattr(topk, "_PARALLEL", 1)
    rng = np.random.default_rng(8)
    sel = TopKSelector()
    base = np.maximum(rng.standard_normal((4, 8, 96, 96)), 0).astype(np.float32)
    base[0, 0, 0, :40] = np.float32(1.25)                  # ties that may sit at the threshold
    # small drifts (bracketed), a jump (missed: radix), a tensor of zeros and NaNs
    scales = [1.0, 1.0005, 1.002, 0.999, 1.5, 1.5, 1.49, 0.2, 0.2]
    for i, scale in enumerate(scales):
        x = (base * np.float32(scale)).astype(np.float32)
        x.flat[rng.integers(0, x.size, 50)] *= np.float32(1.01)
        if i == len(scales) - 1:
            x.flat[:7] = np.nan
        for s in (0.8, 0.9):
            thr, kept = sel.threshold(("x", s), x, s)
            ref = topk_threshold_reference(x, s)
            assert thr.dtype == ref.dtype and thr.shape == ref.shape
            assert np.array_equal(thr, ref), (i, s)
            assert kept == apply_threshold_count(x, thr)[1]
            # the fused select-and-mask (the weights' path) gives the same copy
            out, thr2, kept2 = sel.sparsify(("w", s), x, s)
            want = apply_threshold_count(x, ref)[0]      # (keeps NaNs, like the fast mask)
            assert np.array_equal(thr2, ref) and kept2 == kept
            assert np.array_equal(out, want, equal_nan=True), (i, s)
    assert sel.bracketed >= 6 and sel.searched >= 6         # both paths were taken
    # scopes with one threshold per group, float64 and all-kept tensors go by the radix path
    x = rng.standard_normal((3, 5, 6)).astype(np.float32)
    for s, scope in ((0.5, "CHW"), (0.0, "NCHW"), (1.0, "NCHW")):
        for _ in range(2):
            thr, kept = sel.threshold(("y", scope, s), x, s, scope)
            assert np.array_equal(thr, topk_threshold_reference(x, s, scope))
            assert kept == apply_threshold_count(x, thr)[1]
    x64 = rng.standard_normal((4, 9))
    for _ in range(2):
        assert np.array_equal(sel.threshold("z", x64, 0.5)[0], topk_threshold_reference(x64, 0.5))


def test_bracket_overflow_falls_back_exactly(monkeypatch):
    """A bracket holding more values than its buffer (a wide bracket on a constant-ish
    tensor) gives up and searches: still exact."""
    from workloads.topk import TopKSelector, apply_threshold_count, topk_threshold_reference

    rng = np.random.default_rng(9)
    x = (1 + 1e-4 * rng.standard_normal(1 << 16)).astype(np.float32)
    sel = TopKSelector()
    sel.threshold("x", x, 0.5)
    sel._last["x"] = (sel._last["x"][0], 0.2)              # everything lies in the bracket
    before = sel.searched
    thr, kept = sel.threshold("x", x, 0.5)
    assert sel.searched == before + 1
    assert np.array_equal(thr, topk_threshold_reference(x, 0.5))
    assert kept == apply_threshold_count(x, thr)[1] >= 1 << 15   # ties at the threshold kept


def test_zero_fraction_and_count_kept():
    from workloads.topk import apply_threshold_count, count_kept, topk_threshold, zero_fraction

    # per-group thresholds count what the mask keeps, NaN included (bit patterns)
    x = np.random.default_rng(3).standard_normal((4, 3, 5, 5)).astype(np.float32)
    x[1, 2, 3, 4] = np.nan
    for scope in ("CHW", "HW"):
        thr = topk_threshold(np.nan_to_num(x), 0.5, scope)
        out, kept = apply_threshold_count(x, thr)
        assert count_kept(x, thr) == kept == np.count_nonzero(out)

    x = np.array([0, -0.0, np.nan, 1, -2, 0, 3, -0.5], np.float32)
    assert zero_fraction(x) == 1 - np.count_nonzero(x) / x.size
    assert zero_fraction(x.astype(np.float64)) == zero_fraction(x)
    assert count_kept(x, np.float32(1.0)) == 4             # NaN, 1, -2, 3 (bit patterns)
    assert count_kept(x[[0, 3, 4]], np.float32(0)) == 2    # zeros are never kept


def test_bracketed_selection_of_odd_sizes():
    """Tensors whose length is not a multiple of the kernel's 64-element blocks."""
    from workloads.topk import TopKSelector, apply_threshold_count, topk_threshold_reference

    rng = np.random.default_rng(12)
    sel = TopKSelector()
    for size in (1, 63, 65, 1155, 4099):
        base = rng.standard_normal(size).astype(np.float32)
        for drift in (1.0, 1.001, 0.999, 1.002):
            x = base * np.float32(drift)
            for s in (0.5, 0.8):
                thr, kept = sel.threshold(("odd", size, s), x, s)
                assert np.array_equal(thr, topk_threshold_reference(x, s)), (size, drift, s)
                assert kept == apply_threshold_count(x, thr)[1]
    assert sel.bracketed > 0


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.8, 0.97, 1.0])
@pytest.mark.parametrize("brackets", [(0.01, 0.1, None), (1e-7, None), (None,)])
def test_patterns_drawn_in_chunks_equal_the_whole_draws(sparsity, brackets):
    # SyntheticLayer draws chunks of samples and finds the Top-K of the saved input
    # through a bracket (redrawn wider when it misses): its zero patterns must be those
    # of the tensors synthetic_layers draws whole, layer by layer
    from workloads.synthetic import SyntheticLayer, input_kinds, synthetic_layers
    net = build_network("resnet18-cifar", image_size=8)
    kinds = input_kinds(net)
    whole = list(synthetic_layers(net, sparsity, batch=5, seed=2))
    tried = []
    for index, (spec, ref) in enumerate(zip(net.layers, whole)):
        lay = SyntheticLayer(spec, index, kinds[spec.name], spec.name == net.first_conv, 5, 2, sparsity,
                             draw_elements=200, brackets=brackets)
        got = lay.samples(0, 5)
        assert np.array_equal(lay.weight, ref.weight)
        for t in ("input", "input_saved", "grad_output"):
            assert np.array_equal(getattr(got, t), getattr(ref, t) != 0), (spec.name, t)
        part = lay.samples(2, 4)
        assert np.array_equal(part.input_saved, ref.input_saved[2:4] != 0)
        tried.append(lay.brackets_tried)
    if brackets[0] == 1e-7 and sparsity in (0.8, 0.97):
        assert max(tried) == 2  # a bracket too narrow to hold the K-th was widened


@pytest.mark.parametrize("sparsity", [0.45, 0.5, 0.55, 0.8, 0.95])
def test_the_first_topk_bracket_holds_and_stays_small(sparsity):
    # the bracket is in ranks, not values: near 50% a ReLU input's threshold sits at the
    # smallest positive values, where a bracket of +-w in value would miss; in ranks it
    # holds about 2w of the elements whatever the distribution
    from simulator.trace import LayerSpec
    from workloads.synthetic import SyntheticLayer, _input
    spec = LayerSpec("c", "conv", 64, 8, 3, 1, 1, 1, 1, (32, 32), (32, 32))
    lay = SyntheticLayer(spec, 1, "relu", False, 6, 0, sparsity, draw_elements=64 * 32 * 32)
    got = lay.samples(0, 6)
    rng = np.random.default_rng([0, 1])
    rng.standard_normal(spec.weight_shape, dtype=np.float32)
    x = _input(rng, spec.input_shape(6), "relu")
    assert np.array_equal(got.input_saved, topk_sparsify(x, sparsity) != 0)
    assert lay.brackets_tried == 1
