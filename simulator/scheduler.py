"""Greedy lookahead/lookaside scheduler for one tile of the array (units: steps, cycles).

A tile has R filter lanes; each holds its scheduled-operand stream as a matrix of
S steps x L weight lanes (a True in `nonzero` is a value that must be multiplied).
All filter lanes of a tile see the same broadcast window, so they advance together.

One cycle at window base t0, for every filter lane r and weight lane l, in order
r = 0.., l = 0..: if slot (t0, l) still holds its non-zero, it executes in place;
otherwise the first (dt, dl) of the connectivity set whose slot
(t0 + dt, (l + dl) mod L) still holds a non-zero lends it (the value keeps its
original slot, so the multiplier reads the broadcast value of that slot).
Then the window advances past steps that are now empty for every filter lane of
the tile, skipping at most h in a row: t0 moves forward by 1..h+1 steps. The tile
is done when t0 passes the last step; its cost is the number of cycles executed.
So a tile never takes fewer than ceil(S / (h + 1)) cycles, and with h = 0 (no
front-end) it takes exactly S: the dense array.

`schedule_tiles` is the numba kernel used by the simulator; `schedule_tile_reference`
is the same algorithm in plain Python, kept for the tests, which compare the two
exactly. Schedules are recorded as, per cycle, the window base and, per (filter lane,
weight lane), the flat original slot t * L + l of the value multiplied (-1: idle).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _schedule_one(nonzero, offsets, lookahead, source, base):
    """Schedule one tile in place. nonzero: uint8 [R, S, L] (consumed: entries are
    cleared as they execute). Writes source[R, S, L] and base[S]; returns cycles."""
    rows, steps, lanes = nonzero.shape
    remaining = np.zeros(steps, dtype=np.int64)  # non-zeros left per step, all filter lanes
    for r in range(rows):
        for t in range(steps):
            for l in range(lanes):
                remaining[t] += nonzero[r, t, l]
    t0 = 0
    cycles = 0
    while t0 < steps:
        base[cycles] = t0
        for r in range(rows):
            for l in range(lanes):
                slot = -1
                if nonzero[r, t0, l]:
                    nonzero[r, t0, l] = 0
                    remaining[t0] -= 1
                    slot = t0 * lanes + l
                else:
                    for k in range(offsets.shape[0]):
                        t = t0 + offsets[k, 0]
                        if t >= steps:
                            continue
                        src = (l + offsets[k, 1]) % lanes
                        if nonzero[r, t, src]:
                            nonzero[r, t, src] = 0
                            remaining[t] -= 1
                            slot = t * lanes + src
                            break
                source[r, cycles, l] = slot
        cycles += 1
        nxt = t0 + 1
        while nxt < steps and remaining[nxt] == 0 and nxt - t0 <= lookahead:
            nxt += 1
        t0 = nxt
    return cycles


@numba.njit(cache=True, nogil=True)
def _schedule_units(nonzero, offsets, lookahead, keep, sources, bases):
    units, rows, steps, lanes = nonzero.shape
    cycles = np.zeros(units, dtype=np.int64)
    scratch = np.empty((rows, steps, lanes), dtype=np.uint8)
    for u in range(units):
        scratch[:] = nonzero[u]
        k = u if keep else 0
        cycles[u] = _schedule_one(scratch, offsets, lookahead, sources[k], bases[k])
    return cycles


def schedule_tiles(nonzero: np.ndarray, offsets: np.ndarray, lookahead: int,
                   keep_schedule: bool = False):
    """Schedule every tile of `nonzero` (bool/uint8 [U, R, S, L]).

    Returns `cycles` (int64 [U]); with `keep_schedule`, also `sources` (int64
    [U, R, S, L], only the first cycles[u] entries along axis 2 are meaningful) and
    `bases` (int64 [U, S], window base step of each cycle).
    """
    nonzero = np.ascontiguousarray(nonzero, dtype=np.uint8)
    units, rows, steps, lanes = nonzero.shape
    offsets = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1, 2)
    n = units if keep_schedule else 1
    sources = np.full((n, rows, max(steps, 1), lanes), -1, dtype=np.int64)
    bases = np.full((n, max(steps, 1)), -1, dtype=np.int64)
    cycles = _schedule_units(nonzero, offsets, int(lookahead), keep_schedule, sources, bases)
    if keep_schedule:
        return cycles, sources, bases
    return cycles


def schedule_tile_reference(nonzero, offsets, lookahead):
    """Plain-Python reference of one tile's schedule: returns (cycles, sources, bases),
    the order of `schedule_tiles`, with sources a list (per cycle) of R x L lists of
    original flat slots (-1: idle) and bases the list of window bases."""
    rows, steps, lanes = len(nonzero), len(nonzero[0]), len(nonzero[0][0])
    left = {(r, t, l) for r in range(rows) for t in range(steps) for l in range(lanes)
            if nonzero[r][t][l]}
    offsets = [tuple(int(v) for v in o) for o in np.asarray(offsets).reshape(-1, 2)]
    bases, sources = [], []
    t0 = 0
    while t0 < steps:
        bases.append(t0)
        cycle = []
        for r in range(rows):
            row = []
            for l in range(lanes):
                candidates = [(t0, l)] + [(t0 + dt, (l + dl) % lanes) for dt, dl in offsets]
                taken = next(((t, s) for t, s in candidates if (r, t, s) in left), None)
                if taken is None:
                    row.append(-1)
                else:
                    left.discard((r, *taken))
                    row.append(taken[0] * lanes + taken[1])
            cycle.append(row)
        sources.append(cycle)
        step_busy = {t for (_, t, _) in left}
        nxt = t0 + 1
        while nxt < steps and nxt not in step_busy and nxt - t0 <= lookahead:
            nxt += 1
        t0 = nxt
    return len(bases), sources, bases
