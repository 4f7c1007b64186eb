"""Storage formats of a tensor in DRAM: how many bits a (sparse) tensor occupies.

Units: bits (and bytes = ceil(bits / 8)); `element_bits` is the width of one value.
For a tensor of `n` elements of which `nnz` are non-zero:

- dense:      n * element_bits
- bitmap:     n (one presence bit per element) + nnz * element_bits
- coordinate: CSR-like over a 2-D view [rows, cols] (rows = filters of a weight tensor,
              channel planes N*C of an activation, samples of an fc activation):
              nnz * (element_bits + ceil(log2 cols)) column indices and values, plus
              rows + 1 row pointers of ceil(log2(nnz + 1)) bits
- rle:        zero run-length over the flattened tensor (C order): one entry per non-zero,
              `run_bits` of preceding-zero count + the value; a gap longer than
              2**run_bits - 1 zeros costs an extra entry per 2**run_bits zeros (a maximal run
              followed by an explicit zero value, as in Eyeriss's run-length coder); trailing
              zeros are implied by the known tensor size
- ideal:      nnz * element_bits: values only, no metadata at all (a bound, for validation
              against SWAT Fig. 8a, which assumes a zero-overhead format)
- best:       the smallest of dense, bitmap, coordinate and rle for this tensor

Metadata is always counted for the real formats. The front-end's schedule metadata
(per scheduled value, the multiplexer select) is not a format: see `schedule_bits`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

REAL_FORMATS = ("dense", "bitmap", "coordinate", "rle")
FORMATS = REAL_FORMATS + ("ideal", "best")
ELEMENT_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "int16": 16, "int8": 8}


def _log2_ceil(x: int) -> int:
    """ceil(log2(x)) for an integer x >= 1 (exact; 0 for x <= 1)."""
    return (int(x) - 1).bit_length() if x > 1 else 0


@dataclass(frozen=True)
class Footprint:
    """What the formats need to know about one tensor: its size, non-zeros, the number of
    rows and columns of its coordinate view, and its zero-run entries per `run_bits`
    (the extra rle entries a gap costs, precomputed for one run width)."""

    elements: int
    nonzeros: int
    rows: int
    cols: int
    run_bits: int
    rle_fillers: int

    def bits(self, fmt: str, element_bits: int) -> int:
        """Stored size in bits in format `fmt` (one of FORMATS)."""
        n, nnz = self.elements, self.nonzeros
        if fmt == "dense":
            return n * element_bits
        if fmt == "bitmap":
            return n + nnz * element_bits
        if fmt == "coordinate":
            return nnz * (element_bits + _log2_ceil(self.cols)) + (self.rows + 1) * _log2_ceil(nnz + 1)
        if fmt == "rle":
            return (nnz + self.rle_fillers) * (self.run_bits + element_bits)
        if fmt == "ideal":
            return nnz * element_bits
        if fmt == "best":
            return min(self.bits(f, element_bits) for f in REAL_FORMATS)
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")

    def best_format(self, element_bits: int) -> str:
        """The real format `best` picks (ties: the earlier of REAL_FORMATS)."""
        return min(REAL_FORMATS, key=lambda f: self.bits(f, element_bits))


def coordinate_view(shape: tuple[int, ...], role: str) -> tuple[int, int]:
    """(rows, cols) of the coordinate format's 2-D view: a weight [K, C, R, S] or [K, C]
    has one row per filter; an activation [N, C, H, W] one row per channel plane and
    an fc activation [N, C] one row per sample."""
    n = int(np.prod(shape))
    if role == "weight" or len(shape) <= 2:
        rows = shape[0]
    else:
        rows = shape[0] * shape[1]
    return rows, (n // rows if rows else 0)


@numba.njit(cache=True, nogil=True)
def _count_runs(flat: np.ndarray, run_bits: int, gap: int) -> tuple[int, int, int]:
    nonzeros, fillers = 0, 0
    for v in flat:
        if v != 0:
            nonzeros += 1
            fillers += gap >> run_bits
            gap = 0
        else:
            gap += 1
    return nonzeros, fillers, gap


def count_runs(values: np.ndarray, run_bits: int) -> tuple[int, int]:
    """(non-zeros, extra rle entries) of `values` flattened in C order: each gap of g
    zeros before a non-zero costs g // 2**run_bits maximal-run entries with an explicit
    zero value. One pass (numba); `count_runs_reference` is the NumPy definition."""
    return count_runs_from(values, run_bits)[:2]


def count_runs_from(values: np.ndarray, run_bits: int, gap: int = 0) -> tuple[int, int, int]:
    """`count_runs` of a tensor that continues one whose last `gap` elements were zeros
    (a chunk of a tensor cut along its first axis); also returns the zeros it ends with."""
    return _count_runs(np.ascontiguousarray(values).reshape(-1), run_bits, gap)


def count_runs_reference(values: np.ndarray, run_bits: int) -> tuple[int, int]:
    positions = np.flatnonzero(values.reshape(-1))
    if positions.size == 0:
        return 0, 0
    gaps = np.diff(positions, prepend=-1) - 1
    return int(positions.size), int((gaps >> run_bits).sum())


def footprint(values: np.ndarray, role: str, run_bits: int) -> Footprint:
    """The `Footprint` of an actual tensor (`role`: 'weight' or 'activation')."""
    rows, cols = coordinate_view(values.shape, role)
    nonzeros, fillers = count_runs(values, run_bits)
    return Footprint(int(values.size), int(nonzeros), rows, cols, run_bits, int(fillers))


def dense_footprint(shape: tuple[int, ...], role: str, run_bits: int) -> Footprint:
    """The `Footprint` of a tensor assumed to have no zeros (outputs the trace does not
    hold: Y, dX, dW)."""
    rows, cols = coordinate_view(shape, role)
    n = int(np.prod(shape))
    return Footprint(n, n, rows, cols, run_bits, 0)


def schedule_bits(lookahead: int, lookaside: int) -> int:
    """Bits of front-end schedule metadata per scheduled value: the select among the
    h + d + 1 places a value may come from, ceil(log2(h + d + 1)); 0 without skipping."""
    return _log2_ceil(lookahead + lookaside + 1)


def to_bytes(bits: int) -> int:
    return -(-bits // 8)
