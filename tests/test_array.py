"""Array timing of the forward pass: exact cycle counts, mapping, lockstep, invariants."""

import numpy as np
import pytest

from simulator.config import Architecture
from simulator.frontend import Frontend
from simulator.lowering import lower
from simulator.simulate import evaluate
from simulator.trace import TraceLayer
from tests.util import layer_spec


def time_forward(layer, arch):
    return evaluate(lower(layer, "forward", arch.lanes), arch)[0]


def conv_layer(cin, cout, k=1, stride=1, padding=0, dilation=1, groups=1, hw=4, batch=1,
               weight=None, seed=0, kind="conv"):
    rng = np.random.default_rng(seed)
    spec = layer_spec(cin, cout, k, stride, padding, dilation, groups, hw, kind)
    if weight is None:
        weight = rng.standard_normal(spec.weight_shape).astype(np.float32)
    x = rng.standard_normal(spec.input_shape(batch)).astype(np.float32)
    return TraceLayer(spec, weight=weight.astype(np.float32), input=x)


def arch(tiles=1, rows=2, lanes=4, columns=1, frontend=("L", 1, 1)):
    return Architecture(tiles=tiles, rows=rows, lanes=lanes, columns=columns,
                        frontend=Frontend(*frontend))


def test_stream_layout_kernel_position_outer_channel_blocks_inner():
    w = np.arange(2 * 6 * 2 * 2, dtype=np.float32).reshape(2, 6, 2, 2) + 1
    layer = conv_layer(6, 2, k=2, hw=3, weight=w)
    s = lower(layer, "forward", 4).parts[0].kernel_op()  # 6 channels -> 2 blocks of 4 per tap
    assert s.shape == (1, 2, 2 * 2 * 2, 4)
    # step 0: kernel position (0,0), channels 0-3; step 1: (0,0), channels 4-5 + 2 pad
    assert s[0, 1, 0].tolist() == w[1, 0:4, 0, 0].tolist()
    assert s[0, 1, 1].tolist() == w[1, 4:6, 0, 0].tolist() + [0, 0]
    assert s[0, 1, 2].tolist() == w[1, 0:4, 0, 1].tolist()
    assert s[0, 0, 7].tolist() == w[0, 4:6, 1, 1].tolist() + [0, 0]


def test_exact_cycles_of_a_small_conv_layer():
    # The L<1,1> case of test_scheduler, as a real layer: C_in = 4 = lanes, 2x2 kernel, so
    # step t is kernel position t and lane l is channel l. The tile takes 2 cycles per
    # window instead of 4; a 3x3 input gives 2x2 = 4 windows, one per cycle (columns=1).
    streams = np.zeros((2, 4, 4))  # filter, step (kernel position), lane (channel)
    for f, t, l in [(0, 0, 0), (0, 1, 1), (0, 1, 2), (0, 3, 0), (0, 3, 1), (1, 1, 0), (1, 3, 2)]:
        streams[f, t, l] = 1.0 + f + t + l
    w = streams.reshape(2, 2, 2, 4).transpose(0, 3, 1, 2)  # O, C, u, v
    layer = conv_layer(4, 2, k=2, hw=3, weight=w)
    timing = time_forward(layer, arch())
    assert (timing.cycles, timing.dense_cycles, timing.ideal_cycles) == (8, 16, 8)
    # 3 windows per cycle: 4 windows in 2 window groups
    timing = time_forward(layer, arch(columns=3))
    assert (timing.cycles, timing.dense_cycles, timing.window_groups) == (4, 8, 2)


def test_dense_layer_with_aligned_channels_has_speedup_exactly_one():
    layer = conv_layer(32, 40, k=3, padding=1, hw=5)
    for fe in [("T", 2, 5), ("L", 4, 3), ("none", 0, 0)]:
        t = time_forward(layer, arch(tiles=4, rows=4, lanes=16, frontend=fe))
        assert t.cycles == t.dense_cycles == t.ideal_cycles


def test_tiles_run_in_lockstep_so_the_slowest_tile_sets_the_pace():
    # 2 tiles x 1 filter lane: filter 0 is dense (4 steps), filter 1 all zero (2 cycles
    # alone with h=1). Together they cost max(4, 2) = 4 per window.
    w = np.zeros((2, 4, 2, 2), dtype=np.float32)
    w[0] = 1.0
    layer = conv_layer(4, 2, k=2, hw=2, weight=w)
    t = time_forward(layer, arch(tiles=2, rows=1))
    assert (t.cycles, t.dense_cycles, t.filter_groups) == (4, 4, 1)
    # on separate filter groups (1 tile) they are summed instead: 4 + 2
    t = time_forward(layer, arch(tiles=1, rows=1))
    assert (t.cycles, t.dense_cycles, t.filter_groups) == (6, 8, 2)


def test_depthwise_layers_use_one_filter_lane_per_group():
    layer = conv_layer(8, 8, k=3, padding=1, groups=8, hw=4)
    t = time_forward(layer, arch(tiles=2, rows=2, frontend=("none", 0, 0)))
    # 8 groups x 1 filter group x 9 steps (1 channel padded to 4 lanes) x 16 windows
    assert t.dense_cycles == 8 * 9 * 16
    assert t.filter_groups == 8


