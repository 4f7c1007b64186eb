"""Bit-Tactical's bit-serial back-ends, TCLp and TCLe (units: cycles, lane-cycles).

The front-end schedule (scheduler.py) is unchanged: a back-end only decides how many
cycles each of its steps takes. A bit-serial tile has `columns` = `bits` (B) columns,
one window each; every column multiplies the step's scheduled values by its window's
broadcast values one bit (TCLp) or one term (TCLe) per cycle, so B columns match the
peak of one bit-parallel column (docs/design/bit-serial-backends.md, 2.1). The
broadcast operand is quantised to B-bit integers first (quantize.py); zeros stay zeros.

Per value q of a tensor (`value_costs`, 0 for a zero):

- TCLp: its two's-complement width, width(q) = max(1, bitlen(x) + s), x = q for q >= 0
  and -q - 1 for q < 0, s = 1 if the tensor has a negative value (a ReLU output is
  unsigned, gradients are signed). Leading zero bits are skipped, trailing ones are not
  (DNNsim's examples: `leading_bit: true`).
- TCLe: the number of terms of |q| in DNNsim's Booth-like recoding (`booth_digits`): a
  run of three or more ones becomes +2^(top+1) ... -2^(bottom); one term per cycle.

A step of one unit (a tile's `rows` filter lanes) for one window costs
max(1, max over the distinct broadcast slots its multipliers read of the value cost):
every lane of the column waits for the slowest value (per-column precision group of one
window, DNNsim's default). The `columns` windows of a window group run in lockstep, so
the group's step costs the maximum over its windows; a unit's cost for a window group is
the sum over its cycles. Tiles then combine as on the bit-parallel array (array.py:
lockstep = maximum over the tiles of a filter group, per window group). Idle lanes do not
count (DNNsim also reads their own slot). Not modelled: run-ahead column registers
(DNNsim's `column_registers`, which let a column start the next step early), TCLe's
limited first-stage shifter, and the trailing-zero precision option.

Bounds: 1 <= step cost <= B, so front-end cycles <= cycles <= B x front-end cycles
<= B x dense cycles at B columns, the bit-serial dense bound; TCLe <= TCLp step by step.

The kernels take the per-value costs already reduced over the windows of each window
group (`group_max`: [groups, window groups, steps, lanes]), so a unit's cycle costs
O(distinct slots) per window group. `serial_units` and `SerialStream` are the numba
kernels; `unit_costs_reference` the same in NumPy for the tests. `serial_value` gives
what a multiplier accumulates in P cycles, for the functional check (verify.py).
"""

from __future__ import annotations

import numba
import numpy as np

from .scheduler import _lane_tables, _leading_skip, _pad, _resume_keep, _resume_start, _rule, _schedule_span

BACKENDS = ("tclp", "tcle")
MAGNITUDES = 1 << 15  # |q| of a 16-bit symmetric value is at most 2^15 - 1


def _bitlen_table() -> np.ndarray:
    n = np.arange(MAGNITUDES, dtype=np.int64)
    out = np.zeros(MAGNITUDES, dtype=np.uint8)
    for p in range(16):
        out[(n >> p) > 0] = p + 1
    return out


def booth_digits(n: int) -> list[tuple[int, int]]:
    """DNNsim's Booth-like recoding of a magnitude 0 <= n < 2^15, as (position, sign)
    pairs from the most significant (docs/design/bit-serial-backends.md, 3.2): scanning
    bits p = 15..0 with the window (bit p, bit p-1, bit p-2), outside a run 100, 101, 110
    give +2^p and 111 gives +2^(p+1) and starts a run; inside it 010 and 011 give -2^p,
    100 gives -2^p and ends it. sum(sign * 2^p) == n."""
    if not 0 <= n < MAGNITUDES:
        raise ValueError(f"booth_digits: expected a magnitude in [0, {MAGNITUDES}), got {n}")
    bit = lambda p: (n >> p) & 1 if p >= 0 else 0  # noqa: E731
    digits, run = [], False
    for p in range(15, -1, -1):
        w = (bit(p), bit(p - 1), bit(p - 2))
        if not run:
            if w in ((1, 0, 0), (1, 0, 1), (1, 1, 0)):
                digits.append((p, 1))
            elif w == (1, 1, 1):
                digits.append((p + 1, 1))
                run = True
        elif w in ((0, 1, 0), (0, 1, 1)):
            digits.append((p, -1))
        elif w == (1, 0, 0):
            digits.append((p, -1))
            run = False
    return digits


