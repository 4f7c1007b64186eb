"""Simulate trace layers on the array: lower each pass, time it, make result rows.

The simulator core: it takes `TraceLayer`s (from a trace on disk or a synthetic
workload: it cannot tell which) and never imports `workloads`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .array import time_pass
from .verify import CheckResult, recompute
from .config import Architecture
from .lowering import lower_forward, reference_forward
from .results import result_row
from .trace import TraceLayer

LOWERINGS = {"forward": lower_forward}


def _reference(pass_name: str, layer: TraceLayer) -> np.ndarray:
    """Independent NumPy reference of a pass, as [outputs, windows]."""
    if pass_name == "forward":
        y = reference_forward(layer)
        return y.transpose(1, 0, 2, 3).reshape(y.shape[1], -1)
    raise ValueError(f"no reference for pass {pass_name!r}")


def _sparsity(x: np.ndarray) -> float:
    return float(1.0 - np.count_nonzero(x) / x.size) if x.size else 0.0


def simulate_layers(layers: Iterable[TraceLayer], arch: Architecture, passes: Iterable[str],
                    network: str, sparsity: float) -> Iterable[dict]:
    """Yield one result row per (layer, pass)."""
    passes = tuple(passes)
    for layer in layers:
        ws, xs = _sparsity(layer.weight), _sparsity(layer.input)
        for pas in passes:
            lowered = LOWERINGS[pas](layer, arch.lanes)
            yield result_row(network, sparsity, layer.spec.kind, lowered, time_pass(lowered, arch),
                             arch, ws, xs)


def check_layers(layers: Iterable[TraceLayer], arch: Architecture,
                 passes: Iterable[str]) -> Iterable[CheckResult]:
    """Yield one functional-check result per (layer, pass)."""
    passes = tuple(passes)
    for layer in layers:
        for pas in passes:
            yield recompute(LOWERINGS[pas](layer, arch.lanes), arch, _reference(pas, layer))
