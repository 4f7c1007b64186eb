"""Functional check of a bit-serial back-end (TCLp, TCLe): the bit-serial result of every
pass, recomputed from the scheduled buffers, equals the quantised NumPy reference exactly.

The layer's tensors are quantised (quantize.py, each with its whole tensor's scale) and
the pass lowered on the integers. The front-end schedule is recorded (verify.py checks
its legality and that every non-zero is multiplied once); then, per unit, cycle and
window group, the replay derives the step's length P from the values it reads (the
largest `value_costs` over the group's windows and the slots the multipliers read) and
accumulates, per multiplier and window, weight x `bitserial.serial_value(q, P)`: what a
bit-serial multiplier holds after P cycles (the low P bits of q, or its first P terms).
Two things are checked:

1. output: equal, integer for integer, to `lowering.reference` of the quantised layer,
   so no step is shorter than its values need;
2. cycles: the replay's summed step lengths per (unit, window group) equal what the
   timing model (`bitserial.serial_units`) charged, so the cycles reported are the
   cycles that compute the right result.
"""

from __future__ import annotations

import numba
import numpy as np

from .array import _units, schedule_offsets, time_streams
from .bitserial import PARTIAL_TERMS, frames, serial_units, split_codes, value_costs
from .config import Architecture
from .lowering import LoweredPass, reference
from .quantize import quantize
from .serial_streaming import TENSORS, CodedLayer
from .trace import TraceLayer
from .verify import CheckResult, _replay


@numba.njit(cache=True, nogil=True)
def _serial(q, p, start, signed, tcle, partial):
    if tcle:
        m = abs(q)
        v = np.int64(partial[m, min(p, 10)])
        return -v if q < 0 else v
    low = (q >> start) & ((np.int64(1) << p) - 1)
    if signed and (low >> (p - 1)) & 1:
        low -= np.int64(1) << p
    return low << start


@numba.njit(cache=True, nogil=True)
def _replay_serial(values, bcast, costs, lows, bits, sources, cycles, columns, lanes, signed, tcle, partial,
                   out, charged):
    """values [U*R, S*L] scheduled integers; bcast, costs [W, S*L] (and lows, bits - low,
    with trailing zeros skipped; else empty); sources [U, R, C, L]."""
    trailing = lows.shape[0] > 0
    units, rows, _, _ = sources.shape
    windows = bcast.shape[0]
    for u in range(units):
        for c in range(cycles[u]):
            for g in range(charged.shape[1]):
                first, stop = g * columns, min((g + 1) * columns, windows)
                p = 1
                top = 0
                for r in range(rows):
                    for l in range(lanes):
                        s = sources[u, r, c, l]
                        if s >= 0:
                            for w in range(first, stop):
                                if costs[w, s] > p:
                                    p = costs[w, s]
                                if trailing and lows[w, s] > top:
                                    top = lows[w, s]
                start = 0
                if trailing:  # the bits from the group's lowest set bit to its widest value's top
                    start = bits - top
                    p = max(1, p - start)
                    start = min(start, bits - 1)
                charged[u, g] += p
                for r in range(rows):
                    for l in range(lanes):
                        s = sources[u, r, c, l]
                        if s >= 0:
                            v = values[u * rows + r, s]
                            for w in range(first, stop):
                                out[u * rows + r, w] += v * _serial(bcast[w, s], p, start, signed, tcle, partial)


def quantized_layer(layer: TraceLayer, bits: int) -> tuple[TraceLayer, CodedLayer]:
    """(the layer's tensors quantised with their whole-tensor scales, as float64 integers;
    the `CodedLayer` that holds those scales and signs)."""
    coded = CodedLayer(layer, "tclp", bits)
    q = {}
    for name in TENSORS:
        x = getattr(layer, name)
        if x is not None and name in coded.scales:
            q[name] = quantize(x, bits, coded.scales[name]).values.astype(np.float64)
    saved = q["input"] if layer.saved_is_input else q.get("input_saved")
    return TraceLayer(layer.spec, q["weight"], q["input"], saved, q.get("grad_output")), coded


def recompute_serial(lowered: LoweredPass, arch: Architecture, reference_out: np.ndarray,
                     signed: bool) -> CheckResult:
    """Check `lowered` (of quantised integers) on the bit-serial `arch` against the
    integer reference `reference_out`; `signed`: whether the broadcast tensor has a
    negative value."""
    name, pas = lowered.layer, lowered.pass_name
    fe = arch.frontend
    out = np.zeros(lowered.out_shape)
    for part in lowered.parts:
        sched, bcast = lowered.operands(part)
        _, record = time_streams(sched != 0, bcast.shape[1], arch, keep_schedule=True)
        _, problem = _replay(sched, bcast, arch, record, outputs=False)  # legality, each non-zero once
        if problem:
            return CheckResult(name, pas, False, np.inf, problem)
        got = np.zeros(sched.shape[:2] + (bcast.shape[1],))
        q = bcast.astype(np.int64)
        codes = value_costs(q, arch.backend, signed, arch.trailing_zeros, arch.bits)
        costs, lows = split_codes(codes, arch.trailing_zeros)
        hi, lo = frames(codes, arch.columns, arch.trailing_zeros)
        lows = np.zeros((0, 0), dtype=np.uint8) if lows is None else lows
        for g in range(sched.shape[0]):
            units = record.sources[g].shape[0]
            values = np.zeros((units * arch.rows, sched.shape[2] * sched.shape[3]), dtype=np.int64)
            values[:sched.shape[1]] = sched[g].reshape(sched.shape[1], -1).astype(np.int64)
            acc = np.zeros((units * arch.rows, bcast.shape[1]), dtype=np.int64)
            charged = np.zeros((units, hi.shape[1]), dtype=np.int64)
            _replay_serial(values, q[g].reshape(q.shape[1], -1), costs[g].reshape(q.shape[1], -1),
                           lows[g].reshape(q.shape[1], -1) if lows.size else lows, arch.bits,
                           record.sources[g], record.cycles[g], arch.columns, arch.lanes, signed,
                           arch.backend == "tcle", PARTIAL_TERMS, acc, charged)
            timed = serial_units(_units((sched[g] != 0).view(np.uint8), arch.rows), hi[g],
                                 schedule_offsets(arch), fe.lookahead, fe.scheduler, lo[g], arch.bits)[0]
            if not np.array_equal(charged, timed):
                u, w = np.argwhere(charged != timed)[0]
                return CheckResult(name, pas, False, np.inf,
                                   f"tile unit {u} window group {w}: the replay needs {charged[u, w]} "
                                   f"cycles, the timing model charged {timed[u, w]}")
            got[g] = acc[:sched.shape[1]]
        if lowered.scheduled == "input":
            got = got.transpose(0, 2, 1)
        out[:, :, part.input_ids] += got
    err = float(np.max(np.abs(out - reference_out))) if out.size else 0.0
    ok = err == 0.0
    msg = "" if ok else f"bit-serial output differs from the quantised reference by up to {err:.3g}"
    return CheckResult(name, pas, ok, err, msg)


def check_serial_layer(layer: TraceLayer, lowered_of, pass_name: str, arch: Architecture) -> CheckResult:
    """The check of one pass of `layer` (values): `lowered_of(quantised layer)` lowers it."""
    q, coded = quantized_layer(layer, arch.bits)
    lowered = lowered_of(q)
    tensor = lowered.broadcast_tensor
    if tensor not in coded.signed:  # no saved copy: the backward pass reads the input
        tensor = "input"
    return recompute_serial(lowered, arch, reference(q, pass_name), coded.signed[tensor])