def _term_tables() -> tuple[np.ndarray, np.ndarray]:
    """(terms [2^15] uint8, partial [2^15, 11] int32): every magnitude's term count and
    the value of its first k terms taken from the least significant (TCLe's order):
    `booth_digits` run on all magnitudes at once."""
    n = np.arange(MAGNITUDES, dtype=np.int64)
    bit = lambda p: (n >> p) & 1 if p >= 0 else np.zeros_like(n)  # noqa: E731
    digits = np.zeros((MAGNITUDES, 17), dtype=np.int64)  # sign of the term at each position
    run = np.zeros(MAGNITUDES, dtype=bool)
    for p in range(15, -1, -1):
        w = bit(p) * 4 + bit(p - 1) * 2 + bit(p - 2)
        plain = ~run & ((w == 4) | (w == 5) | (w == 6))
        start = ~run & (w == 7)
        hole = run & ((w == 2) | (w == 3))
        end = run & (w == 4)
        digits[plain, p] = 1
        digits[start, p + 1] = 1
        digits[hole | end, p] = -1
        run = (run | start) & ~end
    terms = (digits != 0).sum(axis=1)
    cum = np.cumsum(digits << np.arange(17), axis=1)
    seen = np.cumsum(digits != 0, axis=1)
    partial = np.zeros((MAGNITUDES, 11), dtype=np.int32)
    for k in range(1, 11):
        reached = seen >= k
        first = reached.argmax(axis=1)
        partial[:, k] = np.where(reached.any(axis=1), cum[n, first], cum[:, -1])
    return terms.astype(np.uint8), partial


BITLEN = _bitlen_table()
TERMS, PARTIAL_TERMS = _term_tables()


def value_costs(q: np.ndarray, backend: str, signed: bool, trailing: bool = False,
                bits: int = 16) -> np.ndarray:
    """Cycles each quantised value needs on `backend` (uint8, 0 for a zero; see the module
    docstring). `signed`: whether the whole tensor has a negative value. `trailing` (TCLp
    only): also skip trailing zero bits; the code is then uint16, width | (bits - low) << 5
    with `low` the value's trailing zero bits (`split_codes` undoes it), still 0 exactly
    for a zero."""
    q = np.asarray(q)
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    q = q.astype(np.int32, copy=False)
    if backend == "tcle":
        return TERMS[np.abs(q)]
    x = np.where(q >= 0, q, -q - 1)
    width = BITLEN[x] + np.uint8(signed)
    width = np.maximum(width, 1).astype(np.uint8)
    width[q == 0] = 0
    if not trailing:
        return width
    magnitude = np.abs(q)
    low = BITLEN[magnitude & -magnitude].astype(np.int32) - 1  # the lowest set bit's position
    return np.where(q == 0, 0, width.astype(np.uint16) | ((bits - low) << 5).astype(np.uint16)).astype(np.uint16)


