"""Lookahead/lookaside schedulers for one tile of the array (units: steps, cycles).

A tile has R filter lanes; each holds its scheduled-operand stream as a matrix of
S steps x L weight lanes (a True in `nonzero` is a value that must be multiplied).
All filter lanes of a tile see the same broadcast window, so they advance together.

One cycle at window base t0, for every filter lane r (r = 0, 1, ...): every slot
(t0, l) that still holds its non-zero executes in place; each *zero slot* (t0, l)
may instead execute a *candidate*: a non-zero still waiting at (t0 + dt, (l + dl)
mod L) for an offset (dt, dl) of the connectivity set, tried in the scheduler's
priority order (`frontend.search_order`). The moved value keeps its original slot,
so its multiplier reads the broadcast value of that slot. The schedulers differ only
in which zero slot gets which candidate:

- ``in-order``: zero slots l = 0, 1, ... in turn each take their first candidate
  (accelsim's reference greedy scheduler; natural offset order, lookahead first).
- ``dnnsim``: DNNsim 4748a60's `original_schedule`: repeatedly count, for every zero
  slot still empty, the candidates it can reach; the first slot (lowest lane) with the
  MOST candidates takes its first candidate; until no empty zero slot has one.
- ``fewest-candidates``: the same with the FEWEST (>= 1) candidates first: a slot with
  few options is served before a slot with many takes one of them away.
- ``matching``: a maximum bipartite matching between zero slots and candidates, so the
  cycle executes as many values as any assignment could. Augmenting paths are searched
  breadth-first from the zero slots in lane order, candidates in priority order: the
  result is deterministic.
- ``nearest-matching``: a maximum matching that also drains the nearest steps first,
  the ones whose emptying lets the window advance: phase 1 matches candidates of step
  t0+1 only, phase 2 adds those of t0+2, and so on to t0+h. Augmenting paths never
  unmatch a candidate, so each phase keeps the earlier phases' candidates: the cycle
  executes the most values of step t0+1 any assignment could, and the most values
  overall.

Then the window advances past steps that are now empty for every filter lane of the
tile, skipping at most h in a row: t0 moves forward by 1..h+1 steps. The tile is done
when t0 passes the last step; its cost is the number of cycles executed. The window
starts at step 0, so a tile never takes fewer than ceil(S / (h + 1)) cycles, and with
h = 0 (no front-end) it takes exactly S: the dense array. DNNsim's static form, a pass
over the buffer rows that skips up to h all-zero rows and promotes into the others,
executes the same rows (its `wgt_end_time` walk counts these cycles) but for one
detail the ``dnnsim`` scheduler reproduces: its walk also skips up to h all-zero rows
*before* the first cycle, so the window may start at step 1..h. Only a tile whose
first step is empty for every filter lane sees it (at 80% sparsity, about 0.8^256 on a
16 x 16 tile); such a tile can beat h + 1 by those h steps.

`schedule_tiles` is the numba kernel used by the simulator; `schedule_tile_reference`
is the same algorithms in plain Python, kept for the tests, which compare the two
exactly. Schedules are recorded as, per cycle, the window base and, per (filter lane,
weight lane), the flat original slot t * L + l of the value multiplied (-1: idle).
"""

from __future__ import annotations

from collections import deque

import numba
import numpy as np

RULES = {"in-order": 0, "dnnsim": 1, "fewest-candidates": 2, "matching": 3, "nearest-matching": 4}


@numba.njit(cache=True, nogil=True, inline="always")
def _take(nonzero, remaining, r, t, l, lanes):
    nonzero[r, t, l] = 0
    remaining[t] -= 1
    return t * lanes + l


@numba.njit(cache=True, nogil=True)
def _first_candidate(nonzero, r, t0, l, offsets, src):
    """The offset k of zero slot l's first candidate in priority order, or -1: the value at
    (t0 + offsets[k, 0], src[k, l]), src[k, l] = (l + offsets[k, 1]) mod lanes (precomputed:
    no division in the loop). `nonzero` holds h all-zero steps past the stream's end, so
    no bounds test is needed."""
    for k in range(offsets.shape[0]):
        if nonzero[r, t0 + offsets[k, 0], src[k, l]]:
            return k
    return -1


@numba.njit(cache=True, nogil=True)
def _fill_in_order(nonzero, remaining, r, t0, offsets, src, out):
    lanes = nonzero.shape[2]
    for l in range(lanes):
        if nonzero[r, t0, l]:
            out[l] = _take(nonzero, remaining, r, t0, l, lanes)
        else:
            k = _first_candidate(nonzero, r, t0, l, offsets, src)
            out[l] = -1 if k < 0 else _take(nonzero, remaining, r, t0 + offsets[k, 0], src[k, l], lanes)


