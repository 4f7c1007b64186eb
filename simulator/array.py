"""Timing of a lowered pass on the PE array (units: cycles, MACs).

A pass may have several parts (input-gradient phases); each is timed as below and
the parts add up. The scheduled operand's rows are the "filters", the broadcast
operand's rows the "windows" (see lowering.py).

Mapping. Filters of one convolution group are dealt to the array's filter lanes in
*filter groups* of tiles x rows: filter j of a group goes to filter group
j // (tiles*rows), tile (j // rows) % tiles, row j % rows. Different convolution
groups read different broadcast values, so they never share a filter group (a
depthwise layer uses one filter lane of the array: honest, and slow). Each filter
group processes the output positions in *window groups* of `columns` windows.

Tiles share the broadcast operand, so they run in lockstep (`architecture.lockstep`,
the default): a (filter group, window group) costs the maximum over its tiles of the
tile's scheduled cycles. The weight schedule does not depend on the window, so every
window group of a filter group costs the same.

- dense_cycles = steps per filter group (no skipping) x filter groups x window groups
- ideal_cycles = max over the group's filter lanes of ceil(nnz / lanes), summed alike
- cycles       = scheduler's cycles, lockstep max over tiles, summed alike
so ideal <= cycles <= dense, and dense / cycles <= h + 1 (the window advances at
most h + 1 steps per cycle; see scheduler.py for the `dnnsim` scheduler's one exception).

`lockstep: false` models decoupled tiles, each streaming the windows through its own
filters at its own pace (an upper bound on what a design with per-tile activation
buffers could reach, for studies): a part costs the maximum over tiles of the tile's
cycles summed over its filter groups (and convolution groups), and the ideal alike
with the tile's own filter lanes. Parts of a pass still run one after another.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np

from .config import Architecture
from .frontend import connectivity, search_order
from .scheduler import schedule_tiles


@dataclass(frozen=True)
class PassTiming:
    """Cycle counts of (part of) one pass of one layer, at the array clock. Parts of a
    pass (input-gradient phases) run one after another, so their timings add.
    `bound_cycles` and `serial_steps` are set by the bit-serial back-ends only
    (serial_streaming.py): the bit-serial dense bound and the busy lane-cycles."""

    cycles: int
    dense_cycles: int
    ideal_cycles: int
    filter_groups: int
    window_groups: int
    bound_cycles: int = 0
    serial_steps: int = 0

    def __add__(self, other: "PassTiming") -> "PassTiming":
        return PassTiming(*(a + b for a, b in zip(astuple(self), astuple(other))))


ZERO = PassTiming(0, 0, 0, 0, 0)


@dataclass
class TileSchedule:
    """The recorded schedule of a part, for the functional check: per convolution
    group, `sources` int64 [units, rows, S, L] and `bases` [units, S] (see scheduler),
    `cycles` [units], with unit = (filter group, tile) and filter f in unit f // rows."""

    sources: list[np.ndarray]
    bases: list[np.ndarray]
    cycles: list[np.ndarray]


