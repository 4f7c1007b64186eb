"""Synthetic sparse workloads: a network's layers with SWAT-style Top-K sparse weights.

Per layer (random stream seeded by (seed, layer index), so every sparsity of a run
sparsifies the same dense tensors):

- weights: Gaussian with He scale, std = sqrt(2 / fan_in), fan_in = C_in/groups x k x k;
  then per-tensor magnitude Top-K to the target sparsity, except the dense layers
  (default: the first conv, as SWAT-U keeps it dense);
- input: ReLU-like, max(0, N(0, 1)) (about half zeros), dense in the forward pass as in
  SWAT; the network's first layer reads the image, which has no zeros, so its input is
  plain N(0, 1);
- input_saved: the input, Top-K sparsified like SWAT to the layer's weight sparsity (the
  activations kept for the backward pass); the dense layers keep it dense;
- grad_output: dense N(0, 1), the gradient arriving from the layer above.

The result is the in-memory `Trace` of the trace contract: the simulator cannot tell
it from a trace exported by training.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from simulator.trace import Trace, TraceLayer

from .networks import Network
from .topk import topk_sparsify


def synthetic_layers(network: Network, sparsity: float, batch: int = 1, seed: int = 0,
                     dense_layers: Iterable[str] | None = None):
    """Yield the `TraceLayer`s of `network` one at a time (bounded memory)."""
    names = [s.name for s in network.layers]
    dense = {network.first_conv} if dense_layers is None else set(dense_layers)
    unknown = sorted(dense - set(names))
    if unknown:
        raise ValueError(f"unknown layer {unknown[0]!r} (layers of {network.name}: "
                         f"{', '.join(names[:4])}, ...)")
    for index, spec in enumerate(network.layers):
        rng = np.random.default_rng([seed, index])
        fan_in = spec.channels_per_group * spec.kernel * spec.kernel
        weight = rng.standard_normal(spec.weight_shape, dtype=np.float32)
        weight *= np.float32(np.sqrt(2.0 / fan_in))
        x = rng.standard_normal(spec.input_shape(batch), dtype=np.float32)
        if index > 0:
            np.maximum(x, 0, out=x)
        grad_output = rng.standard_normal(spec.output_shape(batch), dtype=np.float32)
        saved = x
        if spec.name not in dense:
            weight = topk_sparsify(weight, sparsity)
            saved = topk_sparsify(x, sparsity)
        yield TraceLayer(spec, weight=weight, input=x, input_saved=saved, grad_output=grad_output)


def synthetic_trace(network: Network, sparsity: float, batch: int = 1, seed: int = 0,
                    dense_layers: Iterable[str] | None = None) -> Trace:
    """The whole synthetic trace in memory (see `synthetic_layers` for one layer at a time)."""
    layers = list(synthetic_layers(network, sparsity, batch, seed, dense_layers))
    return Trace(network=network.name, layers=layers, method="swat-u-synthetic",
                 sparsity=sparsity, meta={"seed": seed, "batch": batch})
