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

`run` simulates each layer batch chunk by batch chunk (`streaming.py`, `layer_rows`), on
worker threads (`simulate_points`); `evaluate` is the whole-pass timing, the reference
the streamed one is tested against.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from .array import ZERO, PassTiming, effectual_macs, time_streams
from .config import Architecture, Lowering, Memory
from .energy import EnergyTable
from .energy_events import energy_columns
from .lowering import LoweredPass, lower, reference
from .memory import Dram, PassWork, is_memory_bound, time_passes
from .results import finish_row, result_row
from .streaming import CHUNK_BYTES, LayerStream, chunk_bounds, layer_footprints, scheduled_side, sparsity_of
from .trace import TraceLayer
from .traffic import LayerFootprints, memory_model, pass_traffic
from .verify import CheckResult, recompute
from .verify_serial import check_serial_layer


def evaluate(lowered: LoweredPass, arch: Architecture, schedule: bool = True) -> tuple[PassTiming, int]:
    """Timing of `lowered` summed over its parts, and its effectual MACs (both operands
    non-zero: per group and step, scheduled non-zeros x broadcast non-zeros)."""
    timing, effectual = ZERO, 0
    for part in lowered.parts:
        sched, bcast = lowered.operands(part)
        nz_s, nz_b = sched != 0, bcast != 0
        timing = timing + time_streams(nz_s, bcast.shape[1], arch, schedule=schedule)
        effectual += effectual_macs(nz_s.sum(axis=1, dtype=np.int64), nz_b.sum(axis=1, dtype=np.int64))
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

    def lower(self, layer: TraceLayer, pass_name: str, lanes: int, index: int = -1,
              **overrides) -> LoweredPass:
        """Lower `pass_name` of `layer`, the network's layer number `index`."""
        opts = {"operand": self.lowering.scheduled_operand[pass_name],
                "input_grad_lowering": self.lowering.input_grad_lowering,
                "first_layer": self.lowering.first_layer, "tap_order": self.lowering.tap_order,
                "first": index == 0, **overrides}
        return lower(layer, pass_name, lanes, **opts)


def layer_rows(layer, index: int, arch: Architecture, plan: PassPlan, network: str, sparsity: float,
               mm, batchnorm_elements: int = 0, chunk_bytes: int = CHUNK_BYTES,
               chunk_samples: int | None = None, cancel: threading.Event | None = None,
               memory: Memory | None = None, energy: EnergyTable | None = None) -> list[dict]:
    """The result rows of one layer (`layer`: a `TraceLayer` or anything with its `spec`,
    `batch`, `weight`, `saved_is_input` and `samples`), simulated batch chunk by batch
    chunk (`streaming.py`), without their memory timing (`time_iteration` adds it).
    `batchnorm_elements`: elements of the batch-norm input that follows the layer (its
    output), which the backward pass needs stored dense (SWAT A.9); it enters the
    activation-memory tally of the forward row. `cancel`: set, it stops the layer within a
    chunk (`streaming.Cancelled`). `memory` and `energy` (defaults: the default `Memory` and
    `EnergyTable`) give the energy columns (`energy_events.py`)."""
    memory, energy = memory or Memory(), energy or EnergyTable()
    spec = layer.spec
    passes = [p for p in plan.passes if plan.applies(p, index)]
    if not passes:
        return []
    stream = LayerStream(layer, index, chunk_bounds(spec, layer.batch, arch, plan, index, chunk_bytes,
                                                     chunk_samples), cancel)
    counted = layer_footprints(layer, stream.chunks, mm.run_bits)
    fp = LayerFootprints(layer, mm.run_bits, _cache=dict(counted))
    dense_fp = LayerFootprints(layer, mm.run_bits, dense=True)
    sides = {p: scheduled_side(layer, counted, p, plan.lowering.scheduled_operand[p]) for p in passes}
    whole = {p: stream.lowered(p, sides[p]) for p in passes}  # shapes, tensors, MACs of each pass
    scheduled = {lw.scheduled_tensor for lw in whole.values()}
    rows = []
    for pas in passes:
        timing, effectual = stream.evaluate(plan, pas, sides[pas], arch)
        if pas == "input_grad" and plan.lowering.input_grad_lowering != "phase":
            dense = stream.dense_cycles(plan, pas, sides[pas], arch, input_grad_lowering="phase")
            timing = replace(timing, dense_cycles=dense)
        lowered = whole[pas]
        traffic = pass_traffic(layer, pas, scheduled, mm, fp)
        dense_traffic = pass_traffic(layer, pas, (), mm.dense(), dense_fp)
        bn = batchnorm_elements * mm.element_bits // 8
        row = result_row(network, sparsity, spec.kind, lowered, timing, effectual, arch, {
            "weight_sparsity": sparsity_of(counted, "weight"),
            "scheduled_sparsity": sparsity_of(counted, lowered.scheduled_tensor),
            "broadcast_sparsity": sparsity_of(counted, lowered.broadcast_tensor)},
            traffic, dense_traffic, bn if pas == "forward" else 0)
        row.update(energy_columns(energy, lowered, timing, row["scheduled_sparsity"], traffic, dense_traffic,
                                  arch, memory))
        row["_order"] = (0, index, 0) if pas == "forward" else (1, -index, pas == "weight_grad")
        row["_work"] = PassWork(timing.cycles, traffic.read_bytes, traffic.write_bytes, traffic.tiles)
        row["_dense_work"] = PassWork(timing.dense_cycles, dense_traffic.read_bytes,
                                      dense_traffic.write_bytes, dense_traffic.tiles)
        rows.append(row)
    return rows


