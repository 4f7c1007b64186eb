"""DRAM traffic of one training pass of one layer: bytes per tensor, tiling, re-fetch.

Units: bytes. What each pass moves (SWAT's dataflow; trace tensor names):

    pass         reads (kernel operand, input operand)   writes
    forward      weight, input                          output, input_saved
    input_grad   weight, grad_output                    grad_input
    weight_grad  grad_output, input_saved               grad_weight

`weight`, `input`, `input_saved` and `grad_output` are stored as the trace holds them,
in the format configured for their class (weights, activations, saved activations,
gradients); the outputs the trace does not hold (output Y, grad_input dX, grad_weight
dW) are dense values, so `best` stores them dense. Y is also the input a following
batch norm saves for its backward pass, stored dense (SWAT A.9). The scheduled
operand carries the front-end's schedule metadata: `formats.schedule_bits` per non-zero
(not under the `ideal` format, which has no metadata at all). Batch norm, ReLU, pooling
and residual adds do not run on the array; their own traffic is not in these rows.

Tiling. Each on-chip buffer is double-buffered: a tile may use half of it while the
other half fills. The kernel operand lives in the weight buffer, the input operand in
the activation buffer, results in the output buffer. If both operands fit, each is read
once. Otherwise the cheaper in DRAM bytes of two loop orders is taken:

- `filters/n`: the kernel operand is split into n chunks of whole filters that fit; the
  input operand stays on chip if it fits, else it is streamed once per chunk (re-fetch).
  If a single filter does not fit, its reduction is split too (`reduction/m`) and its
  partial sums spill to DRAM (written and read back m - 1 times) unless the partial sums
  of one filter fit the output buffer.
- `windows/n`: the input operand is split into n chunks of whole input rows (image rows;
  for the weight gradient, input-channel planes of X^T) that fit, each chunk re-reading
  the halo of rows its windows share with the previous chunk; the kernel operand stays
  on chip if it fits, else it is streamed once per chunk.

The re-fetch factor is bytes read / bytes of the distinct tensors read.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .formats import Footprint, dense_footprint, footprint, schedule_bits, to_bytes
from .lowering import PASS_TENSORS
from .trace import TraceLayer

CLASSES = ("weights", "activations", "saved_activations", "gradients")
TENSOR_CLASS = {"weight": "weights", "input": "activations", "output": "activations",
                "input_saved": "saved_activations", "grad_output": "gradients",
                "grad_input": "gradients", "grad_weight": "gradients"}
PASS_WRITES = {"forward": ("output", "input_saved"), "input_grad": ("grad_input",),
               "weight_grad": ("grad_weight",)}
MAX_TILES = 1024  # per pass; beyond it tiles grow instead (the timing stays event-per-tile)


@dataclass(frozen=True)
class MemoryModel:
    """What the traffic model needs from the memory configuration: the element width in
    bits, the format per tensor class, the rle run field, and the usable (half, since
    double-buffered) capacity of each buffer in bytes."""

    element_bits: int
    formats: dict
    run_bits: int
    weight_tile_bytes: float
    activation_tile_bytes: float
    output_tile_bytes: float
    schedule_bits: int = 0

    def dense(self) -> "MemoryModel":
        """The same memory system for dense training: dense formats, no skipping metadata."""
        return MemoryModel(self.element_bits, dict.fromkeys(CLASSES, "dense"), self.run_bits,
                           self.weight_tile_bytes, self.activation_tile_bytes,
                           self.output_tile_bytes, 0)


def memory_model(memory, frontend) -> MemoryModel:
    """A `MemoryModel` from a config's `Memory` section and the array's `Frontend`."""
    half = 1024 / 2
    skips = frontend.shape != "none" and frontend.lookahead > 0
    return MemoryModel(memory.element_bits, dict(memory.formats), memory.run_length_bits,
                       memory.weight_buffer_kib * half, memory.activation_buffer_kib * half,
                       memory.output_buffer_kib * half,
                       schedule_bits(frontend.lookahead, frontend.lookaside) if skips else 0)


@dataclass
class LayerFootprints:
    """Footprints of one layer's tensors, computed once and shared by its passes."""

    layer: TraceLayer
    run_bits: int
    dense: bool = False
    _cache: dict = field(default_factory=dict)

    @property
    def saved_copy(self) -> bool:
        """Whether the saved input is a tensor of its own (SWAT's Top-K copy), not the
        input itself (dense training, dense layers, traces without one)."""
        if "saved_copy" not in self._cache:
            saved = None if self.dense else self.layer.input_saved
            self._cache["saved_copy"] = saved is not None and not (
                saved is self.layer.input or np.array_equal(saved, self.layer.input))
        return self._cache["saved_copy"]

    def __getitem__(self, tensor: str) -> Footprint:
        if tensor not in self._cache:
            self._cache[tensor] = self._compute(tensor)
        return self._cache[tensor]

    def _compute(self, tensor: str) -> Footprint:
        spec, batch = self.layer.spec, self.layer.batch
        role = "weight" if tensor in ("weight", "grad_weight") else "activation"
        shapes = {"weight": spec.weight_shape, "grad_weight": spec.weight_shape,
                  "input": spec.input_shape(batch), "input_saved": spec.input_shape(batch),
                  "grad_input": spec.input_shape(batch), "output": spec.output_shape(batch),
                  "grad_output": spec.output_shape(batch)}
        held = not self.dense and tensor in ("weight", "input", "input_saved", "grad_output")
        values = getattr(self.layer, tensor, None) if held else None
        if held and tensor == "input_saved" and values is None:
            values = self.layer.input  # no separate saved copy: the backward reads the input
        if values is None:
            return dense_footprint(shapes[tensor], role, self.run_bits)
        return footprint(values, role, self.run_bits)


