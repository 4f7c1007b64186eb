"""Timing one Top-K recomputation of a network on this machine (units: elements, milliseconds).

For `accelsim topk-overhead --measure`: SWAT recomputes a threshold for every sparsified
layer's weights and for the activations each saves for its backward pass (one tensor
per layer, as the trainer does it, even where two layers read the same tensor). The
tensors have the network's shapes at the given batch and synthetic values: weights
standard normal, activations ReLU(standard normal), so about half are zero, as after a
ReLU. Two implementations are timed on the same tensors: `topk_threshold_reference`
(|x| then `np.partition`, the introselect SWAT A.4 times) and `topk_threshold` (the
numba radix select the trainer uses, split over the cores). Each time is the best of
`repeat` runs; the radix select is compiled (or loaded from numba's cache) before timing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection

import numpy as np
import pandas as pd

from .networks import Network
from .topk import topk_threshold, topk_threshold_reference

IMPLEMENTATIONS = {"partition": topk_threshold_reference, "radix": topk_threshold}


def topk_tensors(network: Network, batch: int,
                 dense_layers: Collection[str] | None = None) -> list[tuple[str, str, tuple[int, ...]]]:
    """(layer, "weight" | "activation", shape) of every tensor one Top-K recomputation
    thresholds; `dense_layers` (default: the first conv) have none."""
    dense = {network.first_conv} if dense_layers is None else set(dense_layers)
    out = []
    for lay in network.layers:
        if lay.name in dense:
            continue
        out.append((lay.name, "weight", lay.weight_shape))
        out.append((lay.name, "activation", lay.input_shape(batch)))
    return out


def topk_memory_bytes(network: Network, batch: int,
                      dense_layers: Collection[str] | None = None) -> int:
    """A generous bound on `time_topk`'s peak memory: 300 MiB of interpreter and numba, the
    largest tensor's values and their ReLU (float32), and three more copies of it for
    |x|, np.partition's work array and the radix select's buffers."""
    tensors = topk_tensors(network, batch, dense_layers)
    largest = max((math.prod(s) for _, _, s in tensors), default=0)
    return 300 * 2**20 + 4 * largest * 5


def _best_ms(fn, x, sparsity, repeat) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn(x, sparsity)
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def time_topk(network: Network, batch: int, sparsity: float, *, repeat: int = 1,
              implementations: Collection[str] = ("partition", "radix"),
              dense_layers: Collection[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per thresholded tensor: layer, tensor, elements, and `<impl>_ms` for each
    of `implementations` (milliseconds for one whole-tensor threshold at `sparsity`)."""
    unknown = sorted(set(implementations) - set(IMPLEMENTATIONS))
    if unknown:
        raise ValueError(f"unknown Top-K implementation {unknown[0]!r}; "
                         f"expected some of {', '.join(IMPLEMENTATIONS)}")
    tensors = topk_tensors(network, batch, dense_layers)
    if not tensors:
        return pd.DataFrame(columns=["layer", "tensor", "elements",
                                     *[f"{i}_ms" for i in implementations]])
    rng = np.random.default_rng(seed)
    largest = max(int(np.prod(s)) for _, _, s in tensors)
    values = rng.standard_normal(largest, dtype=np.float32)
    relu = np.maximum(values, 0)
    if "radix" in implementations:
        topk_threshold(values[:4096].copy(), sparsity)  # compile / load from the cache
    rows = []
    for layer, kind, shape in tensors:
        n = int(np.prod(shape))
        x = (relu if kind == "activation" else values)[:n].reshape(shape)
        row = {"layer": layer, "tensor": kind, "elements": n}
        for impl in implementations:
            row[f"{impl}_ms"] = _best_ms(IMPLEMENTATIONS[impl], x, sparsity, repeat)
        rows.append(row)
    return pd.DataFrame(rows)
