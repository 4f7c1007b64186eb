"""The streamed simulation (batch chunk by batch chunk) equals the whole-batch one.

For small layers, every pass, both scheduled operands, both input-gradient lowerings,
lockstep and decoupled tiles, at several chunk sizes: the timing and effectual MACs of
`LayerStream.evaluate` equal `simulate.evaluate` on the whole pass, the footprints equal
`LayerFootprints` of the whole tensors, and whole result rows do not depend on the chunk.
"""

import numpy as np
import pytest

from simulator.config import Architecture, Lowering, Memory
from simulator.frontend import Frontend
from simulator.simulate import PassPlan, evaluate, layer_rows, simulate_layers
from simulator.streaming import LayerStream, chunk_bounds, layer_footprints
from simulator.trace import TraceLayer
from simulator.traffic import LayerFootprints, memory_model
from tests.util import layer_spec

PASSES = ("forward", "input_grad", "weight_grad")


def sparse_layer(spec, batch, seed, density=0.4, saved="topk"):
    """A layer with sparse weights, ReLU-like inputs, a sparser saved copy and a gradient
    with zero runs (so every count, run and carry is exercised)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(spec.weight_shape).astype(np.float32)
    w[rng.random(w.shape) > density] = 0
    x = np.maximum(rng.standard_normal(spec.input_shape(batch)), 0).astype(np.float32)
    x[1:2] = 0  # a whole sample of zeros: a zero run across chunk cuts
    if saved == "topk":
        s = np.where(x > np.quantile(x, 0.7), x, 0).astype(np.float32)
    else:
        s = x if saved == "input" else None
    dy = rng.standard_normal(spec.output_shape(batch)).astype(np.float32)
    dy[rng.random(dy.shape) < 0.5] = 0
    return TraceLayer(spec, w, x, s, dy)


LAYERS = [  # (spec, batch): Ho*Wo = 16, 9, 4, 1; strided ones split the input gradient by phase
    (layer_spec(5, 6, k=3, padding=1, hw=4), 5),
    (layer_spec(4, 8, k=3, stride=2, padding=1, hw=6), 4),
    (layer_spec(4, 8, k=3, stride=2, padding=1, hw=8), 5),  # 16 positions: cut at any sample
    (layer_spec(8, 8, k=3, padding=1, groups=2, hw=2), 7),
    (layer_spec(6, 5, k=1, stride=2, hw=4), 6),
    (layer_spec(12, 7, kind="fc"), 9),
]
ARCHS = [
    Architecture(tiles=2, rows=2, lanes=4, columns=1, frontend=Frontend("T", 2, 1)),
    Architecture(tiles=3, rows=3, lanes=4, columns=2, frontend=Frontend("L", 1, 0), lockstep=False),
]


@pytest.mark.parametrize("li", range(len(LAYERS)))
@pytest.mark.parametrize("ai", range(len(ARCHS)))
@pytest.mark.parametrize("operand", ["weights", "activations"])
def test_streamed_pass_equals_whole_pass(li, ai, operand):
    spec, batch = LAYERS[li]
    arch = ARCHS[ai]
    layer = sparse_layer(spec, batch, seed=li * 10 + ai)
    for lowering in ("phase", "zero-insert"):
        plan = PassPlan(PASSES, Lowering(scheduled_operand=dict.fromkeys(PASSES, operand),
                                         input_grad_lowering=lowering))
        side = "kernel" if operand == "weights" else "input"
        for pas in PASSES:
            whole = evaluate(plan.lower(layer, pas, arch.lanes, 1), arch)
            for samples in (1, 2, 3, batch):
                stream = LayerStream(layer, 1, chunk_bounds(spec, batch, arch, plan, 1,
                                                            chunk_samples=samples))
                assert stream.evaluate(plan, pas, side, arch) == whole, (pas, lowering, samples)
            if pas == "input_grad":
                dense = evaluate(plan.lower(layer, pas, arch.lanes, 1, input_grad_lowering="phase"),
                                 arch, schedule=False)[0].dense_cycles
                assert stream.dense_cycles(plan, pas, side, arch, input_grad_lowering="phase") == dense


def test_chunks_cut_the_weight_gradient_between_steps():
    arch = ARCHS[0]  # 4 lanes
    plan = PassPlan(PASSES, Lowering())
    spec = layer_spec(4, 4, k=3, padding=1, hw=3)  # 9 positions per sample: 4 samples per cut
    bounds = chunk_bounds(spec, 10, arch, plan, 1, chunk_samples=1)
    assert bounds == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(spec, 10, arch, PassPlan(("forward",), Lowering()), 1, chunk_samples=3) == \
        [(0, 3), (3, 6), (6, 9), (9, 10)]
    # from a byte budget: at least one sample, never more than the batch
    assert chunk_bounds(spec, 10, arch, plan, 1, chunk_bytes=1) == bounds
    assert chunk_bounds(spec, 10, arch, plan, 1, chunk_bytes=1 << 30) == [(0, 10)]


@pytest.mark.parametrize("saved", ["topk", "input", "none"])
def test_footprints_counted_in_chunks_equal_the_whole_tensors(saved):
    spec, batch = LAYERS[0]
    layer = sparse_layer(spec, batch, seed=3, saved=saved)
    whole = LayerFootprints(layer, 2)
    for samples in (1, 2, batch):
        bounds = [(s, min(s + samples, batch)) for s in range(0, batch, samples)]
        counted = layer_footprints(layer, bounds, 2)
        for t in ("weight", "input", "input_saved", "grad_output"):
            assert counted[t] == whole[t], (t, samples)
        assert counted["saved_copy"] == whole.saved_copy == (saved == "topk")


def test_rows_do_not_depend_on_the_chunk_size_or_the_threads():
    arch = ARCHS[0]
    memory = Memory(bandwidth_gbps=4.0, weight_buffer_kib=1, activation_buffer_kib=1, output_buffer_kib=1)
    plan = PassPlan(PASSES, Lowering(scheduled_operand=dict.fromkeys(PASSES, "auto")))
    layers = [sparse_layer(spec, 6, seed=i) for i, (spec, _) in enumerate(LAYERS[:2])]
    mm = memory_model(memory, arch.frontend)

    def clean(rows):
        return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]

    first = clean(layer_rows(layers[0], 0, arch, plan, "n", 0.5, mm, 10, chunk_samples=6))
    assert clean(layer_rows(layers[0], 0, arch, plan, "n", 0.5, mm, 10, chunk_samples=1)) == first
    assert [r["pass"] for r in first] == ["forward", "weight_grad"]  # the first layer's dX is skipped
    reference = simulate_layers(layers, arch, plan, "n", 0.5, memory, chunk_samples=6)
    for samples, workers in ((1, 1), (2, 2), (5, 2)):
        got = simulate_layers(layers, arch, plan, "n", 0.5, memory, workers=workers, chunk_samples=samples)
        assert clean(got) == clean(reference)


def test_cancel_stops_a_layer_and_an_error_stops_the_run():
    import threading

    from simulator.streaming import Cancelled
    arch = ARCHS[0]
    memory = Memory()
    plan = PassPlan(PASSES, Lowering())
    mm = memory_model(memory, arch.frontend)
    layer = sparse_layer(*LAYERS[0], seed=1)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        layer_rows(layer, 1, arch, plan, "n", 0.5, mm, chunk_samples=1, cancel=cancel)

    class Broken:  # a layer whose samples cannot be read
        spec, batch, weight, saved_is_input = layer.spec, layer.batch, layer.weight, False

        def samples(self, start, stop):
            raise OSError("unreadable")

    layers = [layer, Broken(), layer, layer]
    with pytest.raises(OSError, match="unreadable"):
        simulate_layers(layers, arch, plan, "n", 0.5, memory, workers=2, chunk_samples=1)
    assert not [t for t in threading.enumerate() if t.name.startswith("accelsim-simulate")]


def test_rows_equal_the_whole_pass_reference():
    # the glue of layer_rows (operands chosen from counted sparsities, traffic from counted
    # footprints, the zero-insert dense baseline) against the whole-pass computation
    from simulator.lowering import tensor_sparsity
    from simulator.traffic import pass_traffic
    arch = ARCHS[0]
    memory = Memory(weight_buffer_kib=1, activation_buffer_kib=1, output_buffer_kib=1)
    mm = memory_model(memory, arch.frontend)
    for operand, lowering in (("auto", "zero-insert"), ("activations", "phase"), ("weights", "phase")):
        plan = PassPlan(PASSES, Lowering(scheduled_operand=dict.fromkeys(PASSES, operand),
                                         input_grad_lowering=lowering))
        for li, (spec, batch) in enumerate(LAYERS):
            layer = sparse_layer(spec, batch, seed=li)
            rows = layer_rows(layer, 1, arch, plan, "n", 0.5, mm, chunk_samples=1)
            whole_fp, dense_fp = LayerFootprints(layer, mm.run_bits), LayerFootprints(layer, mm.run_bits, True)
            lowered = {p: plan.lower(layer, p, arch.lanes, 1) for p in PASSES}
            scheduled = {lw.scheduled_tensor for lw in lowered.values()}
            for row in rows:
                lw = lowered[row["pass"]]
                timing, effectual = evaluate(lw, arch)
                if row["pass"] == "input_grad" and lowering != "phase":
                    timing = type(timing)(timing.cycles, evaluate(plan.lower(
                        layer, "input_grad", arch.lanes, 1, input_grad_lowering="phase"), arch,
                        schedule=False)[0].dense_cycles, *[getattr(timing, f) for f in
                                                           ("ideal_cycles", "filter_groups", "window_groups")])
                traffic = pass_traffic(layer, row["pass"], scheduled, mm, whole_fp)
                dense = pass_traffic(layer, row["pass"], (), mm.dense(), dense_fp)
                assert (row["compute_cycles"], row["dense_compute_cycles"], row["ideal_cycles"]) == \
                    (timing.cycles, timing.dense_cycles, timing.ideal_cycles), (operand, li, row["pass"])
                assert row["effectual_macs"] == effectual and row["macs"] == lw.macs
                assert row["scheduled_operand"] == lw.scheduled_tensor
                assert row["scheduled_sparsity"] == tensor_sparsity(layer, lw.scheduled_tensor)
                assert row["broadcast_sparsity"] == tensor_sparsity(layer, lw.broadcast_tensor)
                assert (row["dram_read_bytes"], row["dram_write_bytes"], row["tiles"]) == \
                    (traffic.read_bytes, traffic.write_bytes, traffic.tiles)
                assert row["dense_dram_bytes"] == dense.read_bytes + dense.write_bytes


def test_synthetic_patterns_give_the_rows_of_the_whole_synthetic_tensors():
    # run's SyntheticLayers (drawn in pieces, bits, shared draws between sparsities) against
    # the float tensors of synthetic_layers, through the whole simulation
    from workloads.networks import build_network
    from workloads.synthetic import DrawCache, synthetic_layers, synthetic_patterns
    net = build_network("resnet18-cifar", image_size=8)
    arch = Architecture(tiles=2, rows=4, lanes=8, frontend=Frontend("T", 2, 3))
    plan = PassPlan(PASSES, Lowering(first_layer="space-to-depth"))
    cache = DrawCache()
    for sparsity in (0.5, 0.9):
        whole = simulate_layers(synthetic_layers(net, sparsity, batch=3, seed=1), arch, plan, "r",
                                sparsity, Memory())
        drawn = simulate_layers(synthetic_patterns(net, sparsity, batch=3, seed=1, cache=cache), arch,
                                plan, "r", sparsity, Memory(), workers=2, chunk_samples=1)
        assert drawn == whole
    assert cache.used > 0
