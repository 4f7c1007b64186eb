"""The network zoo's graphs as PyTorch modules, for the NumPy-vs-PyTorch cross-check (needs the
optional `torch` extra).

`torch_model(network)` builds an ``nn.Module`` that runs `network.graph` node by node with
the torch equivalents listed in `workloads.networks` (Conv2d/Linear, BatchNorm2d/1d, ReLU or
ReLU6, max/avg pooling, adaptive average pooling, flatten, dropout, residual sums, dense
concatenation). Its conv, fc and batch-norm modules are registered under the zoo's layer
names ("layer1.0.conv1", ...), the torchvision ``state_dict`` names, so
``named_modules()`` and a trace recorded from it (`workloads.torch_trace`) name the layers as
the NumPy trainer does. `copy_parameters(numpy_model, torch_model)` gives it the NumPy
model's weights, biases, batch-norm scales, shifts and running statistics.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import layers as L
from . import networks as N


def _register(root: nn.Module, name: str, module: nn.Module) -> None:
    """Register `module` at the dotted `name` below `root`, creating plain containers."""
    *path, last = name.split(".")
    node = root
    for part in path:
        if not hasattr(node, part):
            node.add_module(part, nn.Module())
        node = getattr(node, part)
    node.add_module(last, module)


class GraphModel(nn.Module):
    """`network.graph` as a torch module (see the module docstring)."""

    def __init__(self, network: N.Network, dropout: bool = True):
        super().__init__()
        self.graph = network.graph
        self.dropout = dropout  # False: dropout is the identity (a cross-check's random draws differ)
        self._modules_of: dict[int, nn.Module] = {}
        self.layer_order: list[nn.Module] = []  # conv, fc and BN modules in graph (walk) order
        self.layer_names: list[str] = []
        for node in N.walk(network.graph):
            if isinstance(node, N.Conv):
                s = node.spec
                module = (nn.Conv2d(s.in_channels, s.out_channels, s.kernel, s.stride, s.padding, s.dilation,
                                    s.groups, bias=s.bias) if s.kind == "conv"
                          else nn.Linear(s.in_channels, s.out_channels, bias=s.bias))
                name = s.name
            elif isinstance(node, N.BatchNorm):
                module = (nn.BatchNorm1d if node.flat else nn.BatchNorm2d)(node.spec.channels)
                name = node.spec.name
            else:
                continue
            _register(self, name, module)
            self._modules_of[id(node)] = module
            self.layer_order.append(module)
            self.layer_names.append(name)

    def _run(self, node, x: torch.Tensor) -> torch.Tensor:
        if isinstance(node, (N.Conv, N.BatchNorm)):
            return self._modules_of[id(node)](x)
        if isinstance(node, N.ReLU):
            return F.relu(x) if node.cap is None else F.hardtanh(x, 0.0, node.cap)  # nn.ReLU6
        if isinstance(node, N.Pool):
            pool = F.max_pool2d if node.kind == "max" else F.avg_pool2d
            return pool(x, node.kernel, node.stride, node.padding)
        if isinstance(node, N.AdaptivePool):
            return F.adaptive_avg_pool2d(x, node.out_hw)
        if isinstance(node, N.Flatten):
            return torch.flatten(x, 1)
        if isinstance(node, N.Dropout):
            return F.dropout(x, node.p, self.training and self.dropout)
        if isinstance(node, N.Seq):
            for child in node.nodes:
                x = self._run(child, x)
            return x
        if isinstance(node, N.Residual):
            main = self._run(node.main, x)
            return main + (x if node.shortcut is None else self._run(node.shortcut, x))
        if isinstance(node, N.DenseConcat):
            return torch.cat([x, self._run(node.branch, x)], dim=1)
        raise TypeError(f"no torch module for graph node {type(node).__name__}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.graph, x)


def torch_model(network: N.Network, dropout: bool = True) -> GraphModel:
    """The torch module of `network` (default torch initialisation; see `copy_parameters`);
    `dropout=False` makes its dropout layers the identity."""
    return GraphModel(network, dropout)


def _numpy_modules(model: L.Module) -> list:
    return [m for m in model.modules() if isinstance(m, (L.Conv2d, L.Linear, L._BatchNorm))]


def copy_parameters(numpy_model: L.Module, torch_model: GraphModel) -> None:
    """Give `torch_model` the parameters and batch-norm statistics of `numpy_model` (both
    built from the same network graph: their conv, fc and BN modules pair up in graph order,
    checked by layer name, kind and shape)."""
    ours, theirs = _numpy_modules(numpy_model), torch_model.layer_order
    if len(ours) != len(theirs):
        raise ValueError(f"the models differ: {len(ours)} NumPy and {len(theirs)} torch layers")
    with torch.no_grad():
        for a, b, name in zip(ours, theirs, torch_model.layer_names):
            kind = isinstance(a, L._BatchNorm) == isinstance(b, (nn.BatchNorm1d, nn.BatchNorm2d))
            if not kind or (hasattr(a, "spec") and a.spec.name != name):
                raise ValueError(f"the models differ at {name!r}: {type(a).__name__} against {type(b).__name__}")
            if tuple(a.weight.value.shape) != tuple(b.weight.shape):
                raise ValueError(f"the models differ: {type(a).__name__} {a.weight.value.shape} against "
                                 f"{type(b).__name__} {tuple(b.weight.shape)}")
            b.weight.copy_(torch.from_numpy(np.ascontiguousarray(a.weight.value)))
            if a.bias is not None:
                b.bias.copy_(torch.from_numpy(np.ascontiguousarray(a.bias.value)))
            if isinstance(a, L._BatchNorm):
                b.running_mean.copy_(torch.from_numpy(a.running_mean))
                b.running_var.copy_(torch.from_numpy(a.running_var))
