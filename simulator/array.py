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
    pass (input-gradient phases) run one after another, so their timings add."""

    cycles: int
    dense_cycles: int
    ideal_cycles: int
    filter_groups: int
    window_groups: int

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


def time_streams(nonzero: np.ndarray, n_windows: int, arch: Architecture,
                 keep_schedule: bool = False, schedule: bool = True):
    """Cycle counts of scheduled streams `nonzero` (bool [G, F, S, L]) broadcast against
    `n_windows` windows per group; with `keep_schedule` also the `TileSchedule`.
    `schedule=False` skips the scheduler (cycles = 0): dense and ideal counts only."""
    fe = arch.frontend
    offsets = search_order(connectivity(fe, arch.lanes), fe.scheduler)
    h = fe.lookahead
    groups, filters, steps, lanes = nonzero.shape
    per_array = arch.tiles * arch.rows
    filter_groups = -(-filters // per_array)
    window_groups = -(-n_windows // arch.columns)
    cycles = ideal = 0
    tile_cycles = np.zeros(arch.tiles, dtype=np.int64)  # decoupled tiles: each its own total
    tile_ideal = np.zeros(arch.tiles, dtype=np.int64)
    record = TileSchedule([], [], [])
    for g in range(groups):
        if schedule:
            out = schedule_tiles(_units(nonzero[g], arch.rows), offsets, h, keep_schedule, fe.scheduler)
            if keep_schedule:
                out, sources, bases = out
                record.sources.append(sources)
                record.bases.append(bases)
                record.cycles.append(out)
            # in lockstep, a tile with no filters still streams the window through:
            # ceil(S / (h+1)) cycles, never more than a tile with filters
            per_tile = _per_tile(out, arch.tiles, filter_groups, -(-steps // (h + 1)))
            cycles += int(per_tile.max(axis=1).sum())
            tile_cycles += _per_tile(out, arch.tiles, filter_groups, 0).sum(axis=0)
        nnz = nonzero[g].sum(axis=(1, 2))
        lane_ideal = np.zeros(filter_groups * per_array, dtype=np.int64)
        lane_ideal[:filters] = -(-nnz // lanes)
        unit_ideal = lane_ideal.reshape(filter_groups, arch.tiles, arch.rows).max(axis=2)
        ideal += int(unit_ideal.max(axis=1).sum())
        tile_ideal += unit_ideal.sum(axis=0)
    if not arch.lockstep:
        cycles, ideal = int(tile_cycles.max()), int(tile_ideal.max())
    dense = groups * filter_groups * steps
    timing = PassTiming(cycles=cycles * window_groups, dense_cycles=dense * window_groups,
                        ideal_cycles=ideal * window_groups, filter_groups=groups * filter_groups,
                        window_groups=window_groups)
    return (timing, record) if keep_schedule else timing