@dataclass(frozen=True)
class PassTraffic:
    """DRAM traffic of one pass of one layer. `reads` / `writes`: bytes per tensor
    (re-fetches included); `stored`: bytes of each distinct tensor as stored, and
    `dense_stored` the same in dense format; `tiles`: transfer units for the timing model."""

    reads: dict
    writes: dict
    stored: dict
    dense_stored: dict
    tiling: str
    tiles: int
    refetch: float = 1.0  # operand bytes read / operand bytes stored (spilled partial sums aside)

    @property
    def read_bytes(self) -> int:
        return sum(self.reads.values())

    @property
    def write_bytes(self) -> int:
        return sum(self.writes.values())

    @property
    def compression_ratio(self) -> float:
        """Dense-format bytes / stored bytes of the pass's distinct tensors."""
        stored = sum(self.stored.values())
        return sum(self.dense_stored.values()) / stored if stored else 1.0

    def class_bytes(self) -> dict:
        """Bytes moved (read + written) per tensor class."""
        out = dict.fromkeys(CLASSES, 0)
        for t, b in (*self.reads.items(), *self.writes.items()):
            out[TENSOR_CLASS[t]] += b
        return out


def _split_geometry(layer: TraceLayer, pass_name: str) -> tuple[int, int, int]:
    """(kernel filters, input rows, halo rows) of the pass's lowered convolution: the
    kernel operand's filters, the input operand's chunkable rows and how many rows
    neighbouring chunks share."""
    s, n = layer.spec, layer.batch
    reach = s.dilation * (s.kernel - 1)  # extra input rows one output row needs
    if s.kind == "fc":
        filters = s.in_channels if pass_name == "input_grad" else s.out_channels
        return filters, (s.in_channels if pass_name == "weight_grad" else n), 0
    if pass_name == "forward":
        return s.out_channels, n * s.in_hw[0], max(0, reach + 1 - s.stride)
    if pass_name == "input_grad":
        return s.in_channels, n * s.out_hw[0], -(-reach // s.stride)
    return s.out_channels, s.in_channels, 0  # weight_grad: X^T planes, one per input channel


class Tiling(NamedTuple):
    """One loop order's DRAM reads (bytes), partial-sum spill (bytes each way), label and
    the number of chunks the split loop runs."""

    kernel_reads: float
    input_reads: float
    psum_bytes: float
    label: str
    chunks: int

    @property
    def dram_bytes(self) -> float:
        return self.kernel_reads + self.input_reads + 2 * self.psum_bytes


def _streams(count: int, groups: int) -> int:
    """How often an operand is streamed when the other one is cut into `count` chunks of
    whole rows: once per chunk, but a chunk of a grouped convolution reads only its own
    groups' share, so `groups` chunks together stream it once."""
    return max(1, math.ceil(count / groups))


def _filter_chunks(kernel_bytes, filters, input_bytes, output_bytes, groups, mm: MemoryModel) -> Tiling:
    """Kernel operand split into chunks of whole filters (reduction split too if one filter
    does not fit); the input operand re-streamed per chunk unless it fits."""
    per_filter = kernel_bytes / filters
    if per_filter <= mm.weight_tile_bytes:
        per_chunk = math.floor(mm.weight_tile_bytes / per_filter) if per_filter else filters
        n_f, n_k = math.ceil(filters / per_chunk), 1
    else:
        n_f, n_k = filters, math.ceil(per_filter / mm.weight_tile_bytes)
    spills = n_k > 1 and output_bytes / filters > mm.output_tile_bytes
    x_reads = input_bytes * (1 if input_bytes <= mm.activation_tile_bytes else _streams(n_f, groups))
    label = "none" if n_f * n_k == 1 else f"filters/{n_f}" + (f" reduction/{n_k}" if n_k > 1 else "")
    return Tiling(kernel_bytes, x_reads, (n_k - 1) * output_bytes if spills else 0.0, label, n_f * n_k)


def _output_chunks(kernel_bytes, filters, input_bytes, output_bytes, groups,
                   mm: MemoryModel) -> Tiling | None:
    """Outputs held on chip in chunks of whole filters that fit the output buffer, the
    reduction streamed through (both operands in pieces): the kernel operand read once,
    the input operand once per chunk. None if one filter's outputs do not fit."""
    if output_bytes / filters > mm.output_tile_bytes:
        return None
    n_o = math.ceil(output_bytes / mm.output_tile_bytes) if output_bytes else 1
    x_reads = input_bytes * _streams(n_o, groups)
    return Tiling(kernel_bytes, x_reads, 0.0, f"outputs/{n_o}", n_o)


def _window_chunks(kernel_bytes, input_bytes, input_rows, halo, groups, mm: MemoryModel) -> Tiling | None:
    """Input operand split into chunks of whole rows (+ halo re-read); the kernel operand
    re-streamed per chunk unless it fits. None if one row and its halo do not fit. Rows
    are image rows (every filter needs them: `groups` = 1) or, for the weight gradient,
    input-channel planes (a chunk needs only its groups' filters)."""
    row = input_bytes / input_rows
    if row * (1 + halo) > mm.activation_tile_bytes:
        return None
    rows_per_chunk = math.floor(mm.activation_tile_bytes / row) - halo if row else input_rows
    n_p = max(1, math.ceil((input_rows - halo) / rows_per_chunk))
    x_reads = input_bytes + min(input_bytes, (n_p - 1) * halo * row)
    k_reads = kernel_bytes * (1 if kernel_bytes <= mm.weight_tile_bytes else _streams(n_p, groups))
    return Tiling(k_reads, x_reads, 0.0, "none" if n_p == 1 else f"windows/{n_p}", n_p)


def _tile(kernel_bytes: int, filters: int, input_bytes: int, input_rows: int, halo: int,
          output_bytes: int, mm: MemoryModel, groups: int = 1, channel_rows: bool = False) -> Tiling:
    """The tiling with the fewest DRAM bytes ("none" when both operands fit). `groups`:
    the convolution's groups; `channel_rows`: the input rows are channel planes (weight
    gradient), so window chunks align with groups."""
    if kernel_bytes <= mm.weight_tile_bytes and input_bytes <= mm.activation_tile_bytes:
        return Tiling(kernel_bytes, input_bytes, 0.0, "none", 1)
    options = [_filter_chunks(kernel_bytes, filters, input_bytes, output_bytes, groups, mm),
               _output_chunks(kernel_bytes, filters, input_bytes, output_bytes, groups, mm),
               _window_chunks(kernel_bytes, input_bytes, input_rows, halo,
                              groups if channel_rows else 1, mm)]
    return min((o for o in options if o is not None), key=lambda o: o.dram_bytes)


def pass_traffic(layer: TraceLayer, pass_name: str, scheduled: Collection[str], mm: MemoryModel,
                 footprints: LayerFootprints | None = None) -> PassTraffic:
    """DRAM traffic of `pass_name` on `layer`. `scheduled`: the tensors some simulated pass
    schedules; they are stored with their schedule metadata, so it is written and read
    with them. The forward pass writes the saved input only when it is a copy that differs
    from the input (SWAT's Top-K copy); otherwise the backward pass reads X itself."""
    fp = footprints or LayerFootprints(layer, mm.run_bits)
    kernel_t, input_t = PASS_TENSORS[pass_name]
    writes_t = PASS_WRITES[pass_name]
    if pass_name == "forward" and not fp.saved_copy:
        writes_t = writes_t[:1]
    stored, dense_stored = {}, {}
    for t in (kernel_t, input_t, *PASS_WRITES[pass_name]):
        f, fmt = fp[t], mm.formats[TENSOR_CLASS[t]]
        bits = f.bits(fmt, mm.element_bits)
        if t in scheduled and fmt != "ideal":
            bits += f.nonzeros * mm.schedule_bits
        stored[t] = to_bytes(bits)
        dense_stored[t] = to_bytes(f.bits("dense", mm.element_bits))
    filters, rows, halo = _split_geometry(layer, pass_name)
    out_t = writes_t[0]
    tiling = _tile(stored[kernel_t], filters, stored[input_t], rows, halo, stored[out_t], mm,
                   layer.spec.groups, channel_rows=pass_name == "weight_grad")
    reads = {kernel_t: round(tiling.kernel_reads), input_t: round(tiling.input_reads)}
    writes = {t: stored[t] for t in writes_t}
    if tiling.psum_bytes:
        reads[out_t] = round(tiling.psum_bytes)  # partial sums read back
        writes[out_t] += round(tiling.psum_bytes)
    tiles = max(tiling.chunks, math.ceil(tiling.kernel_reads / mm.weight_tile_bytes),
                math.ceil(tiling.input_reads / mm.activation_tile_bytes),
                math.ceil(writes[out_t] / mm.output_tile_bytes), 1)
    refetch = (reads[kernel_t] + reads[input_t]) / max(1, stored[kernel_t] + stored[input_t])
    return PassTraffic(reads, writes, stored, dense_stored, tiling.label, min(tiles, MAX_TILES),
                       refetch)
