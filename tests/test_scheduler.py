"""The greedy lookahead/lookaside scheduler: hand-worked cases, invariants, numba == reference."""

import numpy as np
import pytest

from simulator.frontend import Frontend, connectivity
from simulator.scheduler import schedule_tile_reference, schedule_tiles


def tile(rows, steps, lanes, nonzeros):
    """A [1, rows, steps, lanes] mask with ones at the given (row, step, lane)."""
    m = np.zeros((1, rows, steps, lanes), dtype=np.uint8)
    for r, t, l in nonzeros:
        m[0, r, t, l] = 1
    return m


def used_slots(sources, cycles, rows):
    return [[int(s) for s in sources[0, r, c] if s >= 0] for c in range(cycles) for r in range(rows)]


def test_l11_on_four_lanes_two_filter_lanes():
    # L<1,1>: connectivity (1,0), (1,-1); lanes = 4; two filter lanes in one tile.
    #
    # filter lane 0          filter lane 1
    #   t0: 1 0 0 0            0 0 0 0
    #   t1: 0 1 1 0            1 0 0 0
    #   t2: 0 0 0 0            0 0 0 0
    #   t3: 1 1 0 0            0 0 1 0
    #
    # cycle 0, window base 0:
    #   fl0: l0 <- (0,0) in place; l1 <- (1,1) by (1,0); l2 <- (1,2) by (1,0);
    #        l3: (1,3) zero, (1,2) already taken -> idle
    #   fl1: l0 <- (1,0) by (1,0); l1: (1,1) zero, (1,0) taken -> idle; l2, l3 idle
    #   steps 1 and 2 are now empty for both filter lanes; h = 1 allows skipping one:
    #   the window moves to base 2 (not 3).
    # cycle 1, window base 2:
    #   fl0: l0 <- (3,0) by (1,0); l1 <- (3,1) by (1,0); l2: (3,2) zero, (3,1) taken; l3 idle
    #   fl1: l2 <- (3,2) by (1,0); the others idle
    #   step 3 is empty: the window moves past the end. 2 cycles (dense: 4, ideal: 2).
    m = tile(2, 4, 4, [(0, 0, 0), (0, 1, 1), (0, 1, 2), (0, 3, 0), (0, 3, 1),
                       (1, 1, 0), (1, 3, 2)])
    offsets = connectivity(Frontend("L", 1, 1), 4)
    assert offsets.tolist() == [[1, 0], [1, -1]]
    cycles, sources, bases = schedule_tiles(m, offsets, 1, keep_schedule=True)
    assert cycles.tolist() == [2]
    assert bases[0, :2].tolist() == [0, 2]
    assert sources[0, 0, 0].tolist() == [0, 5, 6, -1]
    assert sources[0, 1, 0].tolist() == [4, -1, -1, -1]
    assert sources[0, 0, 1].tolist() == [12, 13, -1, -1]
    assert sources[0, 1, 1].tolist() == [-1, -1, 14, -1]


def test_t25_trident_on_sixteen_lanes():
    # T<2,5>: (1,0), (2,0), then lateral (1,-1), (1,1), (1,3), (2,-2), (2,2). One filter lane.
    # Non-zeros: t0: lane 0; t1: lanes 1, 4, 5; t2: lane 3; t5: lane 7.
    # cycle 0, base 0:
    #   l0 <- (0,0) in place
    #   l1 <- (1,1) by (1,0)
    #   l2: (1,2) no, (2,2) no, (1,1) taken, (1,3) no, (1,5) yes  -> by (1,+3)
    #   l3: (1,3) no, (2,3) yes                                   -> by (2,0)
    #   l4 <- (1,4) by (1,0); l5..l15: nothing left in steps 1-2 -> idle
    #   steps 1, 2 empty, steps 3, 4 empty too, but at most h = 2 skipped: base 3.
    # cycle 1, base 3 (window 3..5): the only value left is (5,7), reachable from lane 5
    #   by (2,+2), from lane 7 by (2,0) and from lane 9 by (2,-2); lane 5 asks first.
    #   Then steps 4, 5 empty: the window passes the end. 2 cycles = 6 / (h+1): the cap.
    m = tile(1, 6, 16, [(0, 0, 0), (0, 1, 1), (0, 1, 4), (0, 1, 5), (0, 2, 3), (0, 5, 7)])
    offsets = connectivity(Frontend("T", 2, 5), 16)
    assert offsets.tolist() == [[1, 0], [2, 0], [1, -1], [1, 1], [1, 3], [2, -2], [2, 2]]
    cycles, sources, bases = schedule_tiles(m, offsets, 2, keep_schedule=True)
    assert cycles.tolist() == [2]
    assert bases[0, :2].tolist() == [0, 3]
    expected0 = [-1] * 16
    expected0[:5] = [0, 16 + 1, 16 + 5, 32 + 3, 16 + 4]
    assert sources[0, 0, 0].tolist() == expected0
    expected1 = [-1] * 16
    expected1[5] = 5 * 16 + 7
    assert sources[0, 0, 1].tolist() == expected1


