"""An independent transcription of DNNsim 4748a60's Bit-Tactical scheduler and cycle walk,
for the tests only (core/src/BitTactical.cpp `original_schedule`, `search`, `promote`;
core/include/core/BitTactical.h for the search map; core/src/OutputStationary.cpp for
`wgt_end_time`; core/src/WindowFirstOutS.cpp for the per-tile row walk).

It works as DNNsim does, on a *buffer* of rows [time][filter lane * lanes + lane] whose
values are swapped in place, not on accelsim's consumed-mask-and-window form; so a test
that finds the two equal checks accelsim's `dnnsim` scheduler against the C++ code's
algorithm, not against itself.
"""

from __future__ import annotations


def search_map(shape: str, h: int, d: int) -> list[tuple[int, int]]:
    """BitTactical.h's constructor: lookahead, then the L or T lateral offsets, sorted."""
    out = [(i, 0) for i in range(1, h + 1)]
    if shape == "L":
        out += [(1, -i) for i in range(1, d + 1)]
    else:
        step, dist, sign = 1, 1, False
        for _ in range(d):
            out.append((step, dist))
            dist *= -1
            if sign:
                dist += 1
                step += 1
                if step > h:
                    step = 1
                sign = False
            else:
                sign = True
    return sorted(out)


def original_schedule(buffer: list[list[int]], lanes: int, h: int, smap) -> None:
    """Schedule `buffer` (rows of filter lanes x lanes values; 0 = zero) in place."""
    max_time = len(buffer)
    groups = len(buffer[0]) // lanes

    def search(time, lane):
        upper, lower = (lane // lanes) * lanes, (lane // lanes + 1) * lanes
        found = []
        if time + 1 >= max_time:
            return found
        for dt, dl in smap:
            th, ld = time + dt, lane + dl
            if th >= max_time:
                continue
            ld = lanes + ld if ld < upper else ld
            ld = ld - lanes if ld >= lower else ld
            if buffer[th][ld] != 0:
                found.append((th, ld))
        return found

    skip = 0
    for time in range(max_time):
        if skip < h and all(v == 0 for v in buffer[time]):
            skip += 1
            continue
        skip = 0
        for group in range(groups):
            overlap = 1
            while overlap > 0:
                zeros = [(time, lane) for lane in range(group * lanes, (group + 1) * lanes)
                         if buffer[time][lane] == 0]
                overlap = -1
                num = [0] * lanes
                cands = [[] for _ in range(lanes)]
                for t, lane in zeros:
                    cands[lane % lanes] = search(t, lane)
                    if cands[lane % lanes]:
                        num[lane % lanes] = len(cands[lane % lanes])
                        overlap = max(overlap, num[lane % lanes])
                for t, lane in zeros:
                    if num[lane % lanes] == overlap:
                        ct, cl = cands[lane % lanes][0]
                        buffer[t][lane], buffer[ct][cl] = buffer[ct][cl], buffer[t][lane]
                        break


def tile_cycles(buffer: list[list[int]], h: int) -> int:
    """Rows a tile executes: the skip walk of OutputStationary/WindowFirstOutS up to and
    including `wgt_end_time`, the last row the walk does not skip."""
    skip, processed = 0, 0
    for row in buffer:
        if skip < h and all(v == 0 for v in row):
            skip += 1
            continue
        skip = 0
        processed += 1
    return processed


def dnnsim_tile(nonzero, shape: str, h: int, d: int) -> int:
    """Cycles of one tile given as nonzero[r][t][l] (a value per non-zero: its 1-based
    original position, so swaps are traceable)."""
    rows, steps, lanes = len(nonzero), len(nonzero[0]), len(nonzero[0][0])
    buffer = [[(t * 1000 + r * lanes + l + 1) if nonzero[r][t][l] else 0
               for r in range(rows) for l in range(lanes)] for t in range(steps)]
    original_schedule(buffer, lanes, h, search_map(shape, h, d))
    return tile_cycles(buffer, h)


def reshape_first_layer_wgt(weight, stride: int):
    """Array.cpp `reshape_first_layer_wgt`: [M][3][Kx][Ky] -> [M][3*s*s][ceil(Kx/s)][ceil(Ky/s)],
    new channel (j % s) * s * C + C * (i % s) + k at (i / s, j / s)."""
    m, c, kx, ky = (len(weight), len(weight[0]), len(weight[0][0]), len(weight[0][0][0]))
    nkx, nky = -(-kx // stride), -(-ky // stride)
    out = [[[[0.0] * nky for _ in range(nkx)] for _ in range(c * stride * stride)] for _ in range(m)]
    for f in range(m):
        for k in range(c):
            for i in range(kx):
                for j in range(ky):
                    nk = (j % stride) * stride * c + c * (i % stride) + k
                    out[f][nk][i // stride][j // stride] = weight[f][k][i][j]
    return out


def weight_buffers(weight, rows: int, lanes: int):
    """OutputStationary.cpp's weight buffer of a conv layer (one group): per filter set of
    `rows` filters, rows [time][filter * lanes + lane], looping y (last axis) outermost,
    then x, then channel blocks of `lanes`, each block padded to a whole row."""
    m, c, kx, ky = (len(weight), len(weight[0]), len(weight[0][0]), len(weight[0][0][0]))
    steps = kx * ky * -(-c // lanes)
    sets = -(-m // rows)
    buffers = [[[0] * (rows * lanes) for _ in range(steps)] for _ in range(sets)]
    for f in range(m):
        t = 0
        for y in range(ky):
            for x in range(kx):
                for k in range(0, c, lanes):
                    for i, ch in enumerate(range(k, min(k + lanes, c))):
                        if weight[f][ch][x][y] != 0:
                            buffers[f // rows][t][(f % rows) * lanes + i] = f * 100000 + t * lanes + i + 1
                    t += 1
    return buffers


def forward_cycles(weight, windows: int, stride: int, tiles: int, rows: int, lanes: int,
                   shape: str, h: int, d: int) -> int:
    """DNNsim's forward compute cycles of a conv or fc layer with one group: weight
    [M][C][Kx][Ky] (fc: Kx = Ky = 1), `windows` output positions, one per cycle; the first
    layer's rewrite when C == 3 and stride > 1; each filter set scheduled, tiles taking
    `tiles` consecutive filter sets in lockstep (the max of their row walks)."""
    if len(weight[0]) == 3 and stride > 1:
        weight = reshape_first_layer_wgt(weight, stride)
    smap = search_map(shape, h, d)
    costs = []
    for buffer in weight_buffers(weight, rows, lanes):
        original_schedule(buffer, lanes, h, smap)
        costs.append(tile_cycles(buffer, h))
    per_group = [max(costs[i:i + tiles]) for i in range(0, len(costs), tiles)]
    return sum(per_group) * windows
