"""Functional correctness: outputs recomputed from the scheduled buffers equal NumPy's."""

import numpy as np
import pytest

import simulator.verify as check_mod
from simulator.verify import recompute
from simulator.config import Architecture
from simulator.frontend import Frontend
from simulator.lowering import lower_forward, reference_forward
from simulator.simulate import _reference
from tests.test_array import conv_layer

GEOMETRIES = [  # cin, cout, k, stride, padding, dilation, groups, hw
    (5, 7, 3, 1, 1, 1, 1, 6),
    (6, 4, 3, 2, 0, 1, 1, 8),     # (8 + 0 - 2 - 1) mod 2 = 1: a ragged edge
    (4, 6, 3, 3, 2, 1, 1, 9),     # stride 3, (9 + 4 - 2 - 1) mod 3 = 1
    (3, 8, 7, 2, 3, 1, 1, 11),    # the ImageNet stem shape
    (8, 8, 1, 2, 0, 1, 1, 7),     # 1x1 stride-2 downsampling
    (4, 5, 3, 1, 2, 2, 1, 7),     # dilation 2
    (8, 12, 3, 1, 1, 1, 4, 5),    # grouped
    (6, 6, 3, 2, 1, 1, 6, 7),     # depthwise, stride 2
    (20, 3, 2, 1, 0, 1, 1, 4),    # channels span two lane blocks
]
FRONTENDS = [("T", 2, 5), ("L", 1, 1), ("L", 3, 2), ("none", 0, 0)]


def sparsify(layer, rng, density):
    layer.weight[...] = np.where(rng.random(layer.weight.shape) < density, layer.weight, 0)
    layer.input[...] = np.maximum(layer.input, 0)
    return layer


def test_reference_convolution_matches_a_naive_loop():
    layer = conv_layer(4, 6, k=3, stride=2, padding=1, dilation=2, groups=2, hw=7, batch=2, seed=9)
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
    np.testing.assert_allclose(reference_forward(layer), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("fe", FRONTENDS)
def test_scheduled_forward_equals_reference(geometry, fe):
    cin, cout, k, s, p, d, g, hw = geometry
    rng = np.random.default_rng(abs(hash(geometry)) % 2**32)
    for density in (0.1, 0.5, 1.0):
        layer = sparsify(conv_layer(cin, cout, k, s, p, d, g, hw, batch=2, seed=1), rng, density)
        arch = Architecture(tiles=2, rows=3, lanes=4 if fe[0] != "T" else 16, columns=2,
                            frontend=Frontend(*fe))
        r = recompute(lower_forward(layer, arch.lanes), arch, _reference("forward", layer))
        assert r.ok, r.message
        assert r.max_abs_error < 1e-9


def test_fc_layer_scheduled_equals_reference():
    layer = sparsify(conv_layer(37, 9, kind="fc", batch=4), np.random.default_rng(2), 0.3)
    arch = Architecture(tiles=2, rows=2, lanes=8, frontend=Frontend("T", 2, 3))
    r = recompute(lower_forward(layer, 8), arch, _reference("forward", layer))
    assert r.ok, r.message


def _tampered(mutate):
    """time_pass whose recorded schedule is altered by `mutate(record)`."""
    real = check_mod.time_pass

    def fake(lowered, arch, keep_schedule=False):
        timing, record = real(lowered, arch, keep_schedule=True)
        mutate(record)
        return timing, record
    return fake


def _layer_and_arch():
    layer = sparsify(conv_layer(8, 4, 3, 1, 1, 1, 1, 5, seed=3), np.random.default_rng(5), 0.4)
    return layer, Architecture(tiles=1, rows=4, lanes=4, frontend=Frontend("L", 2, 1))


def test_check_catches_a_dropped_value(monkeypatch):
    def drop(record):
        src = record.sources[0]
        u, r, c, l = np.argwhere(src[:, :, :1, :] >= 0)[0]
        src[u, r, c, l] = -1
    monkeypatch.setattr(check_mod, "time_pass", _tampered(drop))
    layer, arch = _layer_and_arch()
    r = recompute(lower_forward(layer, 4), arch, _reference("forward", layer))
    assert not r.ok and "multiplied 0 times" in r.message


def test_check_catches_an_illegal_connection(monkeypatch):
    def teleport(record):
        record.sources[0][0, 0, 0, 0] = 3 * 4 + 2  # step 3, lane 2: beyond the window
    monkeypatch.setattr(check_mod, "time_pass", _tampered(teleport))
    layer, arch = _layer_and_arch()
    r = recompute(lower_forward(layer, 4), arch, _reference("forward", layer))
    assert not r.ok and "illegal connection" in r.message


def test_check_catches_a_wrong_reference():
    layer, arch = _layer_and_arch()
    ref = _reference("forward", layer)
    ref[1, 2] += 1e-3 * np.abs(ref).max()
    r = recompute(lower_forward(layer, 4), arch, ref)
    assert not r.ok and "differs" in r.message