@numba.njit(cache=True, nogil=True)
def _fill_by_count(nonzero, remaining, r, t0, offsets, src, dst, most, out, zero_lane,
                   count, index):
    """dnnsim (most=True) and fewest-candidates (most=False). dst[k, s] = (s - offsets[k, 1])
    mod lanes: the zero lane that reaches lane s through offset k."""
    lanes = nonzero.shape[2]
    zeros = 0
    for l in range(lanes):
        index[l] = -1
        if nonzero[r, t0, l]:
            out[l] = _take(nonzero, remaining, r, t0, l, lanes)
        else:
            out[l] = -1
            zero_lane[zeros] = l
            index[l] = zeros
            c = 0
            for k in range(offsets.shape[0]):
                c += nonzero[r, t0 + offsets[k, 0], src[k, l]]
            count[zeros] = c
            zeros += 1
    # count[i] = 0 once zero slot i is filled (or has no candidate left)
    while True:
        best = -1
        for i in range(zeros):
            c = count[i]
            if c == 0:
                continue
            if best < 0 or (most and c > count[best]) or (not most and c < count[best]):
                best = i
                if c == 1 and not most:
                    break  # no slot has fewer: the first with one is the pick
        if best < 0:
            return
        l = zero_lane[best]
        k = _first_candidate(nonzero, r, t0, l, offsets, src)
        dt, s = offsets[k, 0], src[k, l]
        out[l] = _take(nonzero, remaining, r, t0 + dt, s, lanes)
        count[best] = 0
        # the zero slots that could also reach (t0 + dt, s) lose a candidate
        for j in range(offsets.shape[0]):
            if offsets[j, 0] == dt:
                other = index[dst[j, s]]
                if other >= 0 and count[other] > 0:
                    count[other] -= 1