def test_fc_is_a_one_by_one_convolution():
    layer = conv_layer(40, 6, kind="fc", batch=3)
    lowered = lower(layer, "forward", 16)
    part = lowered.parts[0]
    assert part.kernel_op().shape == (1, 6, 3, 16) and part.input_op().shape == (1, 3, 3, 16)
    assert lowered.macs == 3 * 40 * 6
    t = evaluate(lowered, arch(tiles=1, rows=8, lanes=16, frontend=("none", 0, 0)))[0]
    assert t.dense_cycles == 3 * 3


def test_padded_channels_are_skippable_at_zero_sparsity():
    # 3 input channels on 16 lanes, 7x7 kernel: 49 steps of which 13/16 lanes are padding.
    layer = conv_layer(3, 4, k=7, stride=2, padding=3, hw=8)
    t = time_forward(layer, arch(rows=4, lanes=16, frontend=("T", 2, 5)))
    assert t.ideal_cycles == 10 * 16  # ceil(147 / 16) per window, 4x4 windows
    assert t.ideal_cycles <= t.cycles < t.dense_cycles == 49 * 16


@pytest.mark.parametrize("fe", [("T", 2, 5), ("L", 2, 3), ("T", 1, 2), ("none", 0, 0)])
def test_invariants_on_random_sparse_layers(fe):
    rng = np.random.default_rng(3)
    h = fe[1]
    for trial in range(8):
        cin, cout, k = int(rng.integers(1, 40)), int(rng.integers(1, 40)), int(rng.choice([1, 3]))
        layer = conv_layer(cin, cout, k=k, padding=k // 2, hw=4, seed=trial)
        keep = rng.random(layer.weight.shape) < rng.choice([0.05, 0.2, 0.5, 1.0])
        layer.weight[...] = np.where(keep, layer.weight, 0)
        t = time_forward(layer,
                         arch(tiles=int(rng.integers(1, 4)), rows=int(rng.integers(1, 5)), lanes=16, frontend=fe))
        assert t.ideal_cycles <= t.cycles <= t.dense_cycles
        assert t.dense_cycles <= (h + 1) * t.cycles
        if fe[0] == "none":
            assert t.cycles == t.dense_cycles


def test_effectual_macs_count_nonzero_pairs():
    layer = conv_layer(3, 2, k=3, stride=2, padding=1, hw=5, seed=4)
    layer.weight[0, 1] = 0
    layer.input[0, 0, :2] = 0
    lowered = lower(layer, "forward", 4)
    effectual = evaluate(lowered, arch(lanes=4))[1]
    # brute force: for every output, count non-zero weight x non-zero input pairs
    xp = np.pad(layer.input, ((0, 0), (0, 0), (1, 1), (1, 1)))
    count = 0
    for o in range(2):
        for y in range(3):
            for x in range(3):
                for c in range(3):
                    for u in range(3):
                        for v in range(3):
                            count += bool(layer.weight[o, c, u, v]) and bool(xp[0, c, 2 * y + u, 2 * x + v])
    assert effectual == count
    assert lowered.macs == 2 * 3 * 9 * 9


def test_decoupled_tiles_sum_their_own_filter_groups():
    # 4 filters, 1 filter lane per tile, 2 tiles: filter groups {f0, f1} and {f2, f3};
    # tile 0 holds f0 and f2, tile 1 holds f1 and f3. C_in = 4 = lanes, 2x2 kernel: 4 steps.
    # f0, f3 dense: 4 cycles each; f1, f2 all zero: L<1,0> skips every other step: 2 cycles.
    # lockstep: max(4, 2) + max(2, 4) = 8 per window; decoupled: max(4 + 2, 2 + 4) = 6.
    # ideal (ceil(nnz / lanes)): lockstep 4 + 4, decoupled max(4 + 0, 0 + 4) = 4.
    w = np.zeros((4, 4, 2, 2), dtype=np.float32)
    w[0] = w[3] = 1.0
    layer = conv_layer(4, 4, k=2, hw=3, weight=w)   # 2x2 = 4 windows
    a = Architecture(tiles=2, rows=1, lanes=4, frontend=Frontend("L", 1, 0))
    t = time_forward(layer, a)
    assert (t.cycles, t.ideal_cycles, t.dense_cycles) == (32, 32, 32)
    from dataclasses import replace
    t = time_forward(layer, replace(a, lockstep=False))
    assert (t.cycles, t.ideal_cycles, t.dense_cycles) == (24, 16, 32)


def test_decoupled_bounds_on_random_layers():
    from dataclasses import replace
    rng = np.random.default_rng(4)
    for i in range(8):
        w = rng.standard_normal((37, 20, 3, 3)).astype(np.float32)
        w[rng.random(w.shape) < 0.85] = 0
        layer = conv_layer(20, 37, k=3, hw=5, weight=w, seed=i)
        for sched in ("in-order", "matching"):
            a = Architecture(tiles=3, rows=4, lanes=16, frontend=Frontend("T", 2, 5, scheduler=sched))
            locked, free = time_forward(layer, a), time_forward(layer, replace(a, lockstep=False))
            assert free.ideal_cycles <= free.cycles <= locked.cycles <= locked.dense_cycles
            assert free.dense_cycles == locked.dense_cycles
