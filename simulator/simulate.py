"""Simulate trace layers on the array: lower each pass, time it, make result rows.

The simulator core: it takes `TraceLayer`s (from a trace on disk or a synthetic
workload: it cannot tell which) and never imports `workloads`.

Per pass: `compute_cycles` and `ideal_cycles` come from the configured lowering;
`dense_compute_cycles` from the default one (for the input gradient: the phase decomposition, whose dense
count is the true transposed-convolution work, never the zero-inserted one). So a
`zero-insert` row that schedules W may show compute_cycles > dense_compute_cycles, the
price of streaming the inserted zeros; one that schedules dY can skip them instead.
Memory (traffic.py, memory.py) adds stall cycles to both: `cycles` = compute + stalls
with the configured formats, `dense_cycles` = the dense array's compute + the stalls of
dense training's traffic on the same memory system.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .array import ZERO, PassTiming, time_streams
from .config import Architecture, Lowering, Memory
from .lowering import PASS_TENSORS, LoweredPass, choose_operand, lower, reference, tensor_sparsity
from .memory import Dram, PassWork, is_memory_bound, time_passes
from .results import finish_row, result_row
from .trace import TraceLayer
from .traffic import LayerFootprints, memory_model, pass_traffic
from .verify import CheckResult, recompute


def evaluate(lowered: LoweredPass, arch: Architecture, schedule: bool = True) -> tuple[PassTiming, int]:
    """Timing of `lowered` summed over its parts, and its effectual MACs (both operands
    non-zero: per group and step, scheduled non-zeros x broadcast non-zeros)."""
    timing, effectual = ZERO, 0
    for part in lowered.parts:
        sched, bcast = lowered.operands(part)
        nz_s, nz_b = sched != 0, bcast != 0
        timing = timing + time_streams(nz_s, bcast.shape[1], arch, schedule=schedule)
        effectual += int(np.einsum("gsl,gsl->", nz_s.sum(axis=1, dtype=np.int64),
                                   nz_b.sum(axis=1, dtype=np.int64)))
    return timing, effectual


@dataclass(frozen=True)
class PassPlan:
    """What to simulate: passes, operand choice per pass, input-gradient lowering."""

    passes: tuple[str, ...]
    lowering: Lowering

    def applies(self, pass_name: str, index: int) -> bool:
        """Whether `pass_name` runs on the layer at `index` (the first layer's input
        gradient is skipped unless asked for: nothing needs the image's gradient)."""
        return not (pass_name == "input_grad" and index == 0
                    and not self.lowering.first_layer_input_grad)

    def scheduled_tensor(self, layer: TraceLayer, pass_name: str) -> str:
        """The trace tensor the front-end schedules in `pass_name` (what `lower` will pick)."""
        kernel_t, input_t = PASS_TENSORS[pass_name]
        operand = choose_operand(layer, pass_name, self.lowering.scheduled_operand[pass_name])
        return kernel_t if operand == "kernel" else input_t

    def lower(self, layer: TraceLayer, pass_name: str, lanes: int, index: int = -1,
              **overrides) -> LoweredPass:
        """Lower `pass_name` of `layer`, the network's layer number `index`."""
        opts = {"operand": self.lowering.scheduled_operand[pass_name],
                "input_grad_lowering": self.lowering.input_grad_lowering,
                "first_layer": self.lowering.first_layer, "tap_order": self.lowering.tap_order,
                "first": index == 0, **overrides}
        return lower(layer, pass_name, lanes, **opts)


def simulate_layers(layers: Iterable[TraceLayer], arch: Architecture, plan: PassPlan,
                    network: str, sparsity: float, memory: Memory,
                    batchnorm_elements: dict | None = None) -> list[dict]:
    """One result row per (layer, pass), with DRAM traffic and memory stalls.

    `batchnorm_elements`: layer name -> elements of the batch-norm input that follows it
    (its output), which the backward pass needs stored dense (SWAT A.9); it enters the
    activation-memory tally of the layer's forward row."""
    mm = memory_model(memory, arch.frontend)
    rows = []
    for index, layer in enumerate(layers):
        fp, dense_fp = LayerFootprints(layer, mm.run_bits), LayerFootprints(layer, mm.run_bits, dense=True)
        scheduled = {plan.scheduled_tensor(layer, p) for p in plan.passes if plan.applies(p, index)}
        for pas in plan.passes:
            if not plan.applies(pas, index):
                continue
            lowered = plan.lower(layer, pas, arch.lanes, index)
            timing, effectual = evaluate(lowered, arch)
            if pas == "input_grad" and plan.lowering.input_grad_lowering != "phase":
                base, _ = evaluate(plan.lower(layer, pas, arch.lanes, index, input_grad_lowering="phase"),
                                   arch, schedule=False)
                timing = PassTiming(timing.cycles, base.dense_cycles, timing.ideal_cycles,
                                    timing.filter_groups, timing.window_groups)
            traffic = pass_traffic(layer, pas, scheduled, mm, fp)
            dense_traffic = pass_traffic(layer, pas, (), mm.dense(), dense_fp)
            bn = (batchnorm_elements or {}).get(layer.spec.name, 0) * mm.element_bits // 8
            row = result_row(network, sparsity, layer.spec.kind, lowered, timing, effectual, arch, {
                "weight_sparsity": tensor_sparsity(layer, "weight"),
                "scheduled_sparsity": tensor_sparsity(layer, lowered.scheduled_tensor),
                "broadcast_sparsity": tensor_sparsity(layer, lowered.broadcast_tensor)},
                traffic, dense_traffic, bn if pas == "forward" else 0)
            row["_order"] = (0, index, 0) if pas == "forward" else (1, -index, pas == "weight_grad")
            row["_work"] = PassWork(timing.cycles, traffic.read_bytes, traffic.write_bytes, traffic.tiles)
            row["_dense_work"] = PassWork(timing.dense_cycles, dense_traffic.read_bytes,
                                          dense_traffic.write_bytes, dense_traffic.tiles)
            rows.append(row)
    return time_iteration(rows, memory, arch)


def time_iteration(rows: list[dict], memory: Memory, arch: Architecture) -> list[dict]:
    """Run the memory timing over one iteration's rows in execution order (forward
    through the layers, then each layer's gradients in reverse order) for the simulated
    array and, separately, for the dense array with dense traffic; finish the rows."""
    dram = Dram.from_config(memory.bandwidth_gbps, memory.latency_ns, arch.frequency_mhz)
    order = sorted(range(len(rows)), key=lambda i: rows[i]["_order"])
    stalls = time_passes([rows[i]["_work"] for i in order], dram)
    dense_stalls = time_passes([rows[i]["_dense_work"] for i in order], dram)
    for i, stall, dense_stall in zip(order, stalls, dense_stalls):
        finish_row(rows[i], stall, dense_stall, is_memory_bound(rows[i]["_work"], dram), arch)
    return rows


def check_layers(layers: Iterable[TraceLayer], arch: Architecture,
                 plan: PassPlan) -> Iterable[CheckResult]:
    """Yield one functional-check result per (layer, pass)."""
    for index, layer in enumerate(layers):
        for pas in plan.passes:
            if plan.applies(pas, index):
                yield recompute(plan.lower(layer, pas, arch.lanes, index), arch, reference(layer, pas))