def split_codes(costs: np.ndarray, trailing: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(widths, bits - low) as uint8 from `value_costs` codes; (costs, None) without
    `trailing`. Both are 0 for a zero, so a zero never raises a group's maximum."""
    if not trailing:
        return costs, None
    return (costs & 31).astype(np.uint8), (costs >> 5).astype(np.uint8)


def own_costs(costs: np.ndarray, trailing: bool, bits: int) -> np.ndarray:
    """Cycles each value would need alone (int64): its cost, or with `trailing` its span
    from the lowest set bit to the top of its width."""
    hi, lo = split_codes(costs, trailing)
    if lo is None:
        return hi.astype(np.int64)
    return np.maximum(hi.astype(np.int64) + lo.astype(np.int64) - bits, 0)


def serial_value(q: np.ndarray, cycles: np.ndarray, backend: str, signed: bool,
                 start: np.ndarray | int = 0) -> np.ndarray:
    """What a bit-serial multiplier has accumulated of each value q after `cycles` cycles
    (int64): TCLp, the `cycles` bits of q's two's complement from bit `start` up
    (sign-extended in a signed tensor); TCLe, its first `cycles` terms. Equal to q exactly
    when `cycles` covers `value_costs(q)` (and, for TCLp, `start` is at most q's lowest set
    bit)."""
    q = np.asarray(q, dtype=np.int64)
    p = np.asarray(cycles, dtype=np.int64)
    if backend == "tcle":
        return np.sign(q) * PARTIAL_TERMS[np.abs(q), np.minimum(p, 10)].astype(np.int64)
    start = np.asarray(start, dtype=np.int64)
    low = (q >> start) & ((np.int64(1) << p) - 1)
    if signed:
        low = np.where(low >> np.maximum(p - 1, 0) & 1, low - (np.int64(1) << p), low)
    return low << start


def group_max(costs: np.ndarray, columns: int) -> np.ndarray:
    """Per window group of `columns` consecutive windows, each slot's largest cost:
    [G, W, S, L] -> [G, ceil(W / columns), S, L] (a last, partial group has fewer windows)."""
    g, w, s, l = costs.shape
    groups = -(-w // columns)
    padded = np.zeros((g, groups * columns, s, l), dtype=np.uint8)
    padded[:, :w] = costs
    return padded.reshape(g, groups, columns, s, l).max(axis=2)


def frames(costs: np.ndarray, columns: int, trailing: bool) -> tuple[np.ndarray, np.ndarray]:
    """The window groups' frames of `value_costs` codes [G, W, S, L]: (widths, bits - low),
    each `group_max`ed; the second is empty ([G, 0, S, L]) without `trailing`."""
    hi, lo = split_codes(costs, trailing)
    hi = group_max(hi, columns)
    return hi, (group_max(lo, columns) if lo is not None else np.zeros((hi.shape[0], 0) + hi.shape[2:],
                                                                          dtype=np.uint8))


@numba.njit(cache=True, nogil=True)
def _step_costs(source, cycles, frame, lows, bits, shift, lanes, out, lane_out, mark, slot_t, slot_l, stamp):
    """Add to out[g] the cost of each of the `cycles` recorded cycles of one unit
    (source [R, >= cycles, L] flat slots t * L + l, -1 idle) for every window group g of
    `frame` [WG, T, L] (slot step t is frame step t + shift), and to lane_out[g] that cost
    times the cycle's busy multipliers. With trailing zeros skipped, `lows` [WG, T, L] holds
    bits - low, and a step costs max(1, max width - min low); otherwise `lows` is empty.
    `mark` (one entry per slot) de-duplicates slots by `stamp`; returns the last stamp."""
    rows = source.shape[0]
    for c in range(cycles):
        stamp += 1
        n = 0
        live = 0
        for r in range(rows):
            for l in range(lanes):
                s = source[r, c, l]
                if s >= 0:
                    live += 1
                    if mark[s] != stamp:
                        mark[s] = stamp
                        slot_t[n] = s // lanes + shift
                        slot_l[n] = s % lanes
                        n += 1
        trailing = lows.shape[0] > 0
        for g in range(frame.shape[0]):
            m = 1
            top = 0
            for i in range(n):
                v = frame[g, slot_t[i], slot_l[i]]
                if v > m:
                    m = v
                if trailing:
                    w = lows[g, slot_t[i], slot_l[i]]
                    if w > top:
                        top = w
            if trailing:
                m = max(1, m + top - bits) if n else 1
            out[g] += m
            lane_out[g] += m * live
    return stamp


@numba.njit(cache=True, nogil=True)
def _serial_units(nonzero, frame, lows, bits, offsets, lookahead, rule, out, lane_out):
    units, rows, steps, lanes = nonzero.shape
    src, dst = _lane_tables(offsets, lanes)
    scratch = np.zeros((rows, steps + _pad(offsets, lookahead), lanes), dtype=np.uint8)
    source = np.full((rows, max(steps, 1), lanes), -1, dtype=np.int64)
    base = np.zeros(max(steps, 1), dtype=np.int64)
    mark = np.zeros(scratch.shape[1] * lanes, dtype=np.int64)
    slot_t = np.zeros(rows * lanes, dtype=np.int64)
    slot_l = np.zeros(rows * lanes, dtype=np.int64)
    stamp = 0
    for u in range(units):
        scratch[:, :steps] = nonzero[u]
        t0 = _leading_skip(scratch, steps, lookahead) if rule == 1 else 0
        cycles = _schedule_span(scratch, steps, t0, True, offsets, src, dst, lookahead, rule, True,
                                source, base)[0]
        stamp = _step_costs(source, cycles, frame, lows, bits, 0, lanes, out[u], lane_out[u], mark, slot_t,
                            slot_l, stamp)


def serial_units(nonzero: np.ndarray, frame: np.ndarray, offsets: np.ndarray, lookahead: int,
                 scheduler: str, lows: np.ndarray | None = None, bits: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Schedule every unit of `nonzero` (uint8 0/1 [U, R, S, L]) and cost its cycles against
    each window group of `frame` (uint8 [WG, S, L], `group_max` of the broadcast costs;
    with trailing zeros skipped, `lows` the group maxima of bits - low, see `frames`).
    Returns (cycles [U, WG], busy lane-cycles [U, WG]), int64."""
    nonzero = np.ascontiguousarray(nonzero, dtype=np.uint8)
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    lows = _lows(lows, frame)
    out = np.zeros((nonzero.shape[0], frame.shape[0]), dtype=np.int64)
    lane_out = np.zeros_like(out)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1, 2)
    _serial_units(nonzero, frame, lows, int(bits), offsets, int(lookahead), _rule(scheduler), out, lane_out)
    return out, lane_out


def _lows(lows: np.ndarray | None, frame: np.ndarray) -> np.ndarray:
    if lows is None or lows.shape[0] == 0:
        return np.zeros((0,) + frame.shape[1:], dtype=np.uint8)
    return np.ascontiguousarray(lows, dtype=np.uint8)


@numba.njit(cache=True, nogil=True)
def _serial_resume(chunk, carry, carry_len, started, frame, lows, bits, tail, offsets, lookahead, rule, final,
                   out, lane_out):
    """`scheduler._resume_units` with every cycle costed against `frame` [WG, tail + Sc, L]:
    the stream's previous `tail` steps, then this piece's."""
    units, rows, steps, lanes = chunk.shape
    src, dst = _lane_tables(offsets, lanes)
    pad = _pad(offsets, lookahead)
    width = carry.shape[2] + steps
    scratch = np.zeros((rows, width + pad, lanes), dtype=np.uint8)
    source = np.full((rows, max(width, 1), lanes), -1, dtype=np.int64)
    base = np.zeros(max(width, 1), dtype=np.int64)
    mark = np.zeros((width + pad) * lanes, dtype=np.int64)
    slot_t = np.zeros(rows * lanes, dtype=np.int64)
    slot_l = np.zeros(rows * lanes, dtype=np.int64)
    stamp = 0
    for u in range(units):
        c = carry_len[u]
        total, t0 = _resume_start(chunk, carry, carry_len, started, u, scratch, pad, final, lookahead, rule)
        if t0 < 0:
            continue
        cycles, t0 = _schedule_span(scratch, total, t0, final, offsets, src, dst, lookahead, rule, True,
                                    source, base)
        stamp = _step_costs(source, cycles, frame, lows, bits, tail - c, lanes, out[u], lane_out[u], mark,
                            slot_t, slot_l, stamp)
        _resume_keep(scratch, carry, carry_len, u, total, t0)


class SerialStream:
    """`scheduler.StreamSchedule` for a bit-serial back-end: the weight gradient's units,
    fed piece by piece along the reduction with their broadcast costs, accumulate
    `cycles` and `lane_cycles` [U, WG] equal to `serial_units` on the whole streams."""

    def __init__(self, units: int, rows: int, lanes: int, window_groups: int, offsets: np.ndarray,
                 lookahead: int, scheduler: str = "in-order", trailing: bool = False, bits: int = 16):
        self.rule = _rule(scheduler)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1, 2)
        self.lookahead = int(lookahead)
        keep = max(self.lookahead, 1)
        self.carry = np.zeros((units, rows, keep, lanes), dtype=np.uint8)
        self.carry_len = np.zeros(units, dtype=np.int64)
        self.started = np.zeros(units, dtype=np.bool_)
        self.tail = np.zeros((window_groups, 0, lanes), dtype=np.uint8)
        self.low_tail = np.zeros((window_groups if trailing else 0, 0, lanes), dtype=np.uint8)
        self.bits = bits
        self.cycles = np.zeros((units, window_groups), dtype=np.int64)
        self.lane_cycles = np.zeros_like(self.cycles)

    def feed(self, piece: np.ndarray, frame: np.ndarray, final: bool = False,
             lows: np.ndarray | None = None) -> None:
        """Schedule the next `piece` (uint8 0/1 [U, R, Sc, L]) against its window groups'
        costs `frame` (uint8 [WG, Sc, L]; `lows` with trailing zeros skipped, see `frames`)."""
        piece = np.ascontiguousarray(piece, dtype=np.uint8)
        frame = np.ascontiguousarray(np.concatenate([self.tail, frame.astype(np.uint8)], axis=1))
        if self.low_tail.shape[0]:
            lows = np.ascontiguousarray(np.concatenate([self.low_tail, lows.astype(np.uint8)], axis=1))
        else:
            lows = np.zeros((0,) + frame.shape[1:], dtype=np.uint8)
        _serial_resume(piece, self.carry, self.carry_len, self.started, frame, lows, self.bits,
                       self.tail.shape[1], self.offsets, self.lookahead, self.rule, final, self.cycles,
                       self.lane_cycles)
        keep = self.carry.shape[2]
        self.tail = frame[:, -keep:].copy() if frame.shape[1] > keep else frame
        if self.low_tail.shape[0]:
            self.low_tail = lows[:, -keep:].copy() if lows.shape[1] > keep else lows


def unit_costs_reference(sources: np.ndarray, cycles: np.ndarray, frame: np.ndarray,
                         lows: np.ndarray | None = None, bits: int = 16) -> np.ndarray:
    """NumPy reference of `serial_units`' cycles from a recorded schedule (`schedule_tiles`
    with keep_schedule: sources [U, R, S, L], cycles [U]), `frame` [WG, S, L] and `lows`."""
    units = sources.shape[0]
    flat = frame.reshape(frame.shape[0], -1).astype(np.int64)
    low = None if lows is None else lows.reshape(lows.shape[0], -1).astype(np.int64)
    out = np.zeros((units, frame.shape[0]), dtype=np.int64)
    for u in range(units):
        for c in range(int(cycles[u])):
            slots = np.unique(sources[u, :, c, :][sources[u, :, c, :] >= 0])
            if not slots.size:
                out[u] += 1
                continue
            top = flat[:, slots].max(axis=1)
            if low is not None:  # bits from the group's lowest set bit to its widest value's top
                top = top + low[:, slots].max(axis=1) - bits
            out[u] += np.maximum(top, 1)
    return out
