"""The streamed simulation of one pass on a bit-serial back-end (TCLp, TCLe; units: cycles).

`streaming.py` simulates a layer chunk by chunk on zero patterns; a bit-serial back-end
needs more: what each broadcast value costs (bitserial.py). So its layers are
`CodedLayer`s: every tensor quantised to `bits` with its whole tensor's scale
(quantize.py) and turned into per-value costs (uint8, 0 exactly where the value is
zero), which lowering moves like values. The scheduled operand's zero pattern is the
costs' `!= 0`. The part states below mirror streaming.py's three, with every cycle
costed against the window groups (`bitserial.group_max`) of the broadcast operand:

- kernel scheduled: the kernel's units are scheduled again for each chunk, against the
  chunk's complete window groups; a window group cut by a chunk waits for the next;
- input scheduled: the broadcast kernel's window groups (groups of `columns` kernel
  rows) are fixed; each complete unit of windows is scheduled against all of them;
- weight gradient: `bitserial.SerialStream` carries the cut reduction like
  `StreamSchedule`, with the last h steps' costs.

Timing (`PassTiming`): `cycles` the bit-serial cycles, tiles combined as on the
bit-parallel array (array.py); `dense_cycles` the bit-parallel dense array of the same
peak (columns / bits windows per cycle), which speedups are measured against;
`ideal_cycles` the work bound: every multiplier lane of every column busy on a bit (or
term) its value needs, every cycle: per filter lane, ceil(the costs summed over its
non-zeros and every window / (lanes x columns)), combined over tiles like the cycles;
`bound_cycles` = bits x the front-end's dense cycles at these columns, the bit-serial
dense bound that `cycles` never exceeds; `serial_steps` the busy multiplier
lane-cycles (one bit or term of one value each), for the energy model.
"""

from __future__ import annotations

import numpy as np

from .array import PassTiming, _units, combine_units, effectual_macs, schedule_offsets, unit_ideal, whole_units
from .bitserial import SerialStream, frames, own_costs, serial_units, value_costs
from .config import Architecture
from .lowering import LoweredPart
from .quantize import scale_for, quantize
from .trace import TraceLayer

TENSORS = ("weight", "input", "input_saved", "grad_output")
BLOCK = 1 << 20  # values quantised at once


class CodedLayer:
    """`layer` (a `TraceLayer` of values) as bit-serial costs for `backend` at `bits`:
    each tensor quantised with its own whole-tensor scale and sign (`scales`, `signed`),
    then `bitserial.value_costs`. Duck-types the sources of `streaming.LayerStream`."""

    coded = True

    def __init__(self, layer: TraceLayer, backend: str, bits: int, trailing: bool = False):
        self.layer, self.backend, self.bits, self.trailing = layer, backend, bits, trailing
        self.spec = layer.spec
        self.scales, self.signed = {}, {}
        for name in TENSORS:
            x = getattr(layer, name)
            if x is not None and not (name == "input_saved" and layer.saved_is_input):
                magnitude = float(np.max(np.abs(x))) if x.size else 0.0
                self.scales[name] = scale_for(magnitude, bits)
                self.signed[name] = bool(x.size and np.min(x) < 0)
        self.weight = self._costs("weight", layer.weight)

    @property
    def batch(self) -> int:
        return self.layer.batch

    @property
    def saved_is_input(self) -> bool:
        return self.layer.saved_is_input

    def _costs(self, name: str, x: np.ndarray | None) -> np.ndarray | None:
        """The costs of `x`, quantised in blocks of BLOCK values (quantize's float64
        temporaries stay small whatever the chunk)."""
        if x is None:
            return None
        flat = x.reshape(-1)
        out = np.empty(flat.size, dtype=np.uint16 if self.trailing else np.uint8)
        for start in range(0, flat.size, BLOCK):
            q = quantize(flat[start:start + BLOCK], self.bits, self.scales[name]).values
            out[start:start + BLOCK] = value_costs(q, self.backend, self.signed[name], self.trailing, self.bits)
        return out.reshape(x.shape)

    def samples(self, start: int, stop: int) -> TraceLayer:
        """Samples [start, stop) as a `TraceLayer` of uint8 costs."""
        sub = self.layer.samples(start, stop)
        x = self._costs("input", sub.input)
        saved = x if self.saved_is_input else self._costs("input_saved", sub.input_saved)
        return TraceLayer(self.spec, self.weight, x, saved, self._costs("grad_output", sub.grad_output))


