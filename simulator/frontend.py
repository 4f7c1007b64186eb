"""The weight-skipping front-end: which slots a zero may borrow a non-zero from.

A zero in the scheduled operand's slot (step t, lane l) may be filled by a non-zero
from slot (t + dt, (l + dl) mod lanes) for (dt, dl) in the connectivity set. Each
multiplier then needs an (h + d + 1)-input multiplexer to pick the broadcast value
of the moved value's original slot out of a window of h + 1 steps.

Connectivity sets (offsets in steps and lanes, in the scheduler's priority order):

- ``none``:   {} (no skipping at all: the dense array);
- ``L<h,d>``: lookahead (1..h, 0), then lookaside (1, -1), (1, -2), ..., (1, -d);
- ``T<h,d>``: lookahead (1..h, 0), then d lateral offsets dealt round-robin over the
  h lookahead steps; step dt draws from the sequence -dt, +dt, +(dt+2), -(dt+2),
  +(dt+4), -(dt+4), ... For T<2,5> this gives (1,-1), (1,1), (1,3), (2,-2), (2,2),
  Bit-Tactical's "trident".

A pattern cannot place an offset whose lane shift is 0 mod `lanes` or that repeats
another offset of the same step; `connectivity` raises `FrontendError` for those.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("T", "L", "none")


class FrontendError(ValueError):
    """A front-end shape/lookahead/lookaside that cannot be built on the given lanes."""


@dataclass(frozen=True)
class Frontend:
    """A front-end configuration: `shape` in T | L | none, `lookahead` h (steps),
    `lookaside` d (number of lateral connections)."""

    shape: str = "T"
    lookahead: int = 2
    lookaside: int = 5

    def __str__(self) -> str:
        return "none" if self.shape == "none" else f"{self.shape}<{self.lookahead},{self.lookaside}>"


def _t_lateral(dt: int):
    """Endless lateral-offset sequence of T-pattern step dt: -dt, +dt, +(dt+2), -(dt+2), ..."""
    yield -dt
    yield dt
    m = dt + 2
    while True:
        yield m
        yield -m
        m += 2


def connectivity(frontend: Frontend, lanes: int) -> np.ndarray:
    """Connectivity set of `frontend` on `lanes` weight lanes, as int64 array [K, 2] of
    (dt, dl) in priority order. Raises `FrontendError` if it cannot be placed."""
    shape, h, d = frontend.shape, frontend.lookahead, frontend.lookaside
    if shape not in SHAPES:
        raise FrontendError(f"shape: expected one of {', '.join(SHAPES)}, got {shape!r}")
    if shape == "none":
        if h or d:
            raise FrontendError("lookahead/lookaside: expected 0 (or absent) for shape none")
        return np.zeros((0, 2), dtype=np.int64)
    if h < 1:
        raise FrontendError(f"lookahead: expected an integer >= 1 for shape {shape}, got {h}")
    if d < 0:
        raise FrontendError(f"lookaside: expected an integer >= 0, got {d}")
    offsets = _place(shape, h, d, lanes)
    if offsets is None:
        raise FrontendError(f"lookaside: {shape}<{h},{d}> cannot place {d} lateral connections "
                            f"on {lanes} lanes; expected lookaside <= {max_lookaside(shape, h, lanes)}")
    return np.array(offsets, dtype=np.int64).reshape(-1, 2)


def _place(shape: str, h: int, d: int, lanes: int) -> list[tuple[int, int]] | None:
    """Offsets of an L or T pattern, or None if some lateral offset repeats another of
    its step or shifts by 0 mod `lanes`."""
    offsets = [(dt, 0) for dt in range(1, h + 1)]
    if shape == "L":
        lateral = [(1, -j) for j in range(1, d + 1)]
    else:
        gens = [_t_lateral(dt) for dt in range(1, h + 1)]
        lateral = [(j % h + 1, next(gens[j % h])) for j in range(d)]
        lateral.sort(key=lambda o: o[0])  # stable: step 1's offsets first, in dealt order
    seen = {(dt, 0) for dt, _ in offsets}
    for dt, dl in lateral:
        key = (dt, dl % lanes)
        if key in seen:  # covers dl == 0 mod lanes (collides with the lookahead offset)
            return None
        seen.add(key)
    return offsets + lateral


def max_lookaside(shape: str, lookahead: int, lanes: int) -> int:
    """Largest lookaside d that a `shape` pattern with this lookahead can place on `lanes` lanes."""
    d = 0
    while _place(shape, lookahead, d + 1, lanes) is not None:
        d += 1
    return d
