"""Functional correctness: every pass's output recomputed from the scheduled buffers equals
an independent NumPy reference (forward, dX and dW from the definition)."""

import numpy as np
import pytest

import simulator.verify as verify_mod
from simulator.config import Architecture
from simulator.frontend import Frontend
from simulator.lowering import lower, reference
from simulator.trace import TraceLayer
from tests.util import layer_spec
from simulator.verify import recompute

GEOMETRIES = [  # cin, cout, k, stride, padding, dilation, groups, hw
    (5, 7, 3, 1, 1, 1, 1, 6),
    (6, 4, 3, 2, 0, 1, 1, 8),     # (i + 2p - d(k-1) - 1) mod s = (8 - 2 - 1) mod 2 = 1
    (4, 6, 3, 3, 2, 1, 1, 9),     # stride 3: (9 + 4 - 2 - 1) mod 3 = 1
    (3, 5, 2, 3, 0, 1, 1, 10),    # stride 3, kernel < stride: phases without taps
    (4, 4, 5, 2, 3, 1, 1, 7),     # padding 3, (7 + 6 - 4 - 1) mod 2 = 0
    (3, 8, 7, 2, 3, 1, 1, 11),    # the ImageNet stem: 7x7/2, padding 3
    (8, 8, 1, 2, 0, 1, 1, 7),     # 1x1 stride-2 downsampling
    (4, 5, 3, 1, 2, 2, 1, 7),     # dilation 2
    (4, 3, 3, 2, 1, 2, 1, 9),     # dilation 2 with stride 2: odd phases get no taps
    (8, 12, 3, 1, 1, 1, 4, 5),    # grouped
    (6, 6, 3, 2, 1, 1, 6, 7),     # depthwise, stride 2
    (20, 3, 2, 1, 0, 1, 1, 4),    # channels span two lane blocks
]
PASSES = ["forward", "input_grad", "weight_grad"]


def random_layer(cin, cout, k, s, p, d, g, hw, batch=2, seed=0, density=0.5, kind="conv"):
    rng = np.random.default_rng(seed)
    spec = layer_spec(cin, cout, k, s, p, d, g, hw, kind)

    def t(shape, keep):
        x = rng.standard_normal(shape).astype(np.float32)
        return np.where(rng.random(shape) < keep, x, 0).astype(np.float32)

    return TraceLayer(spec, weight=t(spec.weight_shape, density),
                      input=np.maximum(t(spec.input_shape(batch), 1.0), 0),
                      input_saved=t(spec.input_shape(batch), density),
                      grad_output=t(spec.output_shape(batch), 1.0))


ARCHS = {
    "T<2,5>/16": Architecture(tiles=2, rows=3, lanes=16, columns=2, frontend=Frontend("T", 2, 5)),
    "L<1,1>/4": Architecture(tiles=2, rows=2, lanes=4, columns=1, frontend=Frontend("L", 1, 1)),
    "L<3,2>/4": Architecture(tiles=1, rows=4, lanes=4, columns=3, frontend=Frontend("L", 3, 2)),
    "none/4": Architecture(tiles=3, rows=2, lanes=4, columns=1, frontend=Frontend("none", 0, 0)),
}


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g)))
@pytest.mark.parametrize("pass_name", PASSES)
def test_scheduled_pass_equals_reference(geometry, pass_name):
    for i, (arch_name, arch) in enumerate(ARCHS.items()):
        for density in (0.15, 1.0):
            layer = random_layer(*geometry, seed=i, density=density)
            operand = ("weights", "activations", "auto")[i % 3]
            lowerings = ("phase", "zero-insert") if pass_name == "input_grad" else ("phase",)
            for how in lowerings:
                lowered = lower(layer, pass_name, arch.lanes, operand, how)
                r = recompute(lowered, arch, reference(layer, pass_name))
                assert r.ok, f"{arch_name} {operand} {how} density {density}: {r.message}"