def simulate_layers(layers: Iterable, arch: Architecture, plan: PassPlan, network: str,
                    sparsity: float, memory: Memory, batchnorm_elements: dict | None = None,
                    workers: int = 1, chunk_bytes: int = CHUNK_BYTES,
                    chunk_samples: int | None = None, energy: EnergyTable | None = None) -> list[dict]:
    """One result row per (layer, pass) of one workload point, with DRAM traffic and
    memory stalls (`simulate_points` with one point).

    `batchnorm_elements`: layer name -> elements of the batch-norm input that follows it."""
    return simulate_points([(network, sparsity, layers, batchnorm_elements or {})], arch, plan, memory,
                           workers, chunk_bytes, chunk_samples, energy=energy)[0]


def simulate_points(points: Iterable, arch: Architecture, plan: PassPlan, memory: Memory,
                    workers: int = 1, chunk_bytes: int = CHUNK_BYTES, chunk_samples: int | None = None,
                    on_layer: Callable[[int], None] | None = None,
                    energy: EnergyTable | None = None) -> list[list[dict]]:
    """The rows of each workload point, (network, sparsity, layers, batch-norm elements
    after each layer), in order. Layers are simulated (`layer_rows`, in chunks of
    `chunk_samples` samples or of `chunk_bytes` of streams) by `workers` threads at once
    (the kernels release the GIL); a point's memory timing (`time_iteration`) runs on
    them too, while the next point's layers go on. At most `workers` + 1 layers are in
    flight, so at most that many are in memory at once. Results do not depend on
    `workers` or the chunks. `on_layer(point)` is called as each layer finishes."""
    mm = memory_model(memory, arch.frontend)
    cancel = threading.Event()

    def tasks():  # (point, layer task or None at the point's end)
        for p, (network, sparsity, layers, bns) in enumerate(points):
            for index, layer in enumerate(layers):
                yield p, (layer, index, arch, plan, network, sparsity, mm, bns.get(layer.spec.name, 0),
                          chunk_bytes, chunk_samples, cancel, memory, energy)
            yield p, None

    if workers <= 1:
        rows: list[list[dict]] = []
        for p, task in tasks():
            if p == len(rows):
                rows.append([])
            if task is None:
                rows[p] = time_iteration(rows[p], memory, arch)
            else:
                rows[p].extend(layer_rows(*task))
                if on_layer:
                    on_layer(p)
        return rows
    pool = ThreadPoolExecutor(workers, thread_name_prefix="accelsim-simulate")
    pending: deque = deque()
    collected: list[list[dict]] = []
    timed = []

    def take() -> None:
        p, future = pending.popleft()
        if p == len(collected):
            collected.append([])
        if future is None:  # the point is complete: time it on the pool
            timed.append(pool.submit(time_iteration, collected[p], memory, arch))
        else:
            collected[p].extend(future.result())
            if on_layer:
                on_layer(p)

    try:
        for p, task in tasks():
            pending.append((p, None if task is None else pool.submit(layer_rows, *task)))
            while len([f for _, f in pending if f is not None]) > workers:
                take()
        while pending:
            take()
        return [f.result() for f in timed]
    except BaseException:  # Ctrl-C or an error: the workers stop within a chunk
        cancel.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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
            if not plan.applies(pas, index):
                continue
            if arch.bit_serial:
                yield check_serial_layer(layer, lambda q: plan.lower(q, pas, arch.lanes, index), pas, arch)
            else:
                yield recompute(plan.lower(layer, pas, arch.lanes, index), arch, reference(layer, pas))
