"""The weight-skipping front-end: which slots a zero may borrow a non-zero from, and in
what order the scheduler looks at them.

A zero in the scheduled operand's slot (step t, lane l) may be filled by a non-zero
from slot (t + dt, (l + dl) mod lanes) for (dt, dl) in the connectivity set. Each
multiplier then needs an (h + d + 1)-input multiplexer to pick the broadcast value
of the moved value's original slot out of a window of h + 1 steps.

Connectivity sets, as (dt, dl) offsets (steps, lanes), in their *natural order*:
the lookahead (1, 0), ..., (h, 0), then the d lateral offsets in the order the
pattern generates them.

- ``none``:   {} (no skipping at all: the dense array);
- ``L<h,d>``: lateral (1, -1), (1, -2), ..., (1, -d) (both patterns);
- ``T<h,d>``, pattern ``spread`` (accelsim's): d lateral offsets dealt round-robin over
  the h lookahead steps; step dt draws from -dt, +dt, +(dt+2), -(dt+2), +(dt+4), ...
  For T<8,7>: (1,-1), (2,-2), ..., (7,-7).
- ``T<h,d>``, pattern ``dnnsim`` (DNNsim 4748a60's generator, core/include/core/
  BitTactical.h): pairs of growing distance, the step advancing once per pair and
  wrapping to 1 after h: (1,+1), (1,-1), (2,+2), (2,-2), (3,+3), ... For T<8,7>:
  (1,+-1), (2,+-2), (3,+-3), (4,4).
  Both patterns give Bit-Tactical's trident for T<2,5>: {(1,+-1), (1,3), (2,+-2)}.
- ``custom``: the lookahead plus the lateral offsets listed in `offsets`.

The scheduler decides the *priority* in which a zero slot tries its offsets
(`search_order`): ``in-order`` (accelsim's reference greedy scheduler) tries the
natural order, lookahead first; the others try DNNsim's order, all offsets sorted by
(dt, dl), so T<2,5> tries (1,-1), (1,0), (1,1), (1,3), (2,-2), (2,0), (2,2).

A pattern cannot place an offset whose lane shift is 0 mod `lanes` or that repeats
another offset of the same step; `connectivity` raises `FrontendError` for those.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("T", "L", "none")
PATTERNS = ("spread", "dnnsim")
SCHEDULERS = ("in-order", "dnnsim", "fewest-candidates", "matching", "nearest-matching")


class FrontendError(ValueError):
    """A front-end shape/lookahead/lookaside/offsets that cannot be built on the given lanes."""


@dataclass(frozen=True)
class Frontend:
    """A front-end configuration: `shape` in T | L | none | custom, `lookahead` h (steps),
    `lookaside` d (number of lateral connections), the T `pattern` (spread | dnnsim),
    custom lateral `offsets` ((dt, dl) pairs; shape custom) and the `scheduler`."""

    shape: str = "T"
    lookahead: int = 2
    lookaside: int = 5
    pattern: str = "spread"
    offsets: tuple[tuple[int, int], ...] | None = None
    scheduler: str = "in-order"

    def __str__(self) -> str:
        if self.shape == "none":
            return "none"
        text = f"{self.shape}<{self.lookahead},{self.lookaside}>"
        if self.shape == "custom":
            text += "[" + " ".join(f"{dt}:{dl:+d}" for dt, dl in self.offsets or ()) + "]"
        elif self.shape == "T" and self.pattern != "spread":
            text += f" {self.pattern}-pattern"
        return text


def _spread_lateral(dt: int):
    """Endless lateral-offset sequence of spread-pattern step dt: -dt, +dt, +(dt+2), -(dt+2), ..."""
    yield -dt
    yield dt
    m = dt + 2
    while True:
        yield m
        yield -m
        m += 2


def _dnnsim_lateral(h: int, d: int) -> list[tuple[int, int]]:
    """DNNsim's T generator: (1,+1), (1,-1), (2,+2), (2,-2), ..., step wrapping after h."""
    out, step, dist = [], 1, 1
    for i in range(d):
        out.append((step, dist if i % 2 == 0 else -dist))
        if i % 2 == 1:
            dist += 1
            step = step % h + 1
    return out