@pytest.mark.parametrize("pass_name", PASSES)
def test_fc_layers(pass_name):
    layer = random_layer(37, 9, 1, 1, 0, 1, 1, 1, batch=4, kind="fc", seed=2, density=0.3)
    for arch in ARCHS.values():
        for operand in ("weights", "activations"):
            r = recompute(lower(layer, pass_name, arch.lanes, operand), arch, reference(layer, pass_name))
            assert r.ok, r.message


def test_references_are_adjoint():
    # <dY, conv(X, W)> = <dX(dY, W), X> = <dW(dY, X), W>: the three references agree
    # with each other, so none of them can be wrong alone in a way this misses.
    layer = random_layer(4, 6, 3, 2, 1, 2, 2, 9, seed=5)
    layer.input_saved = layer.input
    spec = layer.spec
    y = reference(layer, "forward")          # G, O/g, N*Ho*Wo
    dy = layer.grad_output.transpose(1, 0, 2, 3).reshape(y.shape)
    dx = reference(layer, "input_grad")      # G, C/g, N*H*W
    x = layer.input.transpose(1, 0, 2, 3).reshape(dx.shape)
    dw = reference(layer, "weight_grad").reshape(spec.weight_shape)
    lhs = float((dy * y).sum())
    assert lhs == pytest.approx(float((dx * x).sum()), rel=1e-10)
    assert lhs == pytest.approx(float((dw * layer.weight).sum()), rel=1e-10)


