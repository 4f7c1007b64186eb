"""Simulate trace layers on the array: lower each pass, time it, make result rows.

The simulator core: it takes `TraceLayer`s (from a trace on disk or a synthetic
workload: it cannot tell which) and never imports `workloads`.

Per pass: `cycles` and `ideal_cycles` come from the configured lowering; `dense_cycles`
from the default one (for the input gradient: the phase decomposition, whose dense
count is the true transposed-convolution work, never the zero-inserted one). So a
`zero-insert` row that schedules W may show cycles > dense_cycles, the price of
streaming the inserted zeros; one that schedules dY can skip them instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .array import ZERO, PassTiming, time_streams
from .config import Architecture, Lowering
from .lowering import LoweredPass, lower, reference, tensor_sparsity
from .results import result_row
from .trace import TraceLayer
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

    def lower(self, layer: TraceLayer, pass_name: str, lanes: int, **overrides) -> LoweredPass:
        opts = {"operand": self.lowering.scheduled_operand[pass_name],
                "input_grad_lowering": self.lowering.input_grad_lowering, **overrides}
        return lower(layer, pass_name, lanes, **opts)


def simulate_layers(layers: Iterable[TraceLayer], arch: Architecture, plan: PassPlan,
                    network: str, sparsity: float) -> Iterable[dict]:
    """Yield one result row per (layer, pass)."""
    for index, layer in enumerate(layers):
        for pas in plan.passes:
            if not plan.applies(pas, index):
                continue
            lowered = plan.lower(layer, pas, arch.lanes)
            timing, effectual = evaluate(lowered, arch)
            if pas == "input_grad" and plan.lowering.input_grad_lowering != "phase":
                base, _ = evaluate(plan.lower(layer, pas, arch.lanes, input_grad_lowering="phase"),
                                   arch, schedule=False)
                timing = PassTiming(timing.cycles, base.dense_cycles, timing.ideal_cycles,
                                    timing.filter_groups, timing.window_groups)
            yield result_row(network, sparsity, layer.spec.kind, lowered, timing, effectual, arch, {
                "weight_sparsity": tensor_sparsity(layer, "weight"),
                "scheduled_sparsity": tensor_sparsity(layer, lowered.scheduled_tensor),
                "broadcast_sparsity": tensor_sparsity(layer, lowered.broadcast_tensor)})


def check_layers(layers: Iterable[TraceLayer], arch: Architecture,
                 plan: PassPlan) -> Iterable[CheckResult]:
    """Yield one functional-check result per (layer, pass)."""
    for index, layer in enumerate(layers):
        for pas in plan.passes:
            if plan.applies(pas, index):
                yield recompute(plan.lower(layer, pas, arch.lanes), arch, reference(layer, pas))
