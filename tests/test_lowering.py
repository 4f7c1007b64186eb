"""Lowering of the training passes: exact dense baselines, phase coverage, operand choice,
which layers run which pass."""

import numpy as np
import pytest

import simulator
from simulator.config import Architecture, Lowering, Memory
from simulator.frontend import Frontend
from simulator.lowering import lower
from simulator.simulate import PassPlan, evaluate, simulate_layers
from simulator.trace import LayerSpec, TraceLayer
from tests.test_check import GEOMETRIES, random_layer

NONE = Architecture(tiles=1, rows=4, lanes=4, frontend=Frontend("none", 0, 0))


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g)))
def test_phases_cover_every_input_position_once(geometry):
    layer = random_layer(*geometry)
    parts = lower(layer, "input_grad", 4).parts
    ids = np.concatenate([p.input_ids for p in parts])
    assert len(ids) == len(set(ids.tolist()))
    # positions no phase computes are exactly those no tap reaches (their dX is 0)
    spec = layer.spec
    k, p, s, d = spec.kernel, spec.padding, spec.stride, spec.dilation
    reached = [i for i in range(spec.in_hw[0])
               if any((i + p - u * d) % s == 0 and 0 <= (i + p - u * d) // s < spec.out_hw[0]
                      for u in range(k))]
    covered_rows = {int(i) // spec.in_hw[1] % spec.in_hw[0] for i in ids}
    assert set(reached) <= covered_rows


def test_phase_dense_count_is_the_true_transposed_convolution_work():
    # 2x2 kernel, stride 2, no padding, 4x4 input: every dX position meets exactly one tap
    # per axis, so the phase lowering's dense work equals the forward MACs, and the
    # zero-inserted lowering streams k*k = 4 taps per position: 4x the cycles.
    layer = random_layer(4, 4, 2, 2, 0, 1, 1, 4, batch=1, density=1.0)
    arch = Architecture(tiles=1, rows=4, lanes=4, frontend=Frontend("none", 0, 0))
    phase, _ = evaluate(lower(layer, "input_grad", 4), arch)
    zero, _ = evaluate(lower(layer, "input_grad", 4, input_grad_lowering="zero-insert"), arch)
    peak = arch.peak_macs_per_cycle
    assert phase.dense_cycles * peak == layer.spec.macs(1) == 4 * 4 * 4 * 2 * 2 * 2 * 2 // 4
    assert zero.cycles == zero.dense_cycles == 4 * phase.dense_cycles


def test_weight_grad_streams_pack_positions_into_lanes():
    # 1x1 conv on a 3x5 map, batch 2: the reduction is N*Ho*Wo = 30 positions = 8 steps
    # of 4 lanes; filters = C_in/g * k * k = 6 saved-activation streams; windows = C_out.
    spec = LayerSpec("c", "conv", 6, 5, in_hw=(3, 5), out_hw=(3, 5))
    rng = np.random.default_rng(0)
    layer = TraceLayer(spec, weight=rng.standard_normal((5, 6, 1, 1)).astype(np.float32),
                       input=np.ones((2, 6, 3, 5), np.float32),
                       grad_output=np.ones((2, 5, 3, 5), np.float32))
    lowered = lower(layer, "weight_grad", 4, "activations")
    assert lowered.scheduled_tensor == "input_saved" and lowered.broadcast_tensor == "grad_output"
    sched, bcast = lowered.operands(lowered.parts[0])
    assert sched.shape == (1, 6, 8, 4) and bcast.shape == (1, 5, 8, 4)
    t, effectual = evaluate(lowered, NONE)
    # 2 filter groups (6 streams on 4 filter lanes) x 8 steps x 5 windows
    assert t.dense_cycles == 2 * 8 * 5 and effectual == 2 * 15 * 6 * 5


def test_auto_picks_the_sparser_tensor():
    layer = random_layer(8, 8, 3, 1, 1, 1, 1, 6, density=0.1)   # sparse W and saved X
    layer.input_saved = np.maximum(layer.input, 0)                # ~half zeros
    assert lower(layer, "forward", 4, "auto").scheduled_tensor == "weight"
    assert lower(layer, "input_grad", 4, "auto").scheduled_tensor == "weight"
    assert lower(layer, "weight_grad", 4, "auto").scheduled_tensor == "input_saved"
    layer.weight[...] = 1.0
    assert lower(layer, "forward", 4, "auto").scheduled_tensor == "input"
    assert lower(layer, "input_grad", 4, "auto").scheduled_tensor == "weight"  # tie: both dense
    layer.grad_output[..., 0] = 0
    assert lower(layer, "input_grad", 4, "auto").scheduled_tensor == "grad_output"


def test_first_layer_input_grad_is_skipped_unless_asked():
    layers = [random_layer(3, 4, 3, 1, 1, 1, 1, 5, seed=1), random_layer(4, 4, 3, 1, 1, 1, 1, 5, seed=2)]
    passes = ("forward", "input_grad", "weight_grad")
    rows = list(simulate_layers(layers, NONE, PassPlan(passes, Lowering()), "n", 0.0, Memory()))
    assert [(r["layer"] == "c", r["pass"]) for r in rows].count((True, "input_grad")) == 1
    assert len(rows) == 5
    rows = list(simulate_layers(layers, NONE, PassPlan(passes, Lowering(first_layer_input_grad=True)),
                                "n", 0.0, Memory()))
    assert len(rows) == 6


def test_zero_insert_rows_keep_the_phase_dense_baseline():
    base = {"architecture": {"tiles": 2, "rows": 4, "lanes": 16},
            "workload": {"network": "resnet18-cifar", "image_size": 8, "sparsity": [0.5]},
            "passes": ["input_grad"]}
    phase = simulator.run(simulator.parse_config(base))
    zero = simulator.run(simulator.parse_config({**base, "lowering": {"input_grad_lowering": "zero-insert"}}))
    assert (zero["dense_compute_cycles"] == phase["dense_compute_cycles"]).all()
    assert (zero["effectual_macs"] == phase["effectual_macs"]).all()
    strided = phase["layer"].isin(["layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1"])
    assert (zero.loc[strided, "compute_cycles"].to_numpy()
            > phase.loc[strided, "compute_cycles"].to_numpy()).all()


def test_synthetic_iteration_obeys_the_bounds_for_every_pass():
    cfg = simulator.parse_config({
        "architecture": {"tiles": 2, "rows": 4, "lanes": 16},
        "workload": {"network": "resnet18-cifar", "image_size": 16, "sparsity": [0.0, 0.8, 0.9]}})
    df = simulator.run(cfg)
    assert set(df["pass"]) == {"forward", "input_grad", "weight_grad"}
    assert (df["ideal_cycles"] <= df["compute_cycles"]).all()
    assert (df["compute_cycles"] <= df["dense_compute_cycles"]).all()
    assert (df["dense_compute_cycles"] <= 3 * df["compute_cycles"]).all()  # T<2,5>: h + 1 = 3
    assert set(df.loc[df["pass"] == "weight_grad", "scheduled_operand"]) == {"input_saved"}
    assert set(df.loc[df["pass"] == "input_grad", "scheduled_operand"]) == {"weight"}