def _units(nonzero: np.ndarray, rows: int) -> np.ndarray:
    """[F, S, L] -> [ceil(F/rows), rows, S, L], zero filters padding the last tile."""
    f, s, l = nonzero.shape
    units = -(-f // rows)
    out = np.zeros((units * rows, s, l), dtype=np.uint8)
    out[:f] = nonzero
    return out.reshape(units, rows, s, l)


def _per_tile(per_unit: np.ndarray, tiles: int, filter_groups: int, idle: int) -> np.ndarray:
    """Unit costs as [filter groups, tiles]; missing tiles cost `idle`."""
    padded = np.full(filter_groups * tiles, idle, dtype=np.int64)
    padded[:per_unit.size] = per_unit
    return padded.reshape(filter_groups, tiles)


def whole_units(carry: np.ndarray | None, rows: np.ndarray, r: int, last: bool):
    """Rows arriving chunk by chunk, in order, cut into whole units of `r`: ([pieces of
    whole units to schedule now], the rows left for the next chunk or None). The last
    chunk's unfinished unit completes the carry first; on the `last` chunk the remainder
    is a unit of its own (padded with empty filters by whoever schedules it). The chunk's
    rows are not copied, only the carry."""
    ready = []
    if carry is not None:  # complete the last chunk's unfinished unit first
        take = r - len(carry)
        carry = np.concatenate([carry, rows[:take]])
        rows = rows[take:]
        if len(carry) == r:
            ready.append(carry)
            carry = None
    whole = len(rows) - len(rows) % r
    if whole:
        ready.append(rows[:whole])
    if whole < len(rows):
        carry = rows[whole:].copy() if carry is None else np.concatenate([carry, rows[whole:]])
    if last and carry is not None:
        ready.append(carry)
        carry = None
    return ready, carry


def unit_ideal(row_nonzeros: np.ndarray, rows: int, lanes: int) -> np.ndarray:
    """Per unit (`rows` consecutive filters), the ideal cycles: the max over its filter
    lanes of ceil(non-zeros / lanes); `row_nonzeros` [F]."""
    units = -(-row_nonzeros.size // rows)
    lane = np.zeros(units * rows, dtype=np.int64)
    lane[:row_nonzeros.size] = -(-row_nonzeros // lanes)
    return lane.reshape(units, rows).max(axis=1) if units else lane


def combine_units(unit_cycles: list[np.ndarray] | None, unit_ideals: list[np.ndarray], filters: int,
                  steps: int, n_windows: int, arch: Architecture) -> PassTiming:
    """A part's timing from its per-unit costs, one array per convolution group: the
    lockstep maximum over the tiles of each filter group (or, decoupled, each tile's own
    total), times the window groups. `unit_cycles` None: the scheduler was not run
    (cycles = 0). A missing tile of a filter group streams the window through in
    ceil(steps / (h+1)) cycles in lockstep (never more than a tile with filters)."""
    groups = len(unit_ideals)
    filter_groups = -(-filters // (arch.tiles * arch.rows))
    window_groups = -(-n_windows // arch.columns)
    idle = -(-steps // (arch.frontend.lookahead + 1))
    cycles = ideal = 0
    tile_cycles = np.zeros(arch.tiles, dtype=np.int64)  # decoupled tiles: each its own total
    tile_ideal = np.zeros(arch.tiles, dtype=np.int64)
    for g in range(groups):
        if unit_cycles is not None:
            cycles += int(_per_tile(unit_cycles[g], arch.tiles, filter_groups, idle).max(axis=1).sum())
            tile_cycles += _per_tile(unit_cycles[g], arch.tiles, filter_groups, 0).sum(axis=0)
        per_tile = _per_tile(unit_ideals[g], arch.tiles, filter_groups, 0)
        ideal += int(per_tile.max(axis=1).sum())
        tile_ideal += per_tile.sum(axis=0)
    if not arch.lockstep:
        cycles, ideal = (int(tile_cycles.max()) if unit_cycles is not None else 0), int(tile_ideal.max())
    dense = groups * filter_groups * steps
    return PassTiming(cycles=cycles * window_groups, dense_cycles=dense * window_groups,
                      ideal_cycles=ideal * window_groups, filter_groups=groups * filter_groups,
                      window_groups=window_groups)


def schedule_offsets(arch: Architecture) -> np.ndarray:
    """The front-end's connectivity offsets in its scheduler's priority order."""
    return search_order(connectivity(arch.frontend, arch.lanes), arch.frontend.scheduler)


def effectual_macs(scheduled_counts: np.ndarray, broadcast_counts: np.ndarray) -> int:
    """MACs with both operands non-zero, from each operand's non-zeros per (group, step,
    lane) summed over its rows: per group and slot, scheduled x broadcast non-zeros."""
    return int(np.einsum("gsl,gsl->", scheduled_counts, broadcast_counts))


def time_streams(nonzero: np.ndarray, n_windows: int, arch: Architecture,
                 keep_schedule: bool = False, schedule: bool = True):
    """Cycle counts of scheduled streams `nonzero` (bool [G, F, S, L]) broadcast against
    `n_windows` windows per group; with `keep_schedule` also the `TileSchedule`.
    `schedule=False` skips the scheduler (cycles = 0): dense and ideal counts only."""
    fe = arch.frontend
    offsets = schedule_offsets(arch)
    groups, filters, steps, lanes = nonzero.shape
    unit_cycles, unit_ideals = [], []
    record = TileSchedule([], [], [])
    for g in range(groups):
        if schedule:
            out = schedule_tiles(_units(nonzero[g], arch.rows), offsets, fe.lookahead, keep_schedule,
                                 fe.scheduler)
            if keep_schedule:
                out, sources, bases = out
                record.sources.append(sources)
                record.bases.append(bases)
                record.cycles.append(out)
            unit_cycles.append(out)
        unit_ideals.append(unit_ideal(nonzero[g].sum(axis=(1, 2), dtype=np.int64), arch.rows, lanes))
    timing = combine_units(unit_cycles if schedule else None, unit_ideals, filters, steps, n_windows, arch)
    return (timing, record) if keep_schedule else timing
