"""Dynamic energy of one pass: MACs, on-chip buffer bytes and DRAM bytes times a per-event cost.

Units: pJ (picojoules) per event; bytes; buffer sizes in KiB. Events: one multiply-accumulate
per operand width (`mac`), one step of a bit-serial lane (`serial_step`), one byte read from or
written to an on-chip SRAM buffer of a given size (`sram_read`, `sram_write`), one byte moved to
or from DRAM. Leakage, clock tree, control, wires and register files are not modelled (see
docs/design/energy.md).

Source of the defaults: M. Horowitz, "Computing's energy problem (and what we can do about
it)", ISSCC 2014, 45 nm, 0.9 V: int add 8 b 0.03 pJ, 32 b 0.1; int mult 8 b 0.2, 32 b 3.1;
fp add 16 b 0.4, 32 b 0.9; fp mult 16 b 1.1, 32 b 3.7; SRAM read of 64 bits 10 pJ (8 KB),
20 pJ (32 KB), 100 pJ (1 MB); DRAM 1.3-2.6 nJ per 64-bit access. Checked against secondary
copies only, not the paper: a public gist of "data taken from" the paper (gist.github.com/
V0XNIHILI/2b6fa61edd4c06d9ffce5551065124c1) has every arithmetic figure above, the three SRAM
points and the DRAM range; two copies of the energy table of Han et al., "Learning both
weights and connections", NIPS 2015 (citing Horowitz) have 32-bit int add 0.1, fp add 0.9,
int mult 3.1, fp mult 3.7, SRAM 5 pJ and DRAM 640 pJ per 32 bits, i.e. half the 64-bit SRAM
figure of 8 KB and of the DRAM low end. The 0.9 V was not confirmed.

Rules where the source has no entry (every one documented in docs/design/energy.md):

- widths: an integer multiplier's energy grows with bits squared (an array multiplier), an
  adder's linearly with bits, scaled from the largest source width at or below (the smallest
  above if none): int16 mult = 0.2 * (16/8)**2 = 0.8 pJ, 16-bit add = 0.03 * 16/8 = 0.06 pJ;
- a MAC = a multiply + an accumulating add: twice the operand width for integers (int8: 8-bit
  mult + 16-bit add; int16: 16-bit mult + 32-bit add), the same-width fp add for floats;
  bf16 takes fp16's figures (the source has no bf16; its 8-bit mantissa multiplier is smaller,
  so this overestimates bf16 a little);
- a bit-serial lane step is `mac(int<bits>) / bits`: a bit-serial MAC over all `bits` bits
  costs what the bit-parallel MAC costs, so the back-ends save only by skipping bits or terms;
- SRAM pJ per byte = the 64-bit figure / 8, with KB read as KiB, interpolated linearly in
  log(size) vs log(energy) between points and extrapolated beyond them with the nearest
  segment's slope (a single point: the same energy at every size);
- a write costs `sram_write_factor` times a read (default 1.0: the source gives reads only
  and we have no sourced write figure, so reads and writes are treated alike);
- DRAM: the low end, 1.3 nJ / 8 B = 162.5 pJ per byte (see `DRAM_PJ_PER_64_BITS`).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from numbers import Real

from .formats import ELEMENT_BITS

BUFFERS = ("weights", "activations", "outputs")  # memory.buffers_kib

# Horowitz, ISSCC 2014, 45 nm: operand bits -> pJ per operation
INT_ADD = {8: 0.03, 32: 0.1}
INT_MULT = {8: 0.2, 32: 3.1}
FP_ADD = {16: 0.4, 32: 0.9}
FP_MULT = {16: 1.1, 32: 3.7}
SRAM_PJ_PER_64_BITS = {8: 10.0, 32: 20.0, 1024: 100.0}  # buffer KB (read as KiB) -> pJ per read
# 1.3-2.6 nJ per 64 bits. We take the low end: an accelerator streams whole tensors in long
# bursts, so most accesses hit an open row and the activate energy is shared by a whole row;
# it is also the figure Han et al. reproduce (640 pJ per 32 bits), so energy ratios compare
# with the sparse-network literature. 2.6 nJ (325 pJ/B, random accesses) is an override away.
DRAM_PJ_PER_64_BITS = 1300.0


def _scaled(points: dict, bits: int, power: int) -> float:
    """The energy at `bits` from the largest source width at or below it (the smallest
    above if none), scaled by (bits / width) ** power."""
    width = max((w for w in points if w <= bits), default=min(points))
    return points[width] * (bits / width) ** power


def _default_macs() -> dict:
    fp = {32: FP_MULT[32] + FP_ADD[32], 16: FP_MULT[16] + FP_ADD[16]}
    macs = {"fp32": fp[32], "bf16": fp[16], "fp16": fp[16]}
    for bits in (8, 16):
        macs[f"int{bits}"] = _scaled(INT_MULT, bits, 2) + _scaled(INT_ADD, 2 * bits, 1)
    return {e: macs[e] for e in ELEMENT_BITS}


def _default_sram() -> tuple:
    return tuple((float(kib), pj / 8) for kib, pj in sorted(SRAM_PJ_PER_64_BITS.items()))


def _positive(value) -> bool:
    return (isinstance(value, Real) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _count(name: str, value) -> float:
    """A non-negative finite number (a count of events or bytes), else a one-line ValueError."""
    if not (isinstance(value, Real) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0):
        raise ValueError(f"pass_energy: {name}: expected a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class EnergyTable:
    """Per-event energies (pJ). `mac_pj`: element (fp32, bf16, fp16, int16, int8) -> one
    multiply-accumulate; `sram_pj_per_byte`: ((KiB, pJ per byte read), ...) sorted by size;
    `sram_write_factor`: a byte written costs this times a byte read of the same buffer;
    `dram_pj_per_byte`: a byte read from or written to DRAM."""

    mac_pj: dict = field(default_factory=_default_macs)
    sram_pj_per_byte: tuple = field(default_factory=_default_sram)
    sram_write_factor: float = 1.0
    dram_pj_per_byte: float = DRAM_PJ_PER_64_BITS / 8

    def __post_init__(self):
        if not isinstance(self.mac_pj, dict) or set(self.mac_pj) != set(ELEMENT_BITS):
            raise ValueError(f"EnergyTable: mac_pj: expected one entry for each of "
                             f"{', '.join(ELEMENT_BITS)}, got {self.mac_pj!r}")
        for element, pj in self.mac_pj.items():
            if not _positive(pj):
                raise ValueError(f"EnergyTable: mac_pj[{element!r}]: expected a positive "
                                 f"finite number, got {pj!r}")
        points = tuple(self.sram_pj_per_byte)
        if not points or not all(isinstance(p, tuple) and len(p) == 2 and _positive(p[0])
                                 and _positive(p[1]) for p in points):
            raise ValueError("EnergyTable: sram_pj_per_byte: expected at least one (KiB, pJ per "
                             f"byte) pair of positive finite numbers, got {points!r}")
        for (k0, e0), (k1, e1) in zip(points, points[1:]):
            if not k0 < k1 or not e0 <= e1:
                raise ValueError("EnergyTable: sram_pj_per_byte: expected sizes strictly "
                                 "increasing and pJ per byte not decreasing with size, got "
                                 f"{(k0, e0)!r} then {(k1, e1)!r}")
        for name in ("sram_write_factor", "dram_pj_per_byte"):
            if not _positive(getattr(self, name)):
                raise ValueError(f"EnergyTable: {name}: expected a positive finite number, "
                                 f"got {getattr(self, name)!r}")
        # our own copies, as floats: the caller's dict may change after this
        object.__setattr__(self, "mac_pj", {e: float(self.mac_pj[e]) for e in ELEMENT_BITS})
        object.__setattr__(self, "sram_pj_per_byte",
                           tuple((float(k), float(e)) for k, e in points))
        object.__setattr__(self, "sram_write_factor", float(self.sram_write_factor))
        object.__setattr__(self, "dram_pj_per_byte", float(self.dram_pj_per_byte))

    def mac(self, element: str) -> float:
        """pJ per multiply-accumulate of two `element` operands."""
        if not isinstance(element, str) or element not in self.mac_pj:
            raise ValueError(f"energy: element: expected one of {', '.join(self.mac_pj)}, "
                             f"got {element!r}")
        return self.mac_pj[element]

    def serial_step(self, bits: int) -> float:
        """pJ per lane-cycle of a bit-serial multiplier taking one bit or term of a
        `bits`-bit value: mac(int<bits>) / bits, so `bits` steps cost one bit-parallel MAC."""
        if isinstance(bits, bool) or f"int{bits}" not in self.mac_pj:
            widths = ", ".join(str(ELEMENT_BITS[e]) for e in sorted(
                (e for e in self.mac_pj if e.startswith("int")), key=ELEMENT_BITS.get))
            raise ValueError(f"energy: bits: expected one of {widths} (an integer element's "
                             f"width), got {bits!r}")
        return self.mac(f"int{bits}") / bits

    def sram_read(self, kib: float) -> float:
        """pJ per byte read from a `kib`-KiB SRAM buffer (log-log interpolation)."""
        if not _positive(kib):
            raise ValueError(f"energy: buffer size: expected a positive finite number of KiB, "
                             f"got {kib!r}")
        points = self.sram_pj_per_byte
        sizes = [k for k, _ in points]
        i = bisect.bisect_left(sizes, kib)
        if i < len(points) and sizes[i] == kib:
            return points[i][1]
        if len(points) == 1:
            return points[0][1]
        i = min(max(i - 1, 0), len(points) - 2)  # the segment holding kib, or the nearest
        (k0, e0), (k1, e1) = points[i], points[i + 1]
        slope = math.log(e1 / e0) / math.log(k1 / k0)
        return e0 * (kib / k0) ** slope

    def sram_write(self, kib: float) -> float:
        """pJ per byte written to a `kib`-KiB SRAM buffer."""
        return self.sram_write_factor * self.sram_read(kib)


def _buffers(name: str, mapping, unit: str) -> dict:
    """`mapping` if it maps buffer names (BUFFERS) to numbers, else a one-line ValueError."""
    if not isinstance(mapping, dict):
        raise ValueError(f"pass_energy: {name}: expected a mapping of buffer name to {unit}, "
                         f"got {mapping!r}")
    for buffer in mapping:
        if buffer not in BUFFERS:
            raise ValueError(f"pass_energy: {name}: expected buffers among {', '.join(BUFFERS)}, "
                             f"got {buffer!r}")
    return mapping


def pass_energy(table: EnergyTable, *, mac_count: float, element: str,
                serial_steps: float = 0.0, bits: int = 16, sram_reads: dict,
                sram_writes: dict, buffer_kib: dict, dram_bytes: float) -> dict:
    """Energy of one pass in pJ: {"energy_mac_pj", "energy_sram_pj", "energy_dram_pj",
    "energy_pj"} (the last the sum of the others).

    `mac_count` bit-parallel MACs of `element` operands plus `serial_steps` bit-serial lane
    steps on `bits`-bit values; `sram_reads` / `sram_writes`: buffer name (weights,
    activations, outputs) -> bytes; `buffer_kib`: the same names -> the size in KiB of the
    SRAM array those bytes are read from or written to; `dram_bytes` read plus written.
    """
    macs, steps = _count("mac_count", mac_count), _count("serial_steps", serial_steps)
    mac_pj = macs * table.mac(element) + steps * table.serial_step(bits)
    for buffer, kib in _buffers("buffer_kib", buffer_kib, "KiB").items():
        if not _positive(kib):
            raise ValueError(f"pass_energy: buffer_kib[{buffer!r}]: expected a positive finite "
                             f"number of KiB, got {kib!r}")
    sram_pj = 0.0
    for name, accesses, cost in (("sram_reads", sram_reads, table.sram_read),
                                 ("sram_writes", sram_writes, table.sram_write)):
        for buffer, nbytes in _buffers(name, accesses, "bytes").items():
            if buffer not in buffer_kib:
                raise ValueError(f"pass_energy: buffer_kib: expected the size of buffer "
                                 f"{buffer!r} (it has {name}), got {buffer_kib!r}")
            sram_pj += _count(f"{name}[{buffer!r}]", nbytes) * cost(buffer_kib[buffer])
    dram_pj = _count("dram_bytes", dram_bytes) * table.dram_pj_per_byte
    return {"energy_mac_pj": mac_pj, "energy_sram_pj": sram_pj, "energy_dram_pj": dram_pj,
            "energy_pj": mac_pj + sram_pj + dram_pj}
