"""Functional check: recompute each pass's output from the scheduled buffers.

For every cycle of every tile, each multiplier holds a value moved (or not) by the
front-end; it multiplies the broadcast value named by the value's *original* slot.
We check, per layer and pass (and each part of it):

1. legality: every value is taken from the window (0 <= dt <= h) through a
   connection the front-end has ((0, 0) or an offset of the connectivity set), and
   the window starts at step 0 (the `dnnsim` scheduler: at most h) and advances
   1..h+1 steps per cycle past the last step;
2. conservation: every non-zero of the scheduled operand is multiplied exactly once;
3. output: sum over cycles and multipliers of value x broadcast[original slot],
   placed where the part's outputs go, equals an independent NumPy reference of the
   pass (float64, to 1e-9 of the output's scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .array import time_streams
from .config import Architecture
from .frontend import connectivity
from .lowering import LoweredPass


@dataclass(frozen=True)
class CheckResult:
    layer: str
    pass_name: str
    ok: bool
    max_abs_error: float
    message: str = ""


def _legal_connections(arch: Architecture) -> set[tuple[int, int]]:
    offs = connectivity(arch.frontend, arch.lanes)
    return {(0, 0)} | {(int(dt), int(dl) % arch.lanes) for dt, dl in offs}


def _legal_table(arch: Architecture) -> np.ndarray:
    """[h+1, lanes] booleans: whether a value may move dt steps and dl lanes (mod lanes)."""
    table = np.zeros((arch.frontend.lookahead + 1, arch.lanes), dtype=bool)
    for dt, dl in _legal_connections(arch):
        if 0 <= dt < table.shape[0]:
            table[dt, dl] = True
    return table


def _first_illegal(dt: np.ndarray, dl: np.ndarray, table: np.ndarray) -> tuple[int, int] | None:
    """The smallest (dt, dl) pair not allowed by `table`, or None if all are."""
    inside = (dt >= 0) & (dt < table.shape[0])
    bad = ~inside
    bad[inside] = ~table[dt[inside], dl[inside]]
    if not bad.any():
        return None
    pairs = np.unique(np.stack([dt[bad], dl[bad]], axis=1), axis=0)  # sorted rows
    return int(pairs[0, 0]), int(pairs[0, 1])


def _replay(sched: np.ndarray, bcast: np.ndarray, arch: Architecture, record=None,
            outputs: bool = True) -> tuple[np.ndarray, str]:
    """Output [G, F, W] (float64) of one part computed from its recorded schedule, or an
    error message. `record`: the part's `TileSchedule` if already made; `outputs=False`
    checks legality and conservation only (the output stays zero)."""
    lanes, rows, h = arch.lanes, arch.rows, arch.frontend.lookahead
    table = _legal_table(arch)
    first_base = h if arch.frontend.scheduler == "dnnsim" else 0  # see scheduler.py
    groups, filters, steps, _ = sched.shape
    if record is None:
        _, record = time_streams(sched != 0, bcast.shape[1], arch, keep_schedule=True)
    out = np.zeros((groups, filters, bcast.shape[1]))
    for g in range(groups):
        sources, bases, cycles = record.sources[g], record.bases[g], record.cycles[g]
        values = np.zeros((sources.shape[0] * rows, steps * lanes), dtype=np.float64)
        values[:filters] = sched[g].reshape(filters, -1)
        taken = []  # flat (row, slot) index of every multiplication, all tile units
        for u in range(sources.shape[0]):
            c = int(cycles[u])
            if c == 0:  # a tile with nothing to do (dnnsim's walk skipped all <= h steps)
                continue
            base = bases[u, :c]
            moved = np.diff(np.append(base, max(steps, base[-1] + 1)))
            if base[0] > first_base or moved.min() < 1 or moved.max() > h + 1:
                return out, f"window of tile unit {u} moves outside 1..{h + 1} steps per cycle"
            src = sources[u, :, :c, :]                      # rows, cycles, lanes
            live = src >= 0
            dt = (src // lanes - base[None, :, None])[live]
            dl = ((src % lanes - np.arange(lanes)[None, None, :]) % lanes)[live]
            illegal = _first_illegal(dt, dl, table)
            if illegal is not None:
                return out, f"illegal connection (dt, dl)={illegal} in tile unit {u}"
            r_idx = np.broadcast_to(np.arange(rows)[:, None, None] + u * rows, src.shape)[live]
            taken.append(r_idx * values.shape[1] + src[live])
        flat = np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)
        used = np.bincount(flat, minlength=values.size).reshape(values.shape).astype(np.float64)
        expected = (values != 0).astype(np.float64)
        if not np.array_equal(used, expected):
            f, slot = np.argwhere(used != expected)[0]
            return out, (f"group {g} filter {f} slot {slot} multiplied {int(used[f, slot])} times, "
                         f"expected {int(expected[f, slot])}")
        if not outputs:
            continue
        # value x broadcast of its original slot, accumulated per original slot first
        out[g] = (values * used)[:filters] @ bcast[g].reshape(bcast.shape[1], -1).astype(np.float64).T
    return out, ""


def recompute(lowered: LoweredPass, arch: Architecture, reference: np.ndarray) -> CheckResult:
    """Check `lowered` scheduled on `arch` against `reference` (shape `lowered.out_shape`)."""
    name, pas = lowered.layer, lowered.pass_name
    out = np.zeros(lowered.out_shape)
    for part in lowered.parts:
        sched, bcast = lowered.operands(part)
        got, problem = _replay(sched, bcast, arch)
        if problem:
            return CheckResult(name, pas, False, np.inf, problem)
        if lowered.scheduled == "input":
            got = got.transpose(0, 2, 1)
        out[:, :, part.input_ids] += got
    err = float(np.max(np.abs(out - reference))) if out.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    ok = err <= 1e-9 * scale + 1e-30
    msg = "" if ok else f"output differs from the NumPy reference by up to {err:.3g} (scale {scale:.3g})"
    return CheckResult(name, pas, ok, err, msg)
