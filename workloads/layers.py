"""Hand-written NumPy neural-network layers with forward and backward passes.

What this models: the modules of a PyTorch CNN (``nn.Conv2d``, ``nn.Linear``,
``nn.BatchNorm1d/2d``, ``nn.ReLU``/``ReLU6``, ``nn.MaxPool2d``, ``nn.AvgPool2d``,
``nn.AdaptiveAvgPool2d``, ``nn.Flatten``, ``nn.Dropout``, containers) with the same
numerical semantics, plus the hooks SWAT-style sparse training needs on the conv and fc
layers (`WeightLayer`): a sparse weight for the forward pass (`forward_weight`), a sparse
weight for the input gradient (`backward_weight`), a sparsified input saved for the
weight gradient (`save_input`, possibly a `Thresholded` tensor masked as it is read), a hook on the output gradient (`grad_output_hook`,
meProp) and recording of the four tensors of one iteration (`record` -> `recorded`) for
trace export (`workloads.export`).

Units and layouts: activations are NCHW ([batch, channels, height, width]) for 2-d
layers and [batch, features] for fc / BatchNorm1d; conv weights are OIHW
([out_channels, in_channels / groups, kernel, kernel]), fc weights [out, in]. Spatial
sizes, kernels, strides, padding and dilation are in elements. Tensors are float32 by
default; every layer also runs in float64 (``dtype=np.float64``), which the gradient
checks use.

Conventions:

- `Module.forward` uses ``self.training``; `Module.backward(dy)` returns dx and
  ACCUMULATES (``+=``) into its parameters' ``grad`` (call `zero_grad` between steps).
  A backward pass needs the forward pass just before it; the cached tensors are
  released after backward. No module modifies the gradient it receives.
- Parameter names: a `Param`'s ``name`` is its dotted path from the root of the module
  tree it belongs to (``"3.main.0.weight"``), the same key `state_dict` uses, so names
  are unique in a model; they are kept up to date as modules are attached to parents.
- Conv2d is im2col + BLAS: per chunk of samples (sized to stay in cache), the inputs are
  unfolded by a numba kernel into a [C*k*k, n*Ho*Wo] matrix (rows ordered (c, i, j) like
  the flattened OIHW weight), multiplied by the weight matrix per group, and folded back
  (col2im, numba) in the backward pass. The unfolded input is recomputed in backward
  from the saved input rather than kept. 1x1 stride-1 unpadded convs are plain matmuls.
  For stride-1 convs (unless out_channels > 2 * in_channels) the input gradient is the
  forward conv of dy with the flipped, transposed weight (unfold dy + matmul) instead of
  matmul + col2im: the same FLOPs with less memory traffic. Strided convs use col2im.
  A `Thresholded` saved input (SWAT's Top-K activations) is masked as it is unfolded.
  3x3 stride-1 convs (one group, no dilation, padding up to 2) with 16 or more channels,
  maps of 2x2 or more and at least 64 tiles of 2x2 outputs over the batch (most of a
  ResNet) skip im2col for the forward pass and, where dX is the transposed conv, for the
  input gradient: Winograd F(2x2, 3x3) (`workloads.winograd`),
  2.25x fewer multiply-adds, equal to the direct convolution up to float rounding
  (``Conv2d.winograd = False`` turns it off).
- Threads (`workloads.kernels`): a large pass splits the batch (BatchNorm: the channels; ReLU: the elements)
  over one Python thread per core; each runs GIL-free numba kernels and single-threaded
  BLAS calls (numpy's OpenBLAS is set to one thread for the duration and restored). With
  a BLAS that cannot be controlled so, everything runs serially with multithreaded BLAS.
  Results do not depend on thread timing (fixed split, reductions in range order).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import kernels as _kernels
from .kernels import (  # noqa: F401  (im2col ... maxpool_backward_reference are re-exported)
    _bn_apply_kernel,
    _bn_backward_kernel,
    _bn_stats_kernel,
    _maxpool_forward_kernel,
    _out_size,
    _relu_backward_kernel,
    _relu_forward_kernel,
    _run_split,
    col2im,
    col2im_reference,
    im2col,
    maxpool_backward,
    maxpool_backward_reference,
)
from .modules import _FLOATS, Module, Param, _check_dtype, _need_cache, _pieces  # noqa: F401  (re-exported)
from .weight_layers import Conv2d, Linear, WeightLayer  # noqa: F401  (re-exported)

__all__ = [
    "Param", "Module", "WeightLayer", "Conv2d", "Linear", "BatchNorm2d", "BatchNorm1d", "ReLU",
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten", "Dropout", "Sequential",
    "Residual", "DenseConcat", "softmax_cross_entropy",
    "im2col", "col2im", "col2im_reference", "maxpool_backward", "maxpool_backward_reference",
]


# ================================================================================================
# Normalisation, activation, pooling, reshaping
# ================================================================================================

class _BatchNorm(Module):
    _buffer_names = ("running_mean", "running_var")
    _ndim = 4

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5,
                 dtype=np.float32):
        super().__init__()
        self.channels = int(channels)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.dtype = _check_dtype(dtype)
        self.weight = Param("weight", np.ones(self.channels, self.dtype), decay=False)
        self.bias = Param("bias", np.zeros(self.channels, self.dtype), decay=False)
        self.running_mean = np.zeros(self.channels, self.dtype)
        self.running_var = np.ones(self.channels, self.dtype)
        self._cache = None

    def forward(self, x):
        if x.ndim != self._ndim or x.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__}({self.channels}): bad input shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=self.dtype)
        x3 = x.reshape(x.shape[0], self.channels, -1)
        if self.training:
            m = x3.shape[0] * x3.shape[2]
            if m < 2:
                raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel "
                                 "when training")
            mean, var = np.empty(self.channels), np.empty(self.channels)
            _run_split(lambda c0, c1: _bn_stats_kernel(x3, c0, c1, mean, var), self.channels,
                       x3.size, pieces=_pieces(self.channels))
            mom = self.momentum
            self.running_mean *= 1 - mom
            self.running_mean += (mom * mean).astype(self.dtype)
            self.running_var *= 1 - mom
            self.running_var += (mom * var * (m / (m - 1))).astype(self.dtype)
        else:
            mean = self.running_mean.astype(np.float64)
            var = self.running_var.astype(np.float64)
        invstd = 1.0 / np.sqrt(var + self.eps)
        gamma = self.weight.value.astype(np.float64)
        scale = gamma * invstd
        shift = self.bias.value - mean * scale
        y = np.empty_like(x3)
        scale, shift = scale.astype(self.dtype), shift.astype(self.dtype)
        _run_split(lambda c0, c1: _bn_apply_kernel(x3, scale, shift, y, c0, c1), self.channels,
                   x3.size, pieces=_pieces(self.channels))
        self._cache = (x3, mean.astype(self.dtype), invstd.astype(self.dtype), self.training)
        return y.reshape(x.shape)

    def backward(self, dy):
        x3, mean, invstd, batch_stats = _need_cache(self, self._cache)
        self._cache = None
        dy3 = np.ascontiguousarray(dy, dtype=self.dtype).reshape(x3.shape)
        dx = np.empty_like(x3)
        sdy, sdyx = np.empty(self.channels), np.empty(self.channels)
        gamma = self.weight.value
        _run_split(lambda c0, c1: _bn_backward_kernel(dy3, x3, mean, invstd, gamma, batch_stats,
                                                      dx, c0, c1, sdy, sdyx),
                   self.channels, x3.size, pieces=_pieces(self.channels))
        self.weight.grad += sdyx.astype(self.dtype)
        self.bias.grad += sdy.astype(self.dtype)
        return dx.reshape(dy.shape)

    def extra_repr(self):
        return f"{self.channels}, momentum={self.momentum}, eps={self.eps}"


class BatchNorm2d(_BatchNorm):
    """Batch norm over NCHW (torch ``nn.BatchNorm2d``): per channel, batch statistics in
    training (biased variance to normalise, unbiased for `running_var`), running statistics
    in eval. `weight` (gamma) = 1 and `bias` (beta) = 0 at start, without weight decay."""

    _ndim = 4


class BatchNorm1d(_BatchNorm):
    """Batch norm over [N, C] (torch ``nn.BatchNorm1d``); see `BatchNorm2d`."""

    _ndim = 2


class ReLU(Module):
    """max(x, 0), clipped at `cap` if given (cap=6 is ReLU6; the gradient is 0 at and beyond
    both ends, like torch's hardtanh)."""

    def __init__(self, cap: float | None = None):
        super().__init__()
        if cap is not None and not cap > 0:
            raise ValueError(f"ReLU cap must be positive, got {cap!r}")
        self.cap = None if cap is None else float(cap)
        self._cache = None

    def forward(self, x):
        x = np.ascontiguousarray(x)
        y = np.empty_like(x)
        xf, yf, cap = x.reshape(-1), y.reshape(-1), 0.0 if self.cap is None else self.cap
        _run_split(lambda lo, hi: _relu_forward_kernel(xf[lo:hi], cap, yf[lo:hi]), x.size, x.size,
                   pieces=_pieces(x.size))
        self._cache = y
        return y

    def backward(self, dy):
        y = _need_cache(self, self._cache)
        self._cache = None
        dy = np.ascontiguousarray(dy, dtype=y.dtype)
        dx = np.empty_like(y)
        yf, dyf, dxf = y.reshape(-1), dy.reshape(-1), dx.reshape(-1)
        cap = 0.0 if self.cap is None else self.cap
        _run_split(lambda lo, hi: _relu_backward_kernel(yf[lo:hi], dyf[lo:hi], cap, dxf[lo:hi]),
                   y.size, y.size, pieces=_pieces(y.size))
        return dx

    def extra_repr(self):
        return "" if self.cap is None else f"cap={self.cap}"


def _window(xp, i, j, s, Ho, Wo):
    """View of the (i, j) kernel tap over all output positions: xp[..., i + s*ho, j + s*wo]."""
    return xp[:, :, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s]


class _Pool2d(Module):
    def __init__(self, kernel: int, stride: int | None = None, padding: int = 0):
        super().__init__()
        self.kernel = int(kernel)
        self.stride = int(kernel if stride is None else stride)
        self.padding = int(padding)
        if self.kernel < 1 or self.stride < 1 or not 0 <= self.padding <= self.kernel // 2:
            raise ValueError(f"bad pool geometry kernel={kernel} stride={stride} padding={padding}")
        self._cache = None

    def _geometry(self, x):
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__}: expected NCHW input, got shape {x.shape}")
        N, C, H, W = x.shape
        Ho, Wo = (_out_size(v, self.kernel, self.stride, self.padding) for v in (H, W))
        if Ho < 1 or Wo < 1:
            raise ValueError(f"{type(self).__name__}: input {H}x{W} too small")
        return N, C, H, W, Ho, Wo

    def extra_repr(self):
        return f"kernel={self.kernel}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max pooling (torch ``nn.MaxPool2d``, floor mode): padding counts as -inf; the gradient
    goes to the first maximum of each window (numba kernels, split over the (sample,
    channel) maps; a NaN is kept only where it is a window's first element)."""

    def forward(self, x):
        N, C, H, W, Ho, Wo = self._geometry(x)
        x = np.ascontiguousarray(x)
        y = np.empty((N, C, Ho, Wo), dtype=x.dtype)
        arg = np.empty((N, C, Ho, Wo), dtype=np.int32)
        _run_split(lambda c0, c1: _maxpool_forward_kernel(x, self.kernel, self.stride,
                                                          self.padding, c0, c1, y, arg),
                   N * C, x.size, pieces=_pieces(N * C))
        self._cache = (x.shape, arg)
        return y

    def backward(self, dy):
        shape, arg = _need_cache(self, self._cache)
        self._cache = None
        return maxpool_backward(dy, arg, shape, self.kernel, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    """Average pooling (torch ``nn.AvgPool2d``, floor mode, ``count_include_pad=True``: the
    divisor is always kernel*kernel)."""

    def forward(self, x):
        N, C, H, W, Ho, Wo = self._geometry(x)
        k, s, p = self.kernel, self.stride, self.padding
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
        y = _window(xp, 0, 0, s, Ho, Wo).copy()
        for t in range(1, k * k):
            y += _window(xp, t // k, t % k, s, Ho, Wo)
        y *= y.dtype.type(1.0 / (k * k))
        self._cache = x.shape
        return y

    def backward(self, dy):
        N, C, H, W = _need_cache(self, self._cache)
        self._cache = None
        k, s, p = self.kernel, self.stride, self.padding
        Ho, Wo = dy.shape[2:]
        g = dy * dy.dtype.type(1.0 / (k * k))
        dxp = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=dy.dtype)
        for t in range(k * k):
            _window(dxp, t // k, t % k, s, Ho, Wo)[...] += g
        return dxp[:, :, p:p + H, p:p + W].copy() if p else dxp


def _adaptive_matrix(size: int, out: int, dtype) -> np.ndarray:
    """[out, size] averaging matrix of torch's adaptive bins [floor(i*size/out),
    ceil((i+1)*size/out))."""
    m = np.zeros((out, size), dtype=np.float64)
    for i in range(out):
        a = (i * size) // out
        b = -((-(i + 1) * size) // out)
        m[i, a:b] = 1.0 / (b - a)
    return m.astype(dtype)


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling to `out_hw` (torch ``nn.AdaptiveAvgPool2d``): output bin i
    averages input rows floor(i*H/out) .. ceil((i+1)*H/out) - 1 (same for columns), so an
    output larger than the input replicates; (1, 1) is global average pooling."""

    def __init__(self, out_hw: tuple[int, int]):
        super().__init__()
        if isinstance(out_hw, int):
            out_hw = (out_hw, out_hw)
        self.out_hw = tuple(int(v) for v in out_hw)
        if len(self.out_hw) != 2 or min(self.out_hw) < 1:
            raise ValueError(f"out_hw must be two positive sizes, got {out_hw!r}")
        self._cache = None

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"AdaptiveAvgPool2d: expected NCHW input, got shape {x.shape}")
        N, C, H, W = x.shape
        oh, ow = self.out_hw
        if (oh, ow) == (1, 1):
            self._cache = (x.shape, None, None)
            return x.reshape(N, C, H * W).mean(axis=2, dtype=x.dtype).reshape(N, C, 1, 1)
        if (oh, ow) == (H, W):
            self._cache = (x.shape, None, None)
            return x.copy()
        ph = _adaptive_matrix(H, oh, x.dtype)
        pw = _adaptive_matrix(W, ow, x.dtype)
        self._cache = (x.shape, ph, pw)
        return np.matmul(ph, np.matmul(x, pw.T))

    def backward(self, dy):
        shape, ph, pw = _need_cache(self, self._cache)
        self._cache = None
        N, C, H, W = shape
        if ph is None:
            if self.out_hw == (1, 1) and (H, W) != (1, 1):
                g = dy.reshape(N, C, 1) * dy.dtype.type(1.0 / (H * W))
                return np.ascontiguousarray(np.broadcast_to(g, (N, C, H * W))).reshape(shape)
            return np.array(dy, copy=True)
        return np.matmul(ph.T, np.matmul(dy, pw))

    def extra_repr(self):
        return f"out_hw={self.out_hw}"


class Flatten(Module):
    """[N, C, H, W] -> [N, C*H*W] (channel-major, as ``torch.flatten(x, 1)``)."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(_need_cache(self, self._cache))


class Dropout(Module):
    """Inverted dropout (torch ``nn.Dropout``): in training each element is zeroed with
    probability `p` and the others scaled by 1/(1-p); identity in eval."""

    def __init__(self, p: float, rng: np.random.Generator):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout p must be in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = rng
        self._cache = None

    def forward(self, x):
        if not self.training or self.p == 0:
            self._cache = False
            return x
        dt = x.dtype if x.dtype in _FLOATS else np.dtype(np.float64)
        keep = self.rng.random(x.shape, dtype=dt) >= self.p
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        self._cache = mask
        return x * mask

    def backward(self, dy):
        mask = _need_cache(self, self._cache)
        self._cache = None
        return dy if mask is False else dy * mask

    def extra_repr(self):
        return f"p={self.p}"


# ================================================================================================
# Containers
# ================================================================================================

class Sequential(Module):
    """Modules applied in order; children are named "0", "1", ..."""

    def __init__(self, *modules: Module):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> Sequential:
        if not isinstance(module, Module):
            raise TypeError(f"Sequential holds Modules, got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def forward(self, x):
        for m in self._modules.values():
            x = m.forward(x)
        return x

    def backward(self, dy):
        for m in reversed(list(self._modules.values())):
            dy = m.backward(dy)
        return dy


class Residual(Module):
    """``y = main(x) + (shortcut(x) if shortcut else x)``; children "main", "shortcut"."""

    def __init__(self, main: Module, shortcut: Module | None = None):
        super().__init__()
        self.main = main
        self.shortcut = shortcut

    def forward(self, x):
        y = self.main.forward(x)
        s = x if self.shortcut is None else self.shortcut.forward(x)
        if y.shape != s.shape:
            raise ValueError(f"Residual: main gives {y.shape}, shortcut {s.shape}")
        return _kernels.add(y, s)

    def backward(self, dy):
        dx = self.main.backward(dy)
        ds = dy if self.shortcut is None else self.shortcut.backward(dy)
        return _kernels.add(dx, ds)


class DenseConcat(Module):
    """DenseNet layer: ``y = concatenate([x, branch(x)], axis=1)``; child "branch"."""

    def __init__(self, branch: Module):
        super().__init__()
        self.branch = branch
        self._cache = None

    def forward(self, x):
        b = self.branch.forward(x)
        self._cache = x.shape[1]
        return np.concatenate([x, b.astype(x.dtype, copy=False)], axis=1)

    def backward(self, dy):
        c = _need_cache(self, self._cache)
        self._cache = None
        db = self.branch.backward(np.ascontiguousarray(dy[:, c:]))
        return dy[:, :c] + db


# ================================================================================================
# Loss
# ================================================================================================

def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray,
                          label_smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy over the batch (torch ``F.cross_entropy`` with
    `label_smoothing`: target = (1 - eps) * onehot + eps / K) and its gradient d loss /
    d logits (already divided by N, in the logits' dtype). logits [N, K]; labels [N] ints."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"expected logits [N, K] and labels [N], got {logits.shape} and "
                         f"{labels.shape}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    N, K = logits.shape
    labels = labels.astype(np.int64)
    if N and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"labels must be in [0, {K}), got range {labels.min()}..{labels.max()}")
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    ez = np.exp(z)
    sez = ez.sum(axis=1, keepdims=True)
    logp = z - np.log(sez)
    target = np.full((N, K), label_smoothing / K)
    target[np.arange(N), labels] += 1.0 - label_smoothing
    loss = float(-(target * logp).sum() / max(N, 1))
    grad = (ez / sez - target) / max(N, 1)
    out_dtype = logits.dtype if logits.dtype in _FLOATS else np.dtype(np.float64)
    return loss, grad.astype(out_dtype)
