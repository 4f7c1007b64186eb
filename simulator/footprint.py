"""Peak memory of a simulation, estimated from the layer shapes before anything is built.

`run` simulates each layer batch chunk by batch chunk (`streaming.py`), on `workers`
threads, each holding one layer at a time. Per worker it holds the two uint8 stream
operands of one chunk of its layer's largest pass (with their masks, unit copies and
counts), the weight's zero pattern and, for a synthetic workload, the weight's values
and Top-K copy (WEIGHT_BYTES per weight: VGG-16's first fc layer has 103 M), the
layer's zero patterns as bits while they are drawn (PATTERN_BITS per input element, one
per gradient element) and one draw of DRAW_BYTES; a loaded trace's tensors are held for
the whole run:

    run peak ~ BASE_BYTES + min(workers, layers) * max over layers of
               (STREAM_FACTOR * chunk stream bytes + weight bytes + pattern bits / 8 + DRAW_BYTES)
               + the trace's tensors, or the draws a run's sparsities share (at most
                 `workloads.synthetic.CACHE_BYTES`)

where a layer's chunk holds `streaming.chunk_size` samples (CHUNK_BYTES of streams, at
least one sample). `check` holds whole passes as float32 streams and the float64 NumPy
reference:

    check peak ~ BASE_BYTES + CHECK_FACTOR * 4 * (largest pass's operand elements)

Operand elements per pass (N samples, G groups, k kernel, s stride, C channels per
group, padded(c) = ceil(c / lanes) * lanes):
- forward:      G * (C_out/G + N*Ho*Wo) * k*k * padded(C_in/G)   (pad lowering; space-to-depth is smaller)
- input_grad:   G * (C_in/G + N*H*W) * ceil(k/s)^2 * padded(C_out/G) (phase lowering;
                zero-insert streams all k*k taps)
- weight_grad:  G * (C_out/G + C_in/G*k*k) * padded(N*Ho*Wo)

The constants come from peak resident memory (VmHWM) measured on the 2-core machine
(README, "Memory"; `benchmarks/bench_memory_estimate.py`), with margin: the estimate errs
high.
"""

from __future__ import annotations

import math

import numpy as np

from .lowering import uses_space_to_depth

BASE_BYTES = 300 << 20  # interpreter, numpy/numba/pandas, compiled kernels, results (measured: ~200 MiB)
CHECK_FACTOR = 10.0     # check: also the float64 NumPy reference and the recomputed outputs (8.4)
STREAM_FACTOR = 4.0     # run (streamed): growth per worker / its largest chunk's uint8 stream bytes
DRAW_BYTES = 5 * 4 << 23  # a synthetic layer's draw: 2^23 float32 values, their magnitudes, masks
PATTERN_BITS = 5        # per input element while a synthetic layer is drawn: the input's bits, the
                        # Top-K bracket's two bit planes and its values (2 bits); the gradient: 1
WEIGHT_BYTES = 9        # per weight of a synthetic layer: float32 draw and Top-K copy, uint8 pattern


