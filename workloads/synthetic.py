"""Synthetic sparse workloads: a network's layers with SWAT-style Top-K sparse weights.

Per layer (random stream seeded by (seed, layer index), so every sparsity of a run
sparsifies the same dense tensors):

- weights: Gaussian with He scale, std = sqrt(2 / fan_in), fan_in = C_in/groups x k x k;
  then per-tensor magnitude Top-K to the target sparsity, except the dense layers
  (default: the first conv, as SWAT-U keeps it dense);
- input: shaped by what feeds the layer in the network's graph (`input_kinds`): after a
  ReLU, max(0, N(0, 1)) (about half zeros); after a pooling of ReLU outputs, |N(0, 1)|
  (non-negative, no zeros); after a linear op (BN, conv, residual sum, MobileNet-v2's
  linear bottleneck), N(0, 1); the image (first layer), N(0, 1). Dense in the forward
  pass, as in SWAT;
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

from . import networks as N
from .networks import Network


def input_kinds(network: Network) -> dict[str, str]:
    """For every conv/fc layer, what produces its input: 'image', 'relu' (a ReLU),
    'pooled' (a pooling or flatten of non-negative values) or 'linear' (anything else)."""
    kinds: dict[str, str] = {}

    def visit(node, incoming: str) -> str:  # returns the kind of the node's output
        if isinstance(node, N.Conv):
            kinds[node.spec.name] = incoming
            return "linear"
        if isinstance(node, N.ReLU):
            return "relu"
        if isinstance(node, (N.Flatten, N.Dropout)):
            return incoming  # zeros stay zeros
        if isinstance(node, (N.Pool, N.AdaptivePool)):
            return "pooled" if incoming in ("relu", "pooled") else incoming
        if isinstance(node, N.Seq):
            for child in node.nodes:
                incoming = visit(child, incoming)
            return incoming
        if isinstance(node, N.Residual):
            visit(node.main, incoming)
            if node.shortcut is not None:
                visit(node.shortcut, incoming)
            return "linear"  # a sum: signed
        if isinstance(node, N.DenseConcat):
            visit(node.branch, incoming)
            return "linear"
        return "linear"  # BatchNorm and anything else affine

    visit(network.graph, "image")
    return kinds
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
    kinds = input_kinds(network)
    for index, spec in enumerate(network.layers):
        rng = np.random.default_rng([seed, index])
        fan_in = spec.channels_per_group * spec.kernel * spec.kernel
        weight = rng.standard_normal(spec.weight_shape, dtype=np.float32)
        weight *= np.float32(np.sqrt(2.0 / fan_in))
        x = rng.standard_normal(spec.input_shape(batch), dtype=np.float32)
        if kinds[spec.name] == "relu":
            np.maximum(x, 0, out=x)
        elif kinds[spec.name] == "pooled":
            np.abs(x, out=x)
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