@numba.njit(cache=True, nogil=True)
def _fill_matching(nonzero, remaining, r, t0, offsets, src, lookahead, nearest, out,
                   zero_lane, owner, prev, queue):
    """Maximum matching of zero slots to candidates by breadth-first augmenting paths.
    `nearest`: in phases, candidates of steps t0+1 only, then up to t0+2, ... (a matched
    candidate stays matched when paths augment, so each phase keeps the last one's).
    owner[(t - t0 - 1) * L + s]: zero-slot index holding candidate (t, s), or -1;
    out[l] doubles as the matched slot of zero lane l during the search."""
    lanes = nonzero.shape[2]
    zeros = 0
    for l in range(lanes):
        if nonzero[r, t0, l]:
            out[l] = _take(nonzero, remaining, r, t0, l, lanes)
        else:
            out[l] = -1
            zero_lane[zeros] = l
            zeros += 1
    window = lookahead * lanes
    owner[:window] = -1
    for limit in range(1 if nearest else lookahead, lookahead + 1):
        for i in range(zeros):
            if out[zero_lane[i]] >= 0:
                continue
            # fast path, the BFS's own first step: the root's first free candidate
            l = zero_lane[i]
            direct = -1
            for k in range(offsets.shape[0]):
                t = t0 + offsets[k, 0]
                if offsets[k, 0] <= limit:
                    s = src[k, l]
                    if nonzero[r, t, s] and owner[(t - t0 - 1) * lanes + s] < 0:
                        direct = (t - t0 - 1) * lanes + s
                        break
            if direct >= 0:
                owner[direct] = i
                out[l] = direct
                continue
            # BFS over zero slots; prev[j] = candidate through which zero slot j was reached
            for j in range(zeros):
                prev[j] = -2
            prev[i] = -1
            head, tail = 0, 0
            queue[tail] = i
            tail += 1
            found = -1
            while head < tail and found < 0:
                j = queue[head]
                head += 1
                l = zero_lane[j]
                for k in range(offsets.shape[0]):
                    t = t0 + offsets[k, 0]
                    if offsets[k, 0] > limit:
                        continue
                    s = src[k, l]
                    if not nonzero[r, t, s]:
                        continue
                    node = (t - t0 - 1) * lanes + s
                    holder = owner[node]
                    if holder == j:
                        continue
                    if holder < 0:
                        found = node
                        # augment: walk back from j, re-assigning candidates
                        cur_node, cur = node, j
                        while cur >= 0:
                            before = out[zero_lane[cur]]
                            owner[cur_node] = cur
                            out[zero_lane[cur]] = cur_node
                            if prev[cur] < 0:
                                break
                            cur_node = before
                            cur = prev[cur]
                        break
                    if prev[holder] == -2:
                        prev[holder] = j
                        queue[tail] = holder
                        tail += 1
    for i in range(zeros):
        l = zero_lane[i]
        node = out[l]
        if node >= 0:
            out[l] = _take(nonzero, remaining, r, t0 + 1 + node // lanes, node % lanes, lanes)


@numba.njit(cache=True, nogil=True)
def _lane_tables(offsets, lanes):
    """src[k, l] = (l + dl_k) mod lanes, dst[k, s] = (s - dl_k) mod lanes."""
    k = offsets.shape[0]
    src = np.empty((k, lanes), dtype=np.int64)
    dst = np.empty((k, lanes), dtype=np.int64)
    for i in range(k):
        for l in range(lanes):
            src[i, l] = (l + offsets[i, 1]) % lanes
            dst[i, l] = (l - offsets[i, 1]) % lanes
    return src, dst


@numba.njit(cache=True, nogil=True)
def _pad(offsets, lookahead):
    """All-zero steps a tile's buffer holds past its end: the farthest step offset."""
    pad = lookahead
    for k in range(offsets.shape[0]):
        pad = max(pad, offsets[k, 0])
    return pad


@numba.njit(cache=True, nogil=True)
def _schedule_span(nonzero, steps, t0, final, offsets, src, dst, lookahead, rule, record, source, base):
    """Run one tile's cycles in place over nonzero[:, :steps] (uint8 [R, S + h, L], the last
    h steps all zero; consumed: entries are cleared as they execute) from window base t0. `final`: the stream ends at
    `steps`; otherwise the next steps are still to come, so stop before a cycle whose
    lookahead would reach past `steps` (the window t0..t0+h must be all there). With
    `record`, writes source[R, cycle, L] and base[cycle]. Returns (cycles, next t0)."""
    rows, _, lanes = nonzero.shape
    remaining = np.zeros(steps, dtype=np.int64)  # non-zeros left per step, all filter lanes
    for r in range(rows):
        for t in range(t0, steps):
            for l in range(lanes):
                remaining[t] += nonzero[r, t, l]
    zero_lane = np.empty(lanes, dtype=np.int64)
    count = np.empty(lanes, dtype=np.int64)
    index = np.empty(lanes, dtype=np.int64)
    owner = np.empty(max(lookahead, 1) * lanes, dtype=np.int64)
    queue = np.empty(lanes, dtype=np.int64)
    out = np.empty(lanes, dtype=np.int64)
    cycles = 0
    while t0 < steps and (final or t0 + lookahead < steps):
        if record:
            base[cycles] = t0
        for r in range(rows):
            if rule == 0 or offsets.shape[0] == 0:
                _fill_in_order(nonzero, remaining, r, t0, offsets, src, out)
            elif rule >= 3:
                _fill_matching(nonzero, remaining, r, t0, offsets, src, lookahead, rule == 4,
                               out, zero_lane, owner, index, queue)
            else:
                _fill_by_count(nonzero, remaining, r, t0, offsets, src, dst, rule == 1, out,
                               zero_lane, count, index)
            if record:
                source[r, cycles, :] = out
        cycles += 1
        nxt = t0 + 1
        while nxt < steps and remaining[nxt] == 0 and nxt - t0 <= lookahead:
            nxt += 1
        t0 = nxt
    return cycles, t0


@numba.njit(cache=True, nogil=True)
def _leading_skip(nonzero, steps, lookahead):
    """DNNsim's row walk also skips up to h all-zero rows before the first cycle: the
    first window base of the `dnnsim` rule."""
    t0 = 0
    while t0 < steps and t0 < lookahead and not nonzero[:, t0, :].any():
        t0 += 1
    return t0


@numba.njit(cache=True, nogil=True)
def _schedule_units(nonzero, offsets, lookahead, rule, keep, sources, bases):
    units, rows, steps, lanes = nonzero.shape
    src, dst = _lane_tables(offsets, lanes)
    cycles = np.zeros(units, dtype=np.int64)
    scratch = np.zeros((rows, steps + _pad(offsets, lookahead), lanes), dtype=np.uint8)
    for u in range(units):
        scratch[:, :steps] = nonzero[u]
        k = u if keep else 0
        t0 = _leading_skip(scratch, steps, lookahead) if rule == 1 else 0
        cycles[u] = _schedule_span(scratch, steps, t0, True, offsets, src, dst, lookahead, rule, keep,
                                   sources[k], bases[k])[0]
    return cycles


@numba.njit(cache=True, nogil=True)
def _resume_units(chunk, carry, carry_len, started, offsets, lookahead, rule, final, dummy_s, dummy_b):
    """`_schedule_units` over a stream that arrives in pieces: per unit, schedule carry
    (the unfinished steps of the last piece, carry[u, :, :carry_len[u]]) followed by
    `chunk` [U, R, Sc, L]; keep the unfinished steps (at most h) as the new carry."""
    units, rows, steps, lanes = chunk.shape
    src, dst = _lane_tables(offsets, lanes)
    cycles = np.zeros(units, dtype=np.int64)
    pad = _pad(offsets, lookahead)
    scratch = np.zeros((rows, carry.shape[2] + steps + pad, lanes), dtype=np.uint8)
    for u in range(units):
        total, t0 = _resume_start(chunk, carry, carry_len, started, u, scratch, pad, final, lookahead, rule)
        if t0 < 0:
            continue
        cycles[u], t0 = _schedule_span(scratch, total, t0, final, offsets, src, dst, lookahead, rule,
                                       False, dummy_s, dummy_b)
        _resume_keep(scratch, carry, carry_len, u, total, t0)
    return cycles


@numba.njit(cache=True, nogil=True)
def _resume_start(chunk, carry, carry_len, started, u, scratch, pad, final, lookahead, rule):
    """Put unit u's carry then its piece of `chunk` in `scratch`; returns (steps there,
    first window base), the base -1 when the steps are too few to run a cycle yet (they
    become the carry: a cycle needs its window t0..t0+h all there)."""
    c = carry_len[u]
    total = c + chunk.shape[2]
    scratch[:, :c] = carry[u, :, :c]
    scratch[:, c:total] = chunk[u]
    scratch[:, total:total + pad] = 0
    if not final and total <= lookahead:
        carry[u, :, :total] = scratch[:, :total]
        carry_len[u] = total
        return total, -1
    t0 = 0
    if not started[u]:
        started[u] = True
        if rule == 1:
            t0 = _leading_skip(scratch, total, lookahead)
    return total, t0


@numba.njit(cache=True, nogil=True)
def _resume_keep(scratch, carry, carry_len, u, total, t0):
    """Keep unit u's unfinished steps t0..total (at most h) as its carry."""
    left = total - t0
    carry[u, :, :left] = scratch[:, t0:total]
    carry_len[u] = left


def _rule(scheduler: str) -> int:
    if scheduler not in RULES:
        raise ValueError(f"scheduler: expected one of {', '.join(RULES)}, got {scheduler!r}")
    return RULES[scheduler]


def schedule_tiles(nonzero: np.ndarray, offsets: np.ndarray, lookahead: int,
                   keep_schedule: bool = False, scheduler: str = "in-order"):
    """Schedule every tile of `nonzero` (bool/uint8 [U, R, S, L]) with `offsets` (int [K, 2],
    in the scheduler's priority order: see `frontend.search_order`).

    Returns `cycles` (int64 [U]); with `keep_schedule`, also `sources` (int64
    [U, R, S, L], only the first cycles[u] entries along axis 2 are meaningful) and
    `bases` (int64 [U, S], window base step of each cycle).
    """
    rule = _rule(scheduler)
    nonzero = np.ascontiguousarray(nonzero, dtype=np.uint8)
    units, rows, steps, lanes = nonzero.shape
    offsets = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1, 2)
    n = units if keep_schedule else 1
    shape = (n, rows, max(steps, 1), lanes) if keep_schedule else (1, 1, 1, 1)
    sources = np.full(shape, -1, dtype=np.int64)
    bases = np.full((n, max(steps, 1) if keep_schedule else 1), -1, dtype=np.int64)
    cycles = _schedule_units(nonzero, offsets, int(lookahead), rule, keep_schedule, sources, bases)
    if keep_schedule:
        return cycles, sources, bases
    return cycles


