"""Export what the weight layers recorded during one training iteration as a trace.

Each conv/fc module with `record = True` keeps, for the iteration, the weight its
forward pass used, its input, the activations it saved for the backward pass and the
gradient that arrived at its output (`workloads.layers`). The trace keeps the first
`trace_batch` samples of the activation tensors (all of the weight) in the format of
`traces/README.md`, written atomically by `simulator.trace.write_trace`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from simulator.trace import Trace, TraceLayer, write_trace


def git_revision() -> str:
    """The trainer's git revision, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def recorded_trace(layers, network: str, method: str, sparsity: float, trace_batch: int,
                   meta: dict, specs=None) -> Trace:
    """A `Trace` from the `recorded` tensors of `layers` (first `trace_batch` samples).
    `specs`: the layers' shapes at the recorded image size, if it is not the size the
    layers were built for (same names and weights, other `in_hw`/`out_hw`)."""
    out = []
    for i, lay in enumerate(layers):
        spec = lay.spec if specs is None else specs[i]
        if spec.name != lay.spec.name or spec.weight_shape != lay.spec.weight_shape:
            raise ValueError(f"layer {lay.spec.name}: recorded with the shapes of {spec.name}")
        rec = getattr(lay, "recorded", None)
        if not rec or "grad_output" not in rec:
            raise RuntimeError(f"layer {lay.spec.name} recorded no complete iteration")
        b = slice(0, trace_batch)
        out.append(TraceLayer(spec, weight=np.ascontiguousarray(rec["weight"]),
                              input=np.ascontiguousarray(rec["input"][b]),
                              input_saved=np.ascontiguousarray(rec["input_saved"][b]),
                              grad_output=np.ascontiguousarray(rec["grad_output"][b])))
    return Trace(network=network, layers=out, method=method, sparsity=sparsity,
                 meta={"git_revision": git_revision(), **meta})


def export_trace(layers, directory, **kwargs) -> Path:
    """Write the recorded iteration of `layers` to `directory` (see `recorded_trace`)."""
    return write_trace(recorded_trace(layers, **kwargs), directory)