def test_reference_forward_matches_a_naive_loop():
    layer = random_layer(4, 6, 3, 2, 1, 2, 2, 7, seed=9)
    s = layer.spec
    xp = np.pad(layer.input.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((2, 6, *s.out_hw))
    for n in range(2):
        for o in range(6):
            g = o // 3
            for y in range(s.out_hw[0]):
                for x in range(s.out_hw[1]):
                    for c in range(2):
                        for u in range(3):
                            for v in range(3):
                                want[n, o, y, x] += (layer.weight[o, c, u, v]
                                                     * xp[n, g * 2 + c, 2 * y + 2 * u, 2 * x + 2 * v])
    got = reference(layer, "forward").reshape(2, 3, 2, -1).transpose(2, 0, 1, 3).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_reference_weight_grad_matches_finite_differences():
    layer = random_layer(3, 2, 3, 2, 1, 1, 1, 5, seed=3, density=1.0)
    layer.input_saved = layer.input
    dw = reference(layer, "weight_grad").reshape(layer.spec.weight_shape)
    dy = layer.grad_output.astype(np.float64)

    def loss(w):
        probe = TraceLayer(layer.spec, weight=w, input=layer.input)
        y = reference(probe, "forward").reshape(1, 2, 2, 9).transpose(2, 0, 1, 3)  # G,O,N,HW -> N,G,O,HW
        return float((y.reshape(dy.shape) * dy).sum())

    eps, w0 = 1e-3, layer.weight.astype(np.float64)
    for idx in [(0, 0, 0, 0), (1, 2, 1, 2), (0, 1, 2, 1)]:
        wp, wm = w0.copy(), w0.copy()
        wp[idx] += eps
        wm[idx] -= eps
        assert (loss(wp) - loss(wm)) / (2 * eps) == pytest.approx(dw[idx], rel=1e-6, abs=1e-9)


def _tampered(mutate):
    real = verify_mod.time_streams

    def fake(*args, **kwargs):
        timing, record = real(*args, **kwargs)
        mutate(record)
        return timing, record
    return fake


def _small():
    layer = random_layer(8, 4, 3, 1, 1, 1, 1, 5, seed=3, density=0.4)
    return layer, Architecture(tiles=1, rows=4, lanes=4, frontend=Frontend("L", 2, 1))


def test_check_catches_a_dropped_value(monkeypatch):
    def drop(record):
        src = record.sources[0]
        u, r, c, l = np.argwhere(src[:, :, :1, :] >= 0)[0]
        src[u, r, c, l] = -1
    monkeypatch.setattr(verify_mod, "time_streams", _tampered(drop))
    layer, arch = _small()
    r = recompute(lower(layer, "forward", 4), arch, reference(layer, "forward"))
    assert not r.ok and "multiplied 0 times" in r.message


def test_check_catches_an_illegal_connection(monkeypatch):
    def teleport(record):
        record.sources[0][0, 0, 0, 0] = 3 * 4 + 2  # step 3, lane 2: beyond the window
    monkeypatch.setattr(verify_mod, "time_streams", _tampered(teleport))
    layer, arch = _small()
    r = recompute(lower(layer, "weight_grad", 4, "activations"), arch, reference(layer, "weight_grad"))
    assert not r.ok and "illegal connection" in r.message


def test_check_catches_a_wrong_reference():
    layer, arch = _small()
    ref = reference(layer, "input_grad")
    ref[0, 1, 2] += 1e-3 * np.abs(ref).max()
    r = recompute(lower(layer, "input_grad", 4), arch, ref)
    assert not r.ok and "differs" in r.message


FIDELITY_FRONTENDS = {
    "T<2,5>": Frontend("T", 2, 5),
    "T<3,6> dnnsim": Frontend("T", 3, 6, "dnnsim"),
    "custom": Frontend("custom", 2, 3, "spread", ((1, -1), (2, 3), (1, 5))),
}


@pytest.mark.parametrize("scheduler", ["in-order", "dnnsim", "fewest-candidates", "matching",
                                       "nearest-matching"])
@pytest.mark.parametrize("pass_name", PASSES)
def test_every_scheduler_pattern_and_mapping_passes_the_check(scheduler, pass_name):
    from dataclasses import replace
    geometries = [GEOMETRIES[1], GEOMETRIES[5], GEOMETRIES[9], GEOMETRIES[11]]
    for i, geometry in enumerate(geometries):
        for j, (name, fe) in enumerate(FIDELITY_FRONTENDS.items()):
            arch = Architecture(tiles=2, rows=3, lanes=16, columns=2, lockstep=(i + j) % 2 == 0,
                                frontend=replace(fe, scheduler=scheduler))
            layer = random_layer(*geometry, seed=i + 10 * j, density=(0.1, 0.4, 1.0)[(i + j) % 3])
            for first_layer in ("pad", "space-to-depth"):
                for tap_order in ("row-major", "column-major"):
                    lowered = lower(layer, pass_name, arch.lanes, "weights" if j else "auto",
                                    first_layer=first_layer, tap_order=tap_order, first=True)
                    r = recompute(lowered, arch, reference(layer, pass_name))
                    assert r.ok, f"{name} {geometry} {first_layer} {tap_order}: {r.message}"


def test_space_to_depth_rewrites_only_a_strided_first_layer_forward():
    layer = random_layer(3, 8, 7, 2, 3, 1, 1, 11)   # the ImageNet stem
    pad = lower(layer, "forward", 16)
    s2d = lower(layer, "forward", 16, first_layer="space-to-depth", first=True)
    assert pad.parts[0].steps == 49 and s2d.parts[0].steps == 16   # 4x4 taps x 12 channels
    assert s2d.parts[0].kernel_op().shape == (1, 8, 16, 16)
    not_first = lower(layer, "forward", 16, first_layer="space-to-depth", first=False)
    assert not_first.parts[0].steps == 49
    for p in ("input_grad", "weight_grad"):
        a = lower(layer, p, 16)
        b = lower(layer, p, 16, first_layer="space-to-depth", first=True)
        assert [x.steps for x in a.parts] == [x.steps for x in b.parts]
    stride1 = random_layer(3, 8, 3, 1, 1, 1, 1, 6)
    assert lower(stride1, "forward", 16, first_layer="space-to-depth", first=True).parts[0].steps == 9


def test_first_illegal_pair_is_the_smallest_outside_the_connectivity():
    """The table lookup of verify._first_illegal against the set difference it replaced."""
    from simulator.verify import _first_illegal

    rng = np.random.default_rng(0)
    table = rng.random((3, 8)) < 0.5
    legal = {(int(a), int(b)) for a, b in np.argwhere(table)}
    for _ in range(200):
        dt = rng.integers(-1, 4, size=20)
        dl = rng.integers(0, 8, size=20)
        bad = set(zip(dt.tolist(), dl.tolist())) - legal
        assert _first_illegal(dt, dl, table) == (min(bad) if bad else None)