def connectivity(frontend: Frontend, lanes: int) -> np.ndarray:
    """Connectivity set of `frontend` on `lanes` weight lanes, as int64 array [K, 2] of
    (dt, dl) in natural order. Raises `FrontendError` if it cannot be placed."""
    shape, h, d = frontend.shape, frontend.lookahead, frontend.lookaside
    if shape not in SHAPES + ("custom",):
        raise FrontendError(f"shape: expected one of {', '.join(SHAPES)}, got {shape!r}")
    if frontend.pattern not in PATTERNS:
        raise FrontendError(f"pattern: expected one of {', '.join(PATTERNS)}, got {frontend.pattern!r}")
    if frontend.scheduler not in SCHEDULERS:
        raise FrontendError(f"scheduler: expected one of {', '.join(SCHEDULERS)}, "
                            f"got {frontend.scheduler!r}")
    if shape == "none":
        if h or d:
            raise FrontendError("lookahead/lookaside: expected 0 (or absent) for shape none")
        return np.zeros((0, 2), dtype=np.int64)
    if h < 1:
        raise FrontendError(f"lookahead: expected an integer >= 1 for shape {shape}, got {h}")
    if shape == "custom":
        return np.array(custom_offsets(frontend.offsets or (), h, lanes), dtype=np.int64).reshape(-1, 2)
    if d < 0:
        raise FrontendError(f"lookaside: expected an integer >= 0, got {d}")
    offsets = _place(shape, h, d, lanes, frontend.pattern)
    if offsets is None:
        raise FrontendError(f"lookaside: {frontend} cannot place {d} lateral connections "
                            f"on {lanes} lanes; expected lookaside <= "
                            f"{max_lookaside(shape, h, lanes, frontend.pattern)}")
    return np.array(offsets, dtype=np.int64).reshape(-1, 2)


def custom_offsets(lateral, lookahead: int, lanes: int) -> list[tuple[int, int]]:
    """The lookahead plus the validated custom `lateral` offsets; `FrontendError` naming
    the first bad entry as ``offsets[i]: ...``."""
    out = [(dt, 0) for dt in range(1, lookahead + 1)]
    seen = {(dt, 0) for dt, _ in out}
    for i, pair in enumerate(lateral):
        ok = (isinstance(pair, (list, tuple)) and len(pair) == 2
              and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair))
        if not ok or not 1 <= pair[0] <= lookahead:
            raise FrontendError(f"offsets[{i}]: expected [dt, dl], two integers with dt in "
                                f"1..{lookahead} (the lookahead), got {_show(pair)}")
        dt, dl = int(pair[0]), int(pair[1])
        if dl % lanes == 0:
            raise FrontendError(f"offsets[{i}]: expected a lane shift dl that is not 0 mod "
                                f"{lanes} lanes (that is the in-lane lookahead), got {_show(pair)}")
        if (dt, dl % lanes) in seen:
            raise FrontendError(f"offsets[{i}]: expected no duplicate connection (mod {lanes} "
                                f"lanes), got {_show(pair)}")
        seen.add((dt, dl % lanes))
        out.append((dt, dl))
    return out


def _show(v) -> str:
    text = repr(list(v)) if isinstance(v, tuple) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _place(shape: str, h: int, d: int, lanes: int, pattern: str = "spread") -> list[tuple[int, int]] | None:
    """Offsets of an L or T pattern, or None if some lateral offset repeats another of
    its step or shifts by 0 mod `lanes`."""
    if d >= lanes * h:  # more connections than a window has slots: cannot place
        return None
    offsets = [(dt, 0) for dt in range(1, h + 1)]
    if shape == "L":
        lateral = [(1, -j) for j in range(1, d + 1)]
    elif pattern == "dnnsim":
        lateral = _dnnsim_lateral(h, d)
    else:
        gens = [_spread_lateral(dt) for dt in range(1, h + 1)]
        lateral = [(j % h + 1, next(gens[j % h])) for j in range(d)]
        lateral.sort(key=lambda o: o[0])  # stable: step 1's offsets first, in dealt order
    seen = {(dt, 0) for dt, _ in offsets}
    for dt, dl in lateral:
        key = (dt, dl % lanes)
        if key in seen:  # covers dl == 0 mod lanes (collides with the lookahead offset)
            return None
        seen.add(key)
    return offsets + lateral


def max_lookaside(shape: str, lookahead: int, lanes: int, pattern: str = "spread") -> int:
    """Largest lookaside d that a `shape` pattern with this lookahead can place on `lanes` lanes.

    Each pattern's offsets for d+1 include those for d, so once a d cannot be placed no
    larger one can: a binary search (O(d log d), not the O(d^2) of trying each d)."""
    lo, hi = 0, lanes * lookahead  # _place(lo) succeeds (d = 0 always does); hi always fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _place(shape, lookahead, mid, lanes, pattern) is None:
            hi = mid
        else:
            lo = mid
    return lo


def search_order(offsets: np.ndarray, scheduler: str) -> np.ndarray:
    """The offsets in the order `scheduler` tries them: natural for in-order, sorted by
    (dt, dl) for the others (DNNsim's `std::sort` of its search map)."""
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    if scheduler == "in-order" or not len(offsets):
        return offsets
    return offsets[np.lexsort((offsets[:, 1], offsets[:, 0]))]