def test_skip_limit_all_but_last_step_empty():
    # h = 2, 7 steps, one non-zero at (6, 0): bases 0 -> 3 -> 6 (at most 2 steps skipped
    # in a row), 3 cycles = ceil(7 / 3), though the value could have been reached earlier
    # only by a window that advanced faster than the activation buffer allows.
    m = tile(1, 7, 4, [(0, 6, 0)])
    cycles, sources, bases = schedule_tiles(m, connectivity(Frontend("L", 2, 0), 4), 2, True)
    assert cycles.tolist() == [3]
    assert bases[0, :3].tolist() == [0, 3, 6]
    assert sources[0, 0, 2, 0] == 24


def test_no_frontend_is_dense():
    m = (np.random.default_rng(0).random((3, 4, 9, 8)) < 0.2).astype(np.uint8)
    cycles = schedule_tiles(m, connectivity(Frontend("none", 0, 0), 8), 0)
    assert cycles.tolist() == [9, 9, 9]


FRONTENDS = [("L", 1, 0), ("L", 1, 1), ("L", 2, 3), ("T", 1, 2), ("T", 2, 5), ("T", 3, 4),
             ("T", 4, 7), ("none", 0, 0)]


@pytest.mark.parametrize("shape,h,d", FRONTENDS)
def test_numba_kernel_equals_reference(shape, h, d):
    rng = np.random.default_rng(hash((shape, h, d)) % 2**32)
    for _ in range(12):
        rows, steps, lanes = rng.integers(1, 5), rng.integers(1, 14), int(rng.choice([4, 8, 16]))
        if shape == "T" and d > 0:
            lanes = 16
        density = rng.choice([0.05, 0.3, 0.7, 1.0])
        m = (rng.random((2, rows, steps, lanes)) < density).astype(np.uint8)
        offsets = connectivity(Frontend(shape, h, d), lanes)
        cycles, sources, bases = schedule_tiles(m, offsets, h, keep_schedule=True)
        for u in range(2):
            ref_cycles, ref_sources, ref_bases = schedule_tile_reference(m[u].tolist(), offsets, h)
            assert cycles[u] == ref_cycles
            assert bases[u, :ref_cycles].tolist() == ref_bases
            got = sources[u, :, :ref_cycles, :].transpose(1, 0, 2).tolist()
            assert got == ref_sources


@pytest.mark.parametrize("shape,h,d", FRONTENDS)
def test_invariants_on_random_tiles(shape, h, d):
    rng = np.random.default_rng(7 + h * 10 + d)
    lanes = 16
    offsets = connectivity(Frontend(shape, h, d), lanes)
    for density in (0.0, 0.02, 0.1, 0.3, 0.6, 1.0):
        m = (rng.random((20, 4, 27, lanes)) < density).astype(np.uint8)
        cycles, sources, _ = schedule_tiles(m, offsets, h, keep_schedule=True)
        steps = m.shape[2]
        ideal = np.ceil(m.sum(axis=(2, 3)) / lanes).max(axis=1)
        assert np.all(ideal <= cycles)
        assert np.all(cycles <= steps)
        assert np.all(steps <= cycles * (h + 1))  # the front-end alone never beats h+1
        if shape == "none":
            assert np.all(cycles == steps)
        # every non-zero is multiplied exactly once
        for u in range(m.shape[0]):
            for r in range(m.shape[1]):
                used = sources[u, r, :cycles[u]].ravel()
                used = np.sort(used[used >= 0])
                assert used.tolist() == np.flatnonzero(m[u, r].ravel()).tolist()


def test_fully_dense_tile_is_never_sped_up():
    m = np.ones((2, 3, 10, 16), dtype=np.uint8)
    cycles = schedule_tiles(m, connectivity(Frontend("T", 2, 5), 16), 2)
    assert cycles.tolist() == [10, 10]


@pytest.mark.parametrize("scheduler", ["in-order", "dnnsim", "fewest-candidates", "matching",
                                       "nearest-matching"])
@pytest.mark.parametrize("h,d", [(0, 0), (1, 1), (2, 5), (4, 7)])
def test_stream_fed_in_pieces_equals_whole_stream(scheduler, h, d):
    # the weight gradient's streams arrive batch chunk by batch chunk: cutting a stream
    # anywhere, even into pieces shorter than the lookahead, must not change any cycle
    from simulator.frontend import search_order
    from simulator.scheduler import StreamSchedule
    rng = np.random.default_rng(h * 31 + d)
    offsets = search_order(connectivity(Frontend("T" if d else ("L" if h else "none"), h, d), 16),
                           scheduler)
    for density in (0.0, 0.05, 0.3, 0.8):
        m = (rng.random((6, 4, 61, 16)) < density).astype(np.uint8)
        m[0, :, :3] = 0  # leading all-zero steps: the dnnsim rule's skip at the stream start
        whole = schedule_tiles(m, offsets, h, False, scheduler)
        for cuts in ([], [1], [2, 3, 40], list(range(1, 61, 7)), [h, h + 1, 2 * h + 2]):
            stream = StreamSchedule(6, 4, 16, offsets, h, scheduler)
            bounds = [0, *sorted(set(c for c in cuts if 0 < c < 61)), 61]
            for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
                got = stream.feed(m[:, :, a:b], final=i == len(bounds) - 2)
            assert got.tolist() == whole.tolist(), (density, cuts)
