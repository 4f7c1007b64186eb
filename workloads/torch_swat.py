"""SWAT-U in PyTorch, with its sparse copies exposed to the trace recorder (optional `torch` extra).

`swat_u(model, sparsity)` makes every Conv2d and Linear of `model` (but the dense layers:
by default the first conv, as SWAT-U and accelsim's NumPy trainer do) compute, in training
mode, as SWAT-U (Raihan & Aamodt, NeurIPS 2020; `workloads.sparsity`, table row swat-u):

- forward: y = x * Top-K(W) (the input dense);
- backward: dX from Top-K(W), dW from Top-K(X), the saved sparse input; dW is dense
  (every weight is updated).

Top-K is the NumPy trainer's exactly: over the whole tensor, the K-th largest magnitude
(K = `workloads.topk.keep_count`) as a threshold, every element at or above it kept. The
sparse copies live inside a custom autograd function, which forward and backward hooks
cannot see, so while `workloads.torch_trace` records (it sets ``module.accelsim_recording``)
each forward also sets ``module.accelsim_used = {"weight": Top-K(W), "input_saved":
Top-K(X)}`` (detached), the hook point the recorder reads. Do the same in your own
method's module to record its tensors. In evaluation mode the layers compute with Top-K(W),
as the NumPy trainer evaluates.
"""

from __future__ import annotations

import types

import torch
from torch import nn
from torch.nn import functional as F

from .topk import keep_count


def topk(x: torch.Tensor, sparsity: float) -> torch.Tensor:
    """`x` with all but its K largest magnitudes (ties at the K-th kept) set to zero."""
    n = x.numel()
    keep = keep_count(n, sparsity)
    if keep >= n:
        return x
    if keep == 0:
        return torch.zeros_like(x)
    magnitude = x.detach().abs().reshape(-1)
    threshold = torch.kthvalue(magnitude, n - keep + 1).values
    return torch.where(x.abs() >= threshold, x, torch.zeros_like(x))


class _SwatConv(torch.autograd.Function):
    """y = conv(x, W_sparse); dX from W_sparse, dW (dense, for W) from X_sparse."""

    @staticmethod
    def forward(ctx, x, w, b, w_sparse, x_sparse, conv):
        ctx.save_for_backward(x_sparse, w_sparse)
        ctx.conv, ctx.x_shape, ctx.has_bias = conv, x.shape, b is not None
        return F.conv2d(x, w_sparse, b, **conv)

    @staticmethod
    def backward(ctx, dy):
        x_sparse, w_sparse = ctx.saved_tensors
        dx = torch.nn.grad.conv2d_input(ctx.x_shape, w_sparse, dy, **ctx.conv)
        dw = torch.nn.grad.conv2d_weight(x_sparse, w_sparse.shape, dy, **ctx.conv)
        db = dy.sum(dim=(0, 2, 3)) if ctx.has_bias else None
        return dx, dw, db, None, None, None


class _SwatLinear(torch.autograd.Function):
    """y = x W_sparse^T; dX from W_sparse, dW (dense, for W) from X_sparse."""

    @staticmethod
    def forward(ctx, x, w, b, w_sparse, x_sparse):
        ctx.save_for_backward(x_sparse, w_sparse)
        ctx.has_bias = b is not None
        return F.linear(x, w_sparse, b)

    @staticmethod
    def backward(ctx, dy):
        x_sparse, w_sparse = ctx.saved_tensors
        return dy @ w_sparse, dy.t() @ x_sparse, dy.sum(dim=0) if ctx.has_bias else None, None, None


def _sparse_copies(module, x):
    """Top-K of the weight and of the input (detached); exposed as `accelsim_used` while a
    recorder asks for them (`accelsim_recording`), so no copy outlives its iteration."""
    w_sparse = topk(module.weight.detach(), module.swat_sparsity)
    x_sparse = topk(x.detach(), module.swat_sparsity)
    if getattr(module, "accelsim_recording", False):
        module.accelsim_used = {"weight": w_sparse, "input_saved": x_sparse}
    return w_sparse, x_sparse


def _conv_forward(self, x):
    conv = {"stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups}
    if not self.training:  # evaluation with the sparse forward weights, as the NumPy trainer's
        return F.conv2d(x, topk(self.weight, self.swat_sparsity), self.bias, **conv)
    return _SwatConv.apply(x, self.weight, self.bias, *_sparse_copies(self, x), conv)


def _linear_forward(self, x):
    if x.dim() != 2:
        raise ValueError(f"SWAT-U Linear: expected a [N, C] input, got shape {tuple(x.shape)}")
    if not self.training:
        return F.linear(x, topk(self.weight, self.swat_sparsity), self.bias)
    return _SwatLinear.apply(x, self.weight, self.bias, *_sparse_copies(self, x))


def swat_u(model: nn.Module, sparsity: float, dense_layers: list[str] | None = None) -> nn.Module:
    """Make `model`'s Conv2d and Linear layers SWAT-U at `sparsity` in training mode (in
    place; returns `model`). `dense_layers`: qualified names left dense (default: the
    first Conv2d). Convolutions with string padding or a padding mode other than zeros
    are refused (ValueError)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if dense_layers is None:
        dense_layers = [next((n for n, m in layers if isinstance(m, nn.Conv2d)), None)]
    unknown = sorted(set(dense_layers) - {n for n, _ in layers} - {None})
    if unknown:
        raise ValueError(f"dense layer {unknown[0]!r} is not a Conv2d or Linear of this model")
    for name, module in layers:
        if name in dense_layers:
            continue
        if isinstance(module, nn.Conv2d):
            if isinstance(module.padding, str) or module.padding_mode != "zeros":
                raise ValueError(f"layer {name!r}: SWAT-U needs zero padding given as integers")
            module.forward = types.MethodType(_conv_forward, module)
        else:
            module.forward = types.MethodType(_linear_forward, module)
        module.swat_sparsity = float(sparsity)
    return model