def _nonzero(costs: np.ndarray) -> np.ndarray:
    return (costs != 0).view(np.uint8)


def _counts(costs: np.ndarray) -> np.ndarray:
    return (costs != 0).sum(axis=1, dtype=np.int64)


def _group_sizes(windows: int, columns: int) -> np.ndarray:
    """Windows in each window group of `windows` (the last may be partial)."""
    sizes = np.full(-(-windows // columns), columns, dtype=np.int64)
    if windows % columns:
        sizes[-1] = windows % columns
    return sizes


class _Totals:
    """A part's bit-serial cycles from per-unit costs [U, WG] of whole filter groups:
    lockstep, the maximum over each filter group's tiles summed; decoupled, each tile's
    own total; and the busy lane-cycles times the windows of each window group."""

    def __init__(self, arch: Architecture):
        self.arch = arch
        self.lockstep, self.tiles, self.serial_steps = 0, np.zeros(arch.tiles, dtype=np.int64), 0

    def add(self, cycles: np.ndarray, lane_cycles: np.ndarray, sizes: np.ndarray, steps: int) -> None:
        """Add whole filter groups' unit costs; a missing tile of a filter group streams the
        window through in ceil(steps / (h+1)) one-cycle steps in lockstep (as array.py)."""
        tiles = self.arch.tiles
        units, groups = cycles.shape
        idle = -(-steps // (self.arch.frontend.lookahead + 1))
        for pad, lockstep in ((idle, True), (0, False)):
            padded = np.full((-(-units // tiles) * tiles, groups), pad, dtype=np.int64)
            padded[:units] = cycles
            per = padded.reshape(-1, tiles, groups)
            if lockstep:
                self.lockstep += int(per.max(axis=1).sum())
            else:
                self.tiles += per.sum(axis=(0, 2))
        self.serial_steps += int((lane_cycles * sizes[None, :]).sum())

    def timing(self, row_work: list[np.ndarray], filters: int, steps: int, windows: int) -> PassTiming:
        """The part's `PassTiming`; `row_work` per convolution group [F]: each scheduled
        row's costs summed over its non-zeros and every window (`_row_work`)."""
        a = self.arch
        front = combine_units(None, [np.zeros(0, dtype=np.int64)] * len(row_work), filters, steps, windows, a)
        ideals = [unit_ideal(w, a.rows, a.lanes * a.columns) for w in row_work]
        ideal = combine_units(None, ideals, filters, steps, 1, a).ideal_cycles  # already over every window
        per_group = front.dense_cycles // front.window_groups if front.window_groups else 0
        dense = per_group * -(-windows // a.parallel_columns)
        cycles = self.lockstep if a.lockstep else int(self.tiles.max())
        return PassTiming(cycles, dense, ideal, front.filter_groups, front.window_groups,
                          bound_cycles=a.bits * front.dense_cycles, serial_steps=self.serial_steps)


def _row_work(nonzero: np.ndarray, slot_costs: np.ndarray) -> np.ndarray:
    """Per scheduled row (nonzero [F, S, L]), its slots' costs summed over the windows
    (slot_costs [S, L]) where it has a non-zero: the bits or terms its multiplications need."""
    return np.einsum("fsl,sl->f", nonzero, slot_costs, dtype=np.int64)


def _slot_costs(costs: np.ndarray, arch: Architecture) -> np.ndarray:
    """[G, W, S, L] costs -> [G, S, L]: each value's own cycles summed over the windows."""
    return own_costs(costs, arch.trailing_zeros, arch.bits).sum(axis=1)


def _frames(costs: np.ndarray, arch: Architecture) -> tuple[np.ndarray, np.ndarray]:
    return frames(costs, arch.columns, arch.trailing_zeros)


class SerialKernelScheduled:
    """The kernel scheduled (forward, input gradient): see the module docstring."""

    def __init__(self, arch: Architecture, schedule: bool = True):
        self.arch, self.offsets = arch, schedule_offsets(arch)
        self.units = self.pending = self.kernel_counts = self.input_counts = None
        self.totals, self.windows = _Totals(arch), 0

    def add(self, part: LoweredPart, last: bool) -> None:
        a, fe = self.arch, self.arch.frontend
        if self.units is None:
            kernel = _nonzero(part.kernel_op())
            self.units = [_units(k, a.rows) for k in kernel]
            self.kernel_counts = kernel.sum(axis=1, dtype=np.int64)
            self.filters, self.steps = kernel.shape[1], kernel.shape[2]
            self.slot_costs = np.zeros((kernel.shape[0],) + kernel.shape[2:], dtype=np.int64)
        costs = part.input_op()
        self.slot_costs += _slot_costs(costs, a)
        self.windows += costs.shape[1]
        counts = _counts(costs)
        self.input_counts = counts if self.input_counts is None else self.input_counts + counts
        if self.pending is not None:
            costs = np.concatenate([self.pending, costs], axis=1)
        cut = costs.shape[1] if last else costs.shape[1] - costs.shape[1] % a.columns
        self.pending = costs[:, cut:].copy() if cut < costs.shape[1] else None
        if cut:
            hi, lo = _frames(costs[:, :cut], a)
            sizes = _group_sizes(cut, a.columns)
            for g, units in enumerate(self.units):
                self.totals.add(*serial_units(units, hi[g], self.offsets, fe.lookahead, fe.scheduler,
                                              lo[g], a.bits), sizes, self.steps)

    def finish(self) -> tuple[PassTiming, int]:
        work = [_row_work(u.reshape(-1, *u.shape[2:])[:self.filters], c) for u, c in zip(self.units, self.slot_costs)]
        timing = self.totals.timing(work, self.filters, self.steps, self.windows)
        return timing, effectual_macs(self.kernel_counts, self.input_counts)


class SerialInputScheduled:
    """The input scheduled (forward, input gradient): units of `rows` windows in order,
    each costed against the broadcast kernel's window groups."""

    def __init__(self, arch: Architecture, schedule: bool = True):
        self.arch, self.offsets = arch, schedule_offsets(arch)
        self.frames = self.kernel_counts = self.input_counts = None
        self.filters = 0

    def _schedule(self, g: int, rows: np.ndarray) -> None:
        fe, r = self.arch.frontend, self.arch.rows
        hi, lo = self.frames
        self.cycles[g].append(serial_units(_units(rows, r), hi[g], self.offsets, fe.lookahead, fe.scheduler,
                                           lo[g], self.arch.bits))
        self.work[g].append(_row_work(rows, self.slot_costs[g]))

    def add(self, part: LoweredPart, last: bool) -> None:
        r = self.arch.rows
        if self.frames is None:
            kernel = part.kernel_op()
            self.kernel_counts, self.n_windows = _counts(kernel), kernel.shape[1]
            self.frames = _frames(kernel, self.arch)
            self.slot_costs = _slot_costs(kernel, self.arch)
            groups = kernel.shape[0]
            self.cycles, self.work = [[] for _ in range(groups)], [[] for _ in range(groups)]
            self.carry = [None] * groups
        costs = part.input_op()
        nz = _nonzero(costs)
        self.steps, self.filters = nz.shape[2], self.filters + nz.shape[1]
        counts = _counts(costs)
        self.input_counts = counts if self.input_counts is None else self.input_counts + counts
        for g in range(nz.shape[0]):
            ready, self.carry[g] = whole_units(self.carry[g], nz[g], r, last)
            for rows in ready:
                self._schedule(g, rows)

    def finish(self) -> tuple[PassTiming, int]:
        totals = _Totals(self.arch)
        sizes = _group_sizes(self.n_windows, self.arch.columns)
        for pieces in self.cycles:
            totals.add(np.concatenate([c for c, _ in pieces]), np.concatenate([lc for _, lc in pieces]), sizes,
                       self.steps)
        work = [np.concatenate(w) for w in self.work]
        timing = totals.timing(work, self.filters, self.steps, self.n_windows)
        return timing, effectual_macs(self.kernel_counts, self.input_counts)


class SerialReductionScheduled:
    """The weight gradient: both operands stream the reduction, cut by the chunks."""

    def __init__(self, arch: Architecture, schedule: bool, scheduled: str):
        self.arch, self.scheduled = arch, scheduled
        self.streams = self.row_work = None
        self.steps = self.effectual = 0

    def add(self, part: LoweredPart, last: bool) -> None:
        k, i = part.kernel_op(), part.input_op()
        sched, bcast = (k, i) if self.scheduled == "kernel" else (i, k)
        a, fe = self.arch, self.arch.frontend
        nz = _nonzero(sched)
        groups, filters = nz.shape[:2]
        if self.streams is None:
            units, self.n_windows = -(-filters // a.rows), bcast.shape[1]
            wg = -(-self.n_windows // a.columns)
            self.streams = [SerialStream(units, a.rows, a.lanes, wg, schedule_offsets(a), fe.lookahead,
                                         fe.scheduler, a.trailing_zeros, a.bits) for _ in range(groups)]
            self.row_work = np.zeros((groups, filters), dtype=np.int64)
        self.steps += nz.shape[2]
        (hi, lo), slot_costs = _frames(bcast, a), _slot_costs(bcast, a)
        for g in range(groups):
            self.streams[g].feed(_units(nz[g], a.rows), hi[g], final=last, lows=lo[g])
            self.row_work[g] += _row_work(nz[g], slot_costs[g])
        self.effectual += effectual_macs(nz.sum(axis=1, dtype=np.int64), _counts(bcast))

    def finish(self) -> tuple[PassTiming, int]:
        a = self.arch
        totals = _Totals(a)
        sizes = _group_sizes(self.n_windows, a.columns)
        for s in self.streams:
            totals.add(s.cycles, s.lane_cycles, sizes, self.steps)
        return totals.timing(list(self.row_work), self.row_work.shape[1], self.steps, self.n_windows), \
            self.effectual


def evaluate_serial(lowered, arch: Architecture) -> tuple[PassTiming, int]:
    """The whole-pass bit-serial timing of `lowered` (a `LoweredPass` of costs), and its
    effectual MACs: the reference the streamed states are tested against."""
    fe, total, effectual = arch.frontend, None, 0
    for part in lowered.parts:
        sched, bcast = lowered.operands(part)
        nz = _nonzero(sched)
        totals = _Totals(arch)
        hi, lo = _frames(bcast, arch)
        sizes = _group_sizes(bcast.shape[1], arch.columns)
        for g in range(nz.shape[0]):
            totals.add(*serial_units(_units(nz[g], arch.rows), hi[g], schedule_offsets(arch),
                                     fe.lookahead, fe.scheduler, lo[g], arch.bits), sizes, nz.shape[2])
        slot_costs = _slot_costs(bcast, arch)
        work = [_row_work(nz[g], slot_costs[g]) for g in range(nz.shape[0])]
        timing = totals.timing(work, nz.shape[1], nz.shape[2], bcast.shape[1])
        total = timing if total is None else total + timing
        effectual += effectual_macs(nz.sum(axis=1, dtype=np.int64), _counts(bcast))
    return total, effectual
