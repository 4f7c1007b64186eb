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
from dataclasses import dataclass, field
from typing import NamedTuple

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
        values = getattr(self.layer, tensor, None) if tensor in ("weight", "input", "input_saved",
                                                                 "grad_output") else None
        if tensor == "input_saved" and values is None:
            values = self.layer.input  # no separate saved copy: the backward reads the input
        if values is None or self.dense:
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

    @property
    def read_bytes(self) -> int:
        return sum(self.reads.values())

    @property
    def write_bytes(self) -> int:
        return sum(self.writes.values())

    @property
    def refetch(self) -> float:
        """Bytes read / bytes of the distinct tensors read (1.0: each read once)."""
        unique = sum(self.stored[t] for t in self.reads)
        return self.read_bytes / unique if unique else 1.0

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


def _filter_chunks(kernel_bytes, filters, input_bytes, output_bytes, mm: MemoryModel) -> Tiling:
    """Kernel operand split into chunks of whole filters (reduction split too if one filter
    does not fit); the input operand re-streamed per chunk unless it fits."""
    per_filter = kernel_bytes / filters
    if per_filter <= mm.weight_tile_bytes:
        n_f, n_k = math.ceil(filters / math.floor(mm.weight_tile_bytes / per_filter)), 1
    else:
        n_f, n_k = filters, math.ceil(per_filter / mm.weight_tile_bytes)
    spills = n_k > 1 and output_bytes / filters > mm.output_tile_bytes
    x_reads = input_bytes if input_bytes <= mm.activation_tile_bytes else input_bytes * n_f
    label = "none" if n_f * n_k == 1 else f"filters/{n_f}" + (f" reduction/{n_k}" if n_k > 1 else "")
    return Tiling(kernel_bytes, x_reads, (n_k - 1) * output_bytes if spills else 0.0, label, n_f * n_k)


def _window_chunks(kernel_bytes, input_bytes, input_rows, halo, mm: MemoryModel) -> Tiling | None:
    """Input operand split into chunks of whole rows (+ halo re-read); the kernel operand
    re-streamed per chunk unless it fits. None if one row and its halo do not fit."""
    row = input_bytes / input_rows
    if row * (1 + halo) > mm.activation_tile_bytes:
        return None
    n_p = math.ceil(input_rows / (math.floor(mm.activation_tile_bytes / row) - halo))
    x_reads = input_bytes + min(input_bytes, (n_p - 1) * halo * row)
    k_reads = kernel_bytes if kernel_bytes <= mm.weight_tile_bytes else kernel_bytes * n_p
    return Tiling(k_reads, x_reads, 0.0, "none" if n_p == 1 else f"windows/{n_p}", n_p)


def _tile(kernel_bytes: int, filters: int, input_bytes: int, input_rows: int, halo: int,
          output_bytes: int, mm: MemoryModel) -> Tiling:
    """The tiling with the fewest DRAM bytes ("none" when both operands fit)."""
    if kernel_bytes <= mm.weight_tile_bytes and input_bytes <= mm.activation_tile_bytes:
        return Tiling(kernel_bytes, input_bytes, 0.0, "none", 1)
    options = [_filter_chunks(kernel_bytes, filters, input_bytes, output_bytes, mm),
               _window_chunks(kernel_bytes, input_bytes, input_rows, halo, mm)]
    return min((o for o in options if o is not None), key=lambda o: o.dram_bytes)


def pass_traffic(layer: TraceLayer, pass_name: str, scheduled_tensor: str, mm: MemoryModel,
                 footprints: LayerFootprints | None = None) -> PassTraffic:
    """DRAM traffic of `pass_name` on `layer` whose lowering schedules `scheduled_tensor`."""
    fp = footprints or LayerFootprints(layer, mm.run_bits)
    kernel_t, input_t = PASS_TENSORS[pass_name]
    tensors = (kernel_t, input_t, *PASS_WRITES[pass_name])
    stored, dense_stored = {}, {}
    for t in tensors:
        f, fmt = fp[t], mm.formats[TENSOR_CLASS[t]]
        bits = f.bits(fmt, mm.element_bits)
        if t == scheduled_tensor and fmt != "ideal":
            bits += f.nonzeros * mm.schedule_bits
        stored[t] = to_bytes(bits)
        dense_stored[t] = to_bytes(f.bits("dense", mm.element_bits))
    filters, rows, halo = _split_geometry(layer, pass_name)
    out_t = PASS_WRITES[pass_name][0]
    tiling = _tile(stored[kernel_t], filters, stored[input_t], rows, halo, stored[out_t], mm)
    reads = {kernel_t: round(tiling.kernel_reads), input_t: round(tiling.input_reads)}
    writes = {t: stored[t] for t in PASS_WRITES[pass_name]}
    if tiling.psum_bytes:
        reads[out_t] = round(tiling.psum_bytes)  # partial sums read back
        writes[out_t] += round(tiling.psum_bytes)
    tiles = max(tiling.chunks, math.ceil(tiling.kernel_reads / mm.weight_tile_bytes),
                math.ceil(tiling.input_reads / mm.activation_tile_bytes),
                math.ceil(sum(writes.values()) / mm.output_tile_bytes), 1)
    return PassTraffic(reads, writes, stored, dense_stored, tiling.label, min(tiles, MAX_TILES))