def _padded(channels: int, lanes: int) -> int:
    return -(-channels // lanes) * lanes


def pass_operand_elements(spec, pass_name: str, batch: int, lanes: int,
                          input_grad_lowering: str = "phase", space_to_depth: bool = False) -> int:
    """Elements of both stream operands of one pass of the layer `spec` (see the module
    docstring; an fc layer is a 1x1 convolution on a 1x1 input). `space_to_depth`: the
    forward pass runs as a stride-1 ceil(k/s) x ceil(k/s) convolution on s*s*C channels."""
    g = spec.groups if spec.kind == "conv" else 1
    k, s = (spec.kernel, spec.stride) if spec.kind == "conv" else (1, 1)
    in_hw, out_hw = (spec.in_hw, spec.out_hw) if spec.kind == "conv" else ((1, 1), (1, 1))
    cin, cout = spec.in_channels // g, spec.out_channels // g
    windows = batch * out_hw[0] * out_hw[1]
    if pass_name == "forward":
        if space_to_depth:
            k, cin = math.ceil(k / s), cin * s * s
        return g * (cout + windows) * k * k * _padded(cin, lanes)
    if pass_name == "input_grad":
        taps = k * k if input_grad_lowering == "zero-insert" else math.ceil(k / s) ** 2
        return g * (cin + batch * in_hw[0] * in_hw[1]) * taps * _padded(cout, lanes)
    if pass_name == "weight_grad":
        return g * (cout + cin * k * k) * _padded(windows, lanes)
    raise ValueError(f"unknown pass {pass_name!r}")


def largest_pass_elements(specs, batch: int, lanes: int, passes, lowering) -> int:
    """The largest `pass_operand_elements` over `specs` and the `passes` run on them, as
    `simulate.PassPlan` runs them with the config's `lowering` (the first layer's input
    gradient only if asked for; its forward pass space-to-depth where that applies)."""
    return largest_pass(specs, batch, lanes, passes, lowering)[0]


def largest_pass(specs, batch: int, lanes: int, passes, lowering) -> tuple[int, str, str]:
    """(`largest_pass_elements`, its layer's name, its pass)."""
    largest = (0, "", "")
    for i, spec in enumerate(specs):
        for p in passes:
            if p == "input_grad" and i == 0 and not lowering.first_layer_input_grad:
                continue
            n = pass_operand_elements(spec, p, batch, lanes, lowering.input_grad_lowering,
                                      uses_space_to_depth(lowering, spec, p, i == 0))
            if n > largest[0]:
                largest = (n, spec.name, p)
    return largest


def streamed_run(specs, batch: int, arch, plan, workers: int = 1, synthetic: bool = True
                 ) -> tuple[int, str, str, int]:
    """The peak estimate of `run`'s streamed simulation (`streaming.py`), less the tensors a
    loaded trace holds for the whole run: (bytes, layer and pass of the largest chunk, its
    uint8 stream bytes). Each of `workers` threads holds one layer: its largest chunk of
    streams, its weight's zero pattern and, for a synthetic workload, the weight's values
    (WEIGHT_BYTES), the bits of its input and gradient and of the Top-K bracket that finds
    its saved input (PATTERN_BITS) plus one draw (DRAW_BYTES)."""
    from .streaming import chunk_size

    largest, where, per_worker = 0, ("", ""), 0
    for i, spec in enumerate(specs):
        samples = chunk_size(spec, batch, arch, plan, i)
        layer_largest = 0
        for p in plan.passes:
            if not plan.applies(p, i):
                continue
            n = pass_operand_elements(spec, p, samples, arch.lanes, plan.lowering.input_grad_lowering,
                                      uses_space_to_depth(plan.lowering, spec, p, i == 0))
            layer_largest = max(layer_largest, n)
            if n > largest:
                largest, where = n, (spec.name, p)
        held = spec.weight_count  # the weight's zero pattern (a trace's values are held anyway)
        if synthetic:
            held = (batch * (PATTERN_BITS * math.prod(spec.input_shape(1)) + math.prod(spec.output_shape(1)))
                    // 8 + DRAW_BYTES + WEIGHT_BYTES * spec.weight_count)
        per_worker = max(per_worker, STREAM_FACTOR * layer_largest + held)
    total = BASE_BYTES + max(1, min(workers, len(specs))) * per_worker
    return int(total), where[0], where[1], largest


def check_bytes(largest_elements: int, tensor_bytes: int = 0) -> int:
    """The peak estimate of `check` for a largest pass of `largest_elements` operand
    elements, with `tensor_bytes` of a loaded trace."""
    return int(BASE_BYTES + CHECK_FACTOR * 4 * largest_elements + tensor_bytes)


def coded_layer_bytes(spec, batch: int) -> int:
    """Bytes of one synthetic layer a bit-serial run holds whole (`api._coded`): float32
    weight, input, saved input and output gradient, plus their one-byte costs."""
    elements = spec.weight_count + 2 * int(np.prod(spec.input_shape(batch))) + int(np.prod(spec.output_shape(batch)))
    return 5 * elements