class StreamSchedule:
    """The schedule of `units` tiles whose streams arrive in pieces along the steps (the
    weight gradient's reduction, batch chunk by batch chunk). `feed` each piece in order,
    the last with `final=True`; the cycles it returns add up, per unit, to exactly what
    `schedule_tiles` gives on the whole streams: a cycle at window base t0 sees only steps
    t0..t0+h, so the scheduler stops h steps short of a piece's end and carries the
    unfinished steps (at most h) into the next piece."""

    def __init__(self, units: int, rows: int, lanes: int, offsets: np.ndarray, lookahead: int,
                 scheduler: str = "in-order"):
        self.rule = _rule(scheduler)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1, 2)
        self.lookahead = int(lookahead)
        self.carry = np.zeros((units, rows, max(self.lookahead, 1), lanes), dtype=np.uint8)
        self.carry_len = np.zeros(units, dtype=np.int64)
        self.started = np.zeros(units, dtype=np.bool_)
        self.cycles = np.zeros(units, dtype=np.int64)
        self._dummy = (np.zeros((1, 1, 1), dtype=np.int64), np.zeros(1, dtype=np.int64))

    def feed(self, piece: np.ndarray, final: bool = False) -> np.ndarray:
        """Schedule the next `piece` (bool/uint8 [U, R, S, L]); returns the cycles so far."""
        piece = np.ascontiguousarray(piece, dtype=np.uint8)
        self.cycles += _resume_units(piece, self.carry, self.carry_len, self.started, self.offsets,
                                     self.lookahead, self.rule, final, *self._dummy)
        return self.cycles


