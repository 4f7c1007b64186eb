"""Trainable NumPy models built from the network zoo's graphs (one source of truth).

`build_model(network)` maps every node of `network.graph` (workloads.networks) 1:1 to a
module of `workloads.layers`, so the trainer's conv/fc layers are exactly the zoo's
`LayerSpec`s, in the same order, with the same names: a trace exported from training
has the shapes the simulator expects by construction.
"""

from __future__ import annotations

import numpy as np

from . import layers as L
from . import networks as N


def _build(node, rng: np.random.Generator, dtype=np.float32) -> L.Module:
    if isinstance(node, N.Conv):
        return (L.Conv2d if node.spec.kind == "conv" else L.Linear)(node.spec, rng, dtype)
    if isinstance(node, N.BatchNorm):
        return (L.BatchNorm1d if node.flat else L.BatchNorm2d)(node.spec.channels, dtype=dtype)
    if isinstance(node, N.ReLU):
        return L.ReLU(node.cap)
    if isinstance(node, N.Pool):
        cls = L.MaxPool2d if node.kind == "max" else L.AvgPool2d
        return cls(node.kernel, node.stride, node.padding)
    if isinstance(node, N.AdaptivePool):
        return L.AdaptiveAvgPool2d(tuple(node.out_hw))
    if isinstance(node, N.Flatten):
        return L.Flatten()
    if isinstance(node, N.Dropout):
        return L.Dropout(node.p, rng)
    if isinstance(node, N.Seq):
        return L.Sequential(*(_build(n, rng, dtype) for n in node.nodes))
    if isinstance(node, N.Residual):
        return L.Residual(_build(node.main, rng, dtype),
                          None if node.shortcut is None else _build(node.shortcut, rng, dtype))
    if isinstance(node, N.DenseConcat):
        return L.DenseConcat(_build(node.branch, rng, dtype))
    raise TypeError(f"no module for graph node {type(node).__name__}")


def build_model(network: N.Network, seed: int = 0, zero_init_residual: bool = False,
                dtype=np.float32) -> L.Module:
    """The trainable model of `network` (He-initialised from `seed`), its parameters and
    computations in `dtype` (float32, or float64 for reference checks).

    `zero_init_residual`: start the last batch-norm scale (gamma) of every residual branch
    that ends in one at 0, as torchvision's ``zero_init_residual`` (Goyal et al. 2017):
    each block then starts as the identity, which lets deep ResNets take a full learning
    rate from the first steps. Branches that end in a conv (pre-activation WRN) are left
    alone."""
    model = _build(network.graph, np.random.default_rng(seed), dtype)
    if zero_init_residual:
        for branch in residual_branch_ends(model):
            branch.weight.value[...] = 0
    return model


def residual_branch_ends(model: L.Module) -> list:
    """The batch-norm layers that end a residual branch (the main path of a `Residual`)."""
    ends = []
    for m in model.modules():
        if isinstance(m, L.Residual):
            last = m.main
            while isinstance(last, L.Sequential) and len(last):
                last = last[len(last) - 1]
            if isinstance(last, L._BatchNorm):
                ends.append(last)
    return ends


def weight_layers(model: L.Module) -> list:
    """The model's conv and fc modules in network (execution) order."""
    return [m for m in model.modules() if isinstance(m, (L.Conv2d, L.Linear))]
