"""The streamed simulation of one layer: batch chunk by batch chunk, memory bounded by a chunk.

What `run` reports depends only on which values are zero, and every pass of a layer
splits along the batch. So a layer is simulated in chunks of whole samples, each chunk
lowered (`lowering.py`) as uint8 zero patterns (one byte per stream element, not four),
and what the chunks add up to equals what the whole batch gives (tests/test_streaming.py
checks every pass, operand and lowering at several chunk sizes against `simulate.evaluate`):

- kernel scheduled, forward or input gradient: the scheduled operand (W) does not depend
  on the batch. It is scheduled once, for one window group; the chunks add their windows
  (the number of window groups follows) and their broadcast non-zeros per (group, step,
  lane), which give the effectual MACs.
- input scheduled, forward or input gradient: the windows are the scheduled filters.
  A chunk's windows follow the last chunk's in the order of the whole pass, so its units
  of `rows` windows are the whole pass's units; a chunk's last, incomplete unit is
  completed by the next chunk's first windows.
- weight gradient: both operands stream the reduction over N*Ho*Wo positions, which a
  chunk of samples cuts along the steps. `scheduler.StreamSchedule` carries each unit's
  unfinished steps across the cut. A chunk holds a multiple of lanes / gcd(Ho*Wo, lanes)
  samples, so every cut falls between two steps (the last chunk takes the rest).

The layer's tensor footprints (`traffic.LayerFootprints`) are counted over the same
chunks: non-zeros add up, the rle zero-run count carries the open run across a cut.

Chunk sizes: as many samples as keep the largest pass's two operands of one chunk within
`chunk_bytes` (default CHUNK_BYTES) of uint8 streams, at least one sample (and the weight
gradient's alignment). Units: samples, bytes, cycles, MACs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .array import (PassTiming, _units, combine_units, effectual_macs, schedule_offsets, time_streams, unit_ideal,
                    whole_units)
from .config import Architecture
from .footprint import pass_operand_elements
from .formats import Footprint, count_runs_from, coordinate_view, footprint
from .lowering import LoweredPart, LoweredPass, choose_operand, lowered_pass, uses_space_to_depth
from .scheduler import StreamSchedule, schedule_tiles
from .serial_streaming import SerialInputScheduled, SerialKernelScheduled, SerialReductionScheduled
from .trace import TraceLayer

CHUNK_BYTES = 48 << 20  # uint8 stream bytes of one chunk's largest pass (both operands)


def chunk_size(spec, batch: int, arch: Architecture, plan, index: int, chunk_bytes: int = CHUNK_BYTES,
               chunk_samples: int | None = None) -> int:
    """Samples per chunk of the layer `spec`: `chunk_samples` if given, else as many as fit
    `chunk_bytes` (at least one); rounded up to the weight gradient's alignment,
    lanes / gcd(Ho*Wo, lanes) samples; at most the batch."""
    lanes = arch.lanes
    if chunk_samples is None:
        per_sample = max(pass_operand_elements(
            spec, p, 1, lanes, plan.lowering.input_grad_lowering,
            uses_space_to_depth(plan.lowering, spec, p, index == 0)) for p in plan.passes)
        chunk_samples = max(1, chunk_bytes // max(1, per_sample))
    if "weight_grad" in plan.passes:
        positions = spec.out_hw[0] * spec.out_hw[1] if spec.kind == "conv" else 1
        align = lanes // math.gcd(positions, lanes)
        chunk_samples = -(-chunk_samples // align) * align
    return max(1, min(chunk_samples, batch))


def chunk_bounds(spec, batch: int, arch: Architecture, plan, index: int,
                 chunk_bytes: int = CHUNK_BYTES, chunk_samples: int | None = None) -> list[tuple[int, int]]:
    """The chunks [start, stop) of samples the layer `spec` is simulated in (`chunk_size`)."""
    step = chunk_size(spec, batch, arch, plan, index, chunk_bytes, chunk_samples)
    return [(start, min(start + step, batch)) for start in range(0, batch, step)]


def zero_pattern(t: np.ndarray | None) -> np.ndarray | None:
    """A tensor's zero pattern as uint8 0/1: a bool tensor (a `SyntheticLayer`'s) viewed,
    any other compared with zero. Values are not cast first: a float64 value too small for
    float32 is the non-zero it is."""
    if t is None:
        return None
    return (t if t.dtype == np.bool_ else t != 0).view(np.uint8)


def pattern_layer(layer: TraceLayer, weight: np.ndarray) -> TraceLayer:
    """`layer` with every tensor replaced by its zero pattern (`weight`: the weight's).
    Its lowered streams are then zero patterns too: lowering only moves values."""
    x = zero_pattern(layer.input)
    saved = x if layer.saved_is_input else zero_pattern(layer.input_saved)
    return TraceLayer(layer.spec, weight, x, saved, zero_pattern(layer.grad_output))


def layer_footprints(source, chunks: list[tuple[int, int]], run_bits: int) -> dict:
    """Footprints of the layer's stored tensors counted chunk by chunk, plus
    'saved_copy': whether the saved input is a tensor of its own (`traffic.LayerFootprints`)."""
    tensors = ("input", "grad_output") if source.saved_is_input else ("input", "input_saved", "grad_output")
    counts = {t: [0, 0, 0] for t in tensors}  # non-zeros, rle fillers, open zero run
    present = dict.fromkeys(tensors, True)
    saved_equal = True
    for start, stop in chunks:
        sub = source.samples(start, stop)
        for t in tensors:
            values = getattr(sub, t)
            if values is None:
                present[t] = False
                continue
            nnz, fillers, gap = count_runs_from(values, run_bits, counts[t][2])
            counts[t] = [counts[t][0] + nnz, counts[t][1] + fillers, gap]
        if "input_saved" in tensors and saved_equal and sub.input_saved is not None:
            saved_equal = np.array_equal(sub.input_saved, sub.input)
    spec, n = source.spec, source.batch
    shapes = {"input": spec.input_shape(n), "input_saved": spec.input_shape(n),
              "grad_output": spec.output_shape(n)}
    out = {"weight": footprint(source.weight, "weight", run_bits)}
    for t in tensors:
        if present[t]:
            rows, cols = coordinate_view(shapes[t], "activation")
            out[t] = Footprint(int(np.prod(shapes[t])), counts[t][0], rows, cols, run_bits, counts[t][1])
    if source.saved_is_input:
        out["input_saved"] = out["input"]
    out["saved_copy"] = not source.saved_is_input and present.get("input_saved", False) and not saved_equal
    return out


def sparsity_of(footprints: dict, tensor: str) -> float:
    """A tensor's fraction of zeros from its footprint (as `lowering.tensor_sparsity`)."""
    f = footprints.get(tensor)
    return float(1.0 - f.nonzeros / f.elements) if f is not None and f.elements else 0.0


def _counts(nonzero: np.ndarray) -> np.ndarray:
    """Non-zeros per (group, step, lane) over an operand's rows."""
    return nonzero.sum(axis=1, dtype=np.int64)


class _KernelScheduled:
    """A part whose scheduled operand, the kernel, is the same for every chunk."""

    def __init__(self, arch: Architecture, schedule: bool):
        self.arch, self.schedule = arch, schedule
        self.base = self.kernel_counts = self.input_counts = None
        self.windows = 0

    def add(self, part: LoweredPart, last: bool) -> None:
        if self.base is None:
            nz = part.kernel_op()
            self.base = time_streams(nz, 1, self.arch, schedule=self.schedule)  # one window group
            self.kernel_counts = _counts(nz)
        nz = part.input_op()
        self.windows += nz.shape[1]
        counts = _counts(nz)
        self.input_counts = counts if self.input_counts is None else self.input_counts + counts

    def finish(self) -> tuple[PassTiming, int]:
        wg = -(-self.windows // self.arch.columns)
        b = self.base
        timing = PassTiming(b.cycles * wg, b.dense_cycles * wg, b.ideal_cycles * wg, b.filter_groups, wg)
        return timing, effectual_macs(self.kernel_counts, self.input_counts)


class _InputScheduled:
    """A part whose scheduled operand is the input: its rows (windows) arrive chunk by
    chunk, in order; units of `rows` windows are scheduled as soon as they are complete."""

    def __init__(self, arch: Architecture, schedule: bool):
        self.arch, self.schedule, self.offsets = arch, schedule, schedule_offsets(arch)
        self.kernel_counts = self.input_counts = None
        self.cycles, self.ideals, self.carry = [], [], []
        self.filters = self.steps = self.n_windows = 0

    def _units(self, g: int, rows: np.ndarray) -> None:
        fe, r = self.arch.frontend, self.arch.rows
        if self.schedule:
            self.cycles[g].append(schedule_tiles(_units(rows, r), self.offsets, fe.lookahead, False,
                                                 fe.scheduler))
        self.ideals[g].append(unit_ideal(rows.sum(axis=(1, 2), dtype=np.int64), r, self.arch.lanes))

    def add(self, part: LoweredPart, last: bool) -> None:
        r = self.arch.rows
        if self.kernel_counts is None:
            kernel = part.kernel_op()
            self.kernel_counts, self.n_windows = _counts(kernel), kernel.shape[1]
            groups = kernel.shape[0]
            self.cycles, self.ideals = [[] for _ in range(groups)], [[] for _ in range(groups)]
            self.carry = [None] * groups
        nz = part.input_op()
        self.steps, self.filters = nz.shape[2], self.filters + nz.shape[1]
        counts = _counts(nz)
        self.input_counts = counts if self.input_counts is None else self.input_counts + counts
        for g in range(nz.shape[0]):
            ready, self.carry[g] = whole_units(self.carry[g], nz[g], r, last)
            for rows in ready:
                self._units(g, rows)

    def finish(self) -> tuple[PassTiming, int]:
        cycles = [np.concatenate(c) for c in self.cycles] if self.schedule else None
        ideals = [np.concatenate(i) for i in self.ideals]
        timing = combine_units(cycles, ideals, self.filters, self.steps, self.n_windows, self.arch)
        return timing, effectual_macs(self.kernel_counts, self.input_counts)


class _ReductionScheduled:
    """The weight gradient: both operands stream the reduction, cut by the chunks."""

    def __init__(self, arch: Architecture, schedule: bool, scheduled: str):
        self.arch, self.schedule, self.scheduled = arch, schedule, scheduled
        self.streams, self.row_nonzeros = None, None
        self.steps = self.effectual = self.n_windows = 0

    def add(self, part: LoweredPart, last: bool) -> None:
        k, i = part.kernel_op(), part.input_op()
        sched, bcast = (k, i) if self.scheduled == "kernel" else (i, k)
        arch, fe = self.arch, self.arch.frontend
        groups, filters = sched.shape[:2]
        if self.row_nonzeros is None:
            units = -(-filters // arch.rows)
            self.streams = [StreamSchedule(units, arch.rows, arch.lanes, schedule_offsets(arch), fe.lookahead,
                                           fe.scheduler) for _ in range(groups)]
            self.row_nonzeros = np.zeros((groups, filters), dtype=np.int64)
        self.n_windows = bcast.shape[1]
        self.steps += sched.shape[2]
        for g in range(groups):
            if self.schedule:
                self.streams[g].feed(_units(sched[g], arch.rows), final=last)
            self.row_nonzeros[g] += sched[g].sum(axis=(1, 2), dtype=np.int64)
        self.effectual += effectual_macs(_counts(sched), _counts(bcast))

    def finish(self) -> tuple[PassTiming, int]:
        a = self.arch
        cycles = [s.cycles for s in self.streams] if self.schedule else None
        ideals = [unit_ideal(n, a.rows, a.lanes) for n in self.row_nonzeros]
        return combine_units(cycles, ideals, self.row_nonzeros.shape[1], self.steps, self.n_windows,
                             a), self.effectual


class Cancelled(Exception):
    """The run was stopped (Ctrl-C) while this layer was being simulated."""


@dataclass
class LayerStream:
    """One layer to simulate chunk by chunk: `source` has `spec`, `batch`, `weight`,
    `saved_is_input` and `samples(start, stop)` (a `TraceLayer` or a synthetic layer);
    `index` is its place in the network. Once `cancel` (a threading.Event) is set, the
    next chunk raises `Cancelled`, so a worker thread stops within a chunk."""

    source: object
    index: int
    chunks: list[tuple[int, int]]
    cancel: object = None

    def __post_init__(self):
        self.coded = getattr(self.source, "coded", False)  # bit-serial costs (serial_streaming.py)
        self._weight = self.source.weight if self.coded else zero_pattern(self.source.weight)

    def chunk(self, start: int, stop: int) -> TraceLayer:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(self.source.spec.name)
        sub = self.source.samples(start, stop)
        return sub if self.coded else pattern_layer(sub, self._weight)

    def evaluate(self, plan, pass_name: str, side: str, arch: Architecture,
                 schedule: bool = True, **overrides) -> tuple[PassTiming, int]:
        """(timing, effectual MACs) of `pass_name` with the operand `side` scheduled,
        equal to `simulate.evaluate` of the whole pass."""
        operand = "weights" if side == "kernel" else "activations"
        parts = None
        for c, (start, stop) in enumerate(self.chunks):
            lowered = plan.lower(self.chunk(start, stop), pass_name, arch.lanes, self.index,
                                 operand=operand, **overrides)
            if parts is None:
                reduction, kernel, inputs = ((SerialReductionScheduled, SerialKernelScheduled,
                                              SerialInputScheduled) if self.coded else
                                             (_ReductionScheduled, _KernelScheduled, _InputScheduled))
                parts = [reduction(arch, schedule, side) if pass_name == "weight_grad" else
                         (kernel if side == "kernel" else inputs)(arch, schedule) for _ in lowered.parts]
            for state, part in zip(parts, lowered.parts):
                state.add(part, c == len(self.chunks) - 1)
        total, effectual = PassTiming(0, 0, 0, 0, 0), 0
        for state in parts:
            timing, eff = state.finish()
            total, effectual = total + timing, effectual + eff
        return total, effectual

    def dense_cycles(self, plan, pass_name: str, side: str, arch: Architecture, **overrides) -> int:
        """Dense cycles of a forward or input-gradient pass, from its shapes alone: a part's
        windows grow with the batch, so one sample's lowering gives them."""
        operand = "weights" if side == "kernel" else "activations"
        one = plan.lower(self.chunk(0, 1), pass_name, arch.lanes, self.index, operand=operand, **overrides)
        groups, kernel_rows, _ = one.out_shape
        dense = 0
        for part in one.parts:
            windows = self.source.batch * len(part.input_ids)
            sched, bcast = (kernel_rows, windows) if side == "kernel" else (windows, kernel_rows)
            dense += (groups * -(-sched // (arch.tiles * arch.rows)) * part.steps
                      * -(-bcast // arch.parallel_columns))
        return dense

    def lowered(self, pass_name: str, side: str) -> LoweredPass:
        """The whole pass's `LoweredPass` without parts (its shape, tensor and MACs)."""
        return lowered_pass(self.source.spec, self.source.batch, pass_name, side, [])


def scheduled_side(source, footprints: dict, pass_name: str, choice: str) -> str:
    """`lowering.choose_operand` from the whole layer's counted sparsities."""
    return choose_operand(source, pass_name, choice, lambda t: sparsity_of(footprints, t))