def _reference_row(left, r, t0, steps, lanes, offsets, scheduler):
    """Plain-Python fill of one filter lane's zero slots at window base t0: the lane ->
    (t, l) taken, built from the rule's definition (not from the kernel's bookkeeping)."""
    taken = {l: (t0, l) for l in range(lanes) if (r, t0, l) in left}
    zeros = [l for l in range(lanes) if l not in taken]
    for slot in taken.values():
        left.discard((r, *slot))

    def candidates(l):
        cands = [(t0 + dt, (l + dl) % lanes) for dt, dl in offsets]
        return [c for c in cands if c[0] < steps and (r, *c) in left]

    if scheduler == "in-order":
        for l in zeros:
            c = candidates(l)
            if c:
                taken[l] = c[0]
                left.discard((r, *c[0]))
    elif scheduler in ("dnnsim", "fewest-candidates"):
        while True:
            counts = {l: len(candidates(l)) for l in zeros if l not in taken}
            counts = {l: n for l, n in counts.items() if n}
            if not counts:
                break
            pick = (max if scheduler == "dnnsim" else min)(counts.values())
            l = next(l for l in zeros if counts.get(l) == pick)
            taken[l] = candidates(l)[0]
            left.discard((r, *taken[l]))
    else:  # matching: breadth-first augmenting paths, zero slots in lane order
        match = {}  # zero lane -> candidate; the inverse below
        holder = {}
        limits = range(1, max(dt for dt, _ in offsets) + 1) if scheduler == "nearest-matching" else [None]
        for limit, root in ((limit, root) for limit in limits for root in zeros):
            if root in match:
                continue
            prev, queue, found = {root: None}, deque([root]), None
            while queue and found is None:
                l = queue.popleft()
                for c in candidates(l):
                    if limit is not None and c[0] - t0 > limit:
                        continue
                    h = holder.get(c)
                    if h == l:
                        continue
                    if h is None:
                        found = (l, c)
                        break
                    if h not in prev:
                        prev[h] = l
                        queue.append(h)
            if found is not None:
                l, c = found
                while l is not None:
                    old = match.get(l)
                    match[l], holder[c] = c, l
                    l, c = prev[l], old
        for l, c in match.items():
            taken[l] = c
            left.discard((r, *c))
    return [taken[l][0] * lanes + taken[l][1] if l in taken else -1 for l in range(lanes)]


def schedule_tile_reference(nonzero, offsets, lookahead, scheduler: str = "in-order"):
    """Plain-Python reference of one tile's schedule: returns (cycles, sources, bases),
    the order of `schedule_tiles`, with sources a list (per cycle) of R x L lists of
    original flat slots (-1: idle) and bases the list of window bases."""
    _rule(scheduler)
    rows, steps, lanes = len(nonzero), len(nonzero[0]), len(nonzero[0][0])
    left = {(r, t, l) for r in range(rows) for t in range(steps) for l in range(lanes)
            if nonzero[r][t][l]}
    offsets = [tuple(int(v) for v in o) for o in np.asarray(offsets).reshape(-1, 2)]
    bases, sources = [], []
    t0 = 0
    while scheduler == "dnnsim" and t0 < min(steps, lookahead) and not any(t == t0 for _, t, _ in left):
        t0 += 1
    while t0 < steps:
        bases.append(t0)
        sources.append([_reference_row(left, r, t0, steps, lanes, offsets, scheduler)
                        for r in range(rows)])
        step_busy = {t for (_, t, _) in left}
        nxt = t0 + 1
        while nxt < steps and nxt not in step_busy and nxt - t0 <= lookahead:
            nxt += 1
        t0 = nxt
    return len(bases), sources, bases
