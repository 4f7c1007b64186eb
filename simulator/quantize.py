"""Linear fixed-point quantisation of a tensor (units: integer steps of `scale`).

Bit-serial back-ends (Bit-Tactical's TCLp and TCLe, issue 15) process the broadcast
operand bit by bit, so they need its values as B-bit integers (B = 16 or 8). Per layer
and tensor, symmetric linear quantisation, the scale recorded:

    M     = 2^(B-1) - 1                        the largest magnitude (127, 32767)
    scale = max |x| / M                        (1.0 for an all-zero tensor)
    q     = sign(x) * max(1, rint(|x| / scale))   for x != 0;   q = 0 for x = 0

so q fits B-bit two's complement and |x - q * scale| <= scale / 2, except that a
non-zero smaller than half a step is raised to one step: a non-zero never becomes zero.
The zero pattern, and with it the front-end's schedule and every bit-parallel result,
is unchanged. `rint` rounds halves to even.

A tensor simulated in chunks (`streaming.py`) is quantised with the whole tensor's
scale: `scale_for(max |x| over the tensor, B)`, then `quantize(chunk, B, scale)` per
chunk gives the whole tensor's integers (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BITS = (8, 16)
_DTYPES = {8: np.int8, 16: np.int16}


def largest(bits: int) -> int:
    """The largest magnitude of a `bits`-bit quantised value, 2^(bits-1) - 1."""
    if bits not in BITS:
        raise ValueError(f"bits: expected one of {', '.join(map(str, BITS))}, got {bits!r}")
    return (1 << (bits - 1)) - 1


def scale_for(max_abs: float, bits: int) -> float:
    """The step of a tensor whose largest magnitude is `max_abs`, quantised to `bits`."""
    if not np.isfinite(max_abs) or max_abs < 0:
        raise ValueError(f"max |x|: expected a finite magnitude, got {max_abs!r}")
    return float(max_abs) / largest(bits) if max_abs > 0 else 1.0


@dataclass(frozen=True)
class Quantized:
    """A tensor as `bits`-bit integers `values` (int8 or int16) of step `scale`."""

    values: np.ndarray
    scale: float
    bits: int

    def dequantize(self) -> np.ndarray:
        """The values the integers stand for (float32)."""
        return (self.values.astype(np.float64) * self.scale).astype(np.float32)


def quantize(x: np.ndarray, bits: int = 16, scale: float | None = None) -> Quantized:
    """`x` as `bits`-bit integers (see the module docstring); `scale` defaults to the
    tensor's own, `scale_for(max |x|, bits)`. A value beyond `largest(bits)` steps of a
    given scale is an error, not clipped."""
    m = largest(bits)
    magnitude = np.abs(np.asarray(x, dtype=np.float64))
    if not np.all(np.isfinite(magnitude)):
        raise ValueError("quantize: expected finite values, got NaN or infinity")
    if scale is None:
        scale = scale_for(float(magnitude.max()) if magnitude.size else 0.0, bits)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: expected a positive step, got {scale!r}")
    steps = np.rint(magnitude / scale)
    if steps.size and steps.max() > m:
        raise ValueError(f"quantize: a value of {float(magnitude.max()):g} is more than {m} steps "
                         f"of {scale:g} ({bits} bits)")
    steps = np.where(magnitude > 0, np.maximum(steps, 1), 0)
    values = (np.sign(np.asarray(x, dtype=np.float64)) * steps).astype(_DTYPES[bits])
    return Quantized(values, float(scale), bits)
