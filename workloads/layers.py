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

import math
from collections.abc import Callable, Iterator

import numpy as np

from simulator.trace import LayerSpec

from . import kernels as _kernels
from . import winograd as _winograd
from .topk import Thresholded
from .kernels import (  # noqa: F401  (im2col ... maxpool_backward_reference are re-exported)
    _bn_apply_kernel,
    _bn_backward_kernel,
    _bn_stats_kernel,
    _col2im_kernel,
    _flip_transpose_kernel,
    _im2col_kernel,
    _mask_cols_kernel,
    _masked_pad_kernel,
    _maxpool_forward_kernel,
    _relu_backward_kernel,
    _relu_forward_kernel,
    _run_split,
    _scratch,
    _out_size,
    col2im,
    col2im_reference,
    im2col,
    maxpool_backward,
    maxpool_backward_reference,
)

__all__ = [
    "Param", "Module", "WeightLayer", "Conv2d", "Linear", "BatchNorm2d", "BatchNorm1d", "ReLU",
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten", "Dropout", "Sequential",
    "Residual", "DenseConcat", "softmax_cross_entropy",
    "im2col", "col2im", "col2im_reference", "maxpool_backward", "maxpool_backward_reference",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in _FLOATS:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


# ================================================================================================
# Parameters and the module tree
# ================================================================================================

class Param:
    """A trainable tensor: `value`, its gradient `grad` (same shape and dtype, zeroed at
    creation, accumulated by backward), and whether weight decay applies (`decay`).
    `name` is the dotted path from the root module (the `state_dict` key)."""

    def __init__(self, name: str, value: np.ndarray, decay: bool = True):
        self.name = name
        self.value = value
        self.grad = np.zeros_like(value)
        self.decay = bool(decay)

    def __repr__(self) -> str:
        return f"Param({self.name!r}, shape={self.value.shape}, dtype={self.value.dtype})"


class Module:
    """Base class: a node of the module tree with forward and backward passes.

    Sub-modules and `Param`s assigned as attributes are registered in assignment order
    (like torch's ``nn.Module``); `_buffer_names` lists non-trainable state arrays that
    go into `state_dict` (BatchNorm's running statistics).
    """

    _buffer_names: tuple[str, ...] = ()

    def __init__(self):
        self.__dict__.setdefault("_modules", {})
        self.__dict__.setdefault("_params", {})
        self.__dict__.setdefault("_parent", None)
        self.training = True

    # -- registration ---------------------------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        mods = d.setdefault("_modules", {})
        params = d.setdefault("_params", {})
        d.setdefault("_parent", None)
        mods.pop(name, None)
        params.pop(name, None)
        if isinstance(value, Module):
            if value._parent is not None and value._parent is not self:
                raise ValueError(f"module {type(value).__name__} already belongs to another "
                                 "module (sharing a module between parents is not supported)")
            object.__setattr__(value, "_parent", self)
            mods[name] = value
        elif isinstance(value, Param):
            params[name] = value
        object.__setattr__(self, name, value)
        if isinstance(value, (Module, Param)):
            self._rename_params()

    def _rename_params(self) -> None:
        root = self
        while root._parent is not None:
            root = root._parent
        for name, p in root.named_params():
            p.name = name

    # -- tree -----------------------------------------------------------------------------------
    def named_children(self) -> list[tuple[str, Module]]:
        return list(self.__dict__.get("_modules", {}).items())

    def children(self) -> list[Module]:
        return [m for _, m in self.named_children()]

    def modules(self) -> Iterator[Module]:
        """Pre-order, recursive, self first."""
        yield self
        for child in self.children():
            yield from child.modules()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_params(self, prefix: str = "") -> list[tuple[str, Param]]:
        """(dotted name, Param), own parameters first, then each child's, recursively."""
        out = [(f"{prefix}.{n}" if prefix else n, p)
               for n, p in self.__dict__.get("_params", {}).items()]
        for name, child in self.named_children():
            out.extend(child.named_params(f"{prefix}.{name}" if prefix else name))
        return out

    def params(self) -> list[Param]:
        """All parameters, recursive, in a deterministic order (see `named_params`)."""
        return [p for _, p in self.named_params()]

    def named_buffers(self, prefix: str = "") -> list[tuple[str, np.ndarray]]:
        out = [(f"{prefix}.{n}" if prefix else n, getattr(self, n)) for n in self._buffer_names]
        for name, child in self.named_children():
            out.extend(child.named_buffers(f"{prefix}.{name}" if prefix else name))
        return out

    # -- modes and gradients ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.params():
            p.grad[...] = 0

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of all parameters and buffers keyed by dotted path (np.savez-able)."""
        out = {n: p.value.copy() for n, p in self.named_params()}
        for n, b in self.named_buffers():
            out[n] = b.copy()
        return out

    def load_state_dict(self, state) -> None:
        """Copy `state` (a dict or an np.load'ed .npz) into the parameters and buffers, in
        place. Missing or unexpected keys and shape mismatches raise KeyError / ValueError."""
        targets = {n: p.value for n, p in self.named_params()}
        targets.update(self.named_buffers())
        keys = set(state.keys())
        missing = sorted(set(targets) - keys)
        unexpected = sorted(keys - set(targets))
        if missing or unexpected:
            raise KeyError(f"state_dict mismatch: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
        arrays = {name: np.asarray(state[name]) for name in targets}   # an .npz reads once
        for name, target in targets.items():
            if arrays[name].shape != target.shape:
                raise ValueError(f"state_dict[{name!r}] has shape {arrays[name].shape}, "
                                 f"the module {target.shape}")
        for name, target in targets.items():
            target[...] = arrays[name]

    # -- passes -----------------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def __repr__(self) -> str:
        kids = self.named_children()
        if not kids:
            return f"{type(self).__name__}({self.extra_repr()})"
        body = "\n".join(f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in kids)
        return f"{type(self).__name__}(\n{body}\n)"

    def extra_repr(self) -> str:
        return ""


def _need_cache(module: Module, cache):
    if cache is None:
        raise RuntimeError(f"{type(module).__name__}.backward called without a forward pass "
                           "before it")
    return cache


# ================================================================================================
# Conv and fc layers with the sparsity hooks
# ================================================================================================

class WeightLayer(Module):
    """Shared base of Conv2d and Linear: initial weights, optional bias, sparsity hooks.

    Initial weights: conv layers He-normal, std = sqrt(2 / fan_in) (torchvision's ResNet
    init, in fan-in mode); fc layers PyTorch's ``nn.Linear`` default, uniform in
    +-1/sqrt(fan_in). He-normal on a classifier gives logits large enough to destabilise
    plain SGD at the usual learning rates.

    Hooks (all default None/False; the sparsity method sets them):

    - `forward_weight`: if set, the forward pass uses it instead of ``weight.value``.
    - `backward_weight`: if set, dX is computed with it; otherwise with the forward weight.
    - `save_input`: in training mode, the activation kept for the weight gradient is
      ``save_input(x)`` (in eval mode x itself); dW is computed from this saved tensor. It
      may return an array or a `Thresholded` x (Top-K kept as x plus its threshold): the
      conv masks that as its backward pass unfolds it, so no sparse copy is written.
    - `grad_output_hook`: applied to dy at the start of backward; the hooked dy is used for
      both dX and dW (and the bias gradient).
    - The weight gradient is dense: ``weight.grad += dW`` for every weight.
    - `record`: when True, forward stores ``recorded = {"weight", "input", "input_saved"}``
      and backward adds ``recorded["grad_output"]`` (the hooked dy); all are copies.
    """

    kind = ""

    def __init__(self, spec: LayerSpec, rng: np.random.Generator, dtype=np.float32):
        super().__init__()
        if not isinstance(spec, LayerSpec):
            raise TypeError(f"{type(self).__name__} needs a LayerSpec, got {type(spec).__name__}")
        if spec.kind != self.kind:
            raise ValueError(f"layer {spec.name}: {type(self).__name__} needs kind "
                             f"{self.kind!r}, got {spec.kind!r}")
        self.spec = spec
        self.dtype = _check_dtype(dtype)
        fan_in = (spec.in_channels if spec.kind == "fc"
                  else spec.channels_per_group * spec.kernel ** 2)
        if spec.kind == "fc":
            w = rng.uniform(-1.0, 1.0, spec.weight_shape) / math.sqrt(fan_in)
        else:
            w = rng.standard_normal(spec.weight_shape) * math.sqrt(2.0 / fan_in)
        self.weight = Param("weight", w.astype(self.dtype), decay=True)
        self.bias = (Param("bias", np.zeros(spec.out_channels, self.dtype), decay=False)
                     if spec.bias else None)
        self.forward_weight: np.ndarray | None = None
        self.backward_weight: np.ndarray | None = None
        self.save_input: Callable[[np.ndarray], np.ndarray] | None = None
        self.grad_output_hook: Callable[[np.ndarray], np.ndarray] | None = None
        self.record = False
        self.recorded: dict[str, np.ndarray] | None = None
        self._cache = None

    def _as_weight(self, w, what: str) -> np.ndarray:
        w = np.asarray(w)
        if w.shape != self.spec.weight_shape:
            raise ValueError(f"layer {self.spec.name}: {what} has shape {w.shape}, "
                             f"expected {self.spec.weight_shape}")
        return np.ascontiguousarray(w, dtype=self.dtype)

    def _check_input(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=self.dtype)
        self._check_input(x)
        w = self._as_weight(self.weight.value if self.forward_weight is None
                            else self.forward_weight, "forward_weight")
        saved = x
        if self.training and self.save_input is not None:
            saved = self.save_input(x)
            if isinstance(saved, Thresholded):
                if saved.channel_threshold_bits is None or saved.values.dtype != self.dtype:
                    saved = saved.dense()   # no masked unfold for this one: mask now
            else:
                saved = np.ascontiguousarray(saved, dtype=self.dtype)
            if saved.shape != x.shape:
                raise ValueError(f"layer {self.spec.name}: save_input returned shape "
                                 f"{saved.shape}, expected {x.shape}")
        y = self._forward(x, w)
        if self.bias is not None:
            y += self.bias.value.reshape((1, -1) + (1,) * (y.ndim - 2))
        self._cache = (w, saved)
        if self.record:
            self.recorded = {"weight": w.copy(), "input": x.copy(),
                             "input_saved": saved.dense() if isinstance(saved, Thresholded)
                             else saved.copy()}
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        w, saved = _need_cache(self, self._cache)
        self._cache = None
        dy = np.ascontiguousarray(dy, dtype=self.dtype)
        if self.grad_output_hook is not None:
            hooked = np.ascontiguousarray(self.grad_output_hook(dy), dtype=self.dtype)
            if hooked.shape != dy.shape:
                raise ValueError(f"layer {self.spec.name}: grad_output_hook returned shape "
                                 f"{hooked.shape}, expected {dy.shape}")
            dy = hooked
        if self.record and self.recorded is not None:
            self.recorded["grad_output"] = dy.copy()
        wb = w if self.backward_weight is None else self._as_weight(self.backward_weight,
                                                                     "backward_weight")
        dx, dw = self._backward(dy, saved, wb)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=(0,) + tuple(range(2, dy.ndim)))
        return dx

    def _forward(self, x, w):
        raise NotImplementedError

    def _backward(self, dy, saved, wb):
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{self.spec.name!r}, {self.spec.weight_shape}"


# Chunking of the conv batch: the unfolded input of one chunk holds about _CHUNK_ELEMENTS
# elements (cache-sized), but at least _MIN_COLUMNS output positions (wide enough BLAS calls).
_CHUNK_ELEMENTS = 1 << 20
_MIN_COLUMNS = 512


def _chunk_size(batch: int, rows: int, positions: int) -> int:
    nb = max(1, _CHUNK_ELEMENTS // max(1, rows * positions))
    nb = max(nb, -(-_MIN_COLUMNS // positions))
    return min(nb, batch)


def _pieces(count: int, per_chunk: int = 1, limit: int | None = None) -> int:
    """How many pieces to cut a pass over `count` samples (channels, elements) into for
    `_run_split`: `PIECES_PER_WORKER` per worker, but no more than whole `per_chunk`s (a
    conv's chunk of samples, which sizes its BLAS calls) fit, and at most `limit` if given."""
    pieces = min(_kernels.PIECES_PER_WORKER * _kernels._WORKERS, max(1, count // per_chunk))
    return pieces if limit is None else min(pieces, limit)




class Conv2d(WeightLayer):
    """2-d convolution (torch ``nn.Conv2d``): x [N, C, H, W] -> [N, O, Ho, Wo], weight OIHW.

    Any stride, zero padding, dilation and groups (depthwise when groups == C). The input's
    channel count must match the spec; its height and width may differ from ``spec.in_hw``.
    Large passes split the batch over the CPU cores (see `_run_split`).
    """

    kind = "conv"
    # 3x3 stride-1 forward passes and input gradients by Winograd F(2x2, 3x3) where the
    # geometry allows (`workloads.winograd`); False: always im2col + GEMM
    winograd = True

    def _check_input(self, x):
        if x.ndim != 4 or x.shape[1] != self.spec.in_channels:
            raise ValueError(f"layer {self.spec.name}: expected input [N, {self.spec.in_channels}"
                             f", H, W], got shape {x.shape}")

    def _geometry(self, x_shape):
        s = self.spec
        N, C, H, W = x_shape
        Ho = _out_size(H, s.kernel, s.stride, s.padding, s.dilation)
        Wo = _out_size(W, s.kernel, s.stride, s.padding, s.dilation)
        if Ho < 1 or Wo < 1:
            raise ValueError(f"layer {s.name}: input {H}x{W} is too small for the kernel")
        pointwise = s.kernel == 1 and s.stride == 1 and s.padding == 0
        return N, C, H, W, Ho, Wo, pointwise

    def _unfold(self, xc, Ho, Wo, pointwise, mask=None):
        """The chunk's unfolded input as [G, C/G*k*k, n*Ho*Wo] (pointwise: no im2col; the
        input itself for one sample, else its [C, n*H*W] transpose). `mask`: (bit patterns
        of xc, threshold patterns [n, C]) of a `Thresholded` input, zeroed while padding
        (unpadded convs: in the columns, after im2col)."""
        s = self.spec
        n, C, H, W = xc.shape
        if mask is not None:
            k, p = s.kernel, s.padding
            if p == 0 and not pointwise:        # unpadded: unfold, then mask what was taken
                cols = _scratch.get("cols", (C, k, k, n, Ho, Wo), xc.dtype)
                _im2col_kernel(xc, k, s.stride, 0, s.dilation, xc, cols)
                _mask_cols_kernel(cols, mask[1])
                return cols.reshape(s.groups, -1, n * Ho * Wo)
            xp = _scratch.get("pad", (n, C, H + 2 * p, W + 2 * p), xc.dtype)
            _masked_pad_kernel(xc, mask[0], mask[1], p, xp)
            if pointwise:
                return self._unfold(xp, Ho, Wo, pointwise)
            cols = _scratch.get("cols", (C, k, k, n, Ho, Wo), xc.dtype)
            _im2col_kernel(xp, k, s.stride, 0, s.dilation, xp, cols)
            return cols.reshape(s.groups, -1, n * Ho * Wo)
        if pointwise:
            if n == 1:
                return xc.reshape(s.groups, C // s.groups, H * W)
            cols = _scratch.get("cols", (C, n, H * W), xc.dtype)
            cols[...] = xc.reshape(n, C, H * W).transpose(1, 0, 2)
        else:
            k, p = s.kernel, s.padding
            cols = _scratch.get("cols", (C, k, k, n, Ho, Wo), xc.dtype)
            xp = _scratch.get("pad", (n, C, H + 2 * p, W + 2 * p), xc.dtype) if p else xc
            _im2col_kernel(xc, k, s.stride, p, s.dilation, xp, cols)
        return cols.reshape(s.groups, -1, n * Ho * Wo)

    def _uses_winograd(self, padding: int, cin: int, cout: int, out_shape: tuple) -> bool:
        """Whether a stride-1 3x3 conv with this padding from `cin` to `cout` channels with
        output [N, cout, Ho, Wo] (the forward pass, or the input gradient as a conv of dy)
        runs as Winograd F(2x2, 3x3): also not on maps under 2x2 (a 1x1 output costs 16
        multiplies instead of 9) nor on fewer than `winograd.MIN_TILES` tiles in all, where
        transforming the weight costs as much as the products (ResNet-50's last stage in
        evaluation: 1x1 maps at 32x32)."""
        s = self.spec
        N, _, Ho, Wo = out_shape
        return (self.winograd and _winograd.supports(s.kernel, s.stride, padding, s.dilation,
                                                      s.groups)
                and min(cin, cout) >= _winograd.MIN_CHANNELS and min(Ho, Wo) >= 2
                and N * -(-Ho // 2) * -(-Wo // 2) >= _winograd.MIN_TILES)

    def _forward(self, x, w):
        s = self.spec
        N, C, H, W, Ho, Wo, pointwise = self._geometry(x.shape)
        G, O, HW = s.groups, s.out_channels, Ho * Wo
        if self._uses_winograd(s.padding, C, O, (N, O, Ho, Wo)):
            return _winograd.conv3x3(x, _winograd.transform_weight(w), s.padding)
        wg = w.reshape(G, O // G, -1)
        y = np.empty((N, O, HW), dtype=self.dtype)
        rows = C * s.kernel ** 2
        nb = _chunk_size(N, rows, HW)

        def run(lo, hi):
            for q in range(lo, hi, nb):
                n = min(nb, hi - q)
                cols = self._unfold(x[q:q + n], Ho, Wo, pointwise)
                if n == 1:
                    np.matmul(wg, cols, out=y[q].reshape(G, O // G, HW))
                else:
                    out = np.matmul(wg, cols, out=_scratch.get("out", (G, O // G, n * HW), x.dtype))
                    y[q:q + n] = out.reshape(O, n, HW).transpose(1, 0, 2)

        _run_split(run, N, N * rows * HW, _kernels._PARALLEL_CONV_ELEMENTS,
                   pieces=_pieces(N, nb))
        return y.reshape(N, O, Ho, Wo)

    def _transposed_dx(self, C: int, O: int) -> bool:
        """Whether dX is computed as a forward conv of dy (stride 1 only) rather than matmul +
        col2im: same FLOPs, but unfolding dy (O*k*k rows, written once) moves less memory
        than folding C*k*k rows back (read-modify-write) unless O is much larger than C."""
        s = self.spec
        return (s.kernel > 1 and s.stride == 1 and s.padding <= s.dilation * (s.kernel - 1)
                and O <= 2 * C)

    def _backward(self, dy, saved, wb):
        s = self.spec
        N, C, H, W, Ho, Wo, pointwise = self._geometry(saved.shape)
        mask = None
        if isinstance(saved, Thresholded):
            saved, mask = saved.values, (saved.values.view(np.uint32),
                                         saved.channel_threshold_bits)
        G, O, HW = s.groups, s.out_channels, Ho * Wo
        k, p, d, dt = s.kernel, s.padding, s.dilation, self.dtype
        og, cg = O // G, C // G
        dy3 = dy.reshape(N, O, HW)
        transposed = self._transposed_dx(C, O)
        # dW^T = cols @ dy^T rather than dW = dy @ cols^T when the filters are few and the
        # unfolded rows many: OpenBLAS runs that shape faster (measured on ResNet-18: 1.32x
        # for 64 filters of 576 rows, 1.09x for 128 of 1152; neutral or slower beyond)
        dw_transposed = og <= 128 and cg * k * k >= 2 * og
        if transposed:
            # dX = correlation of dy (padded by d*(k-1) - p) with the flipped, transposed weight
            pt = d * (k - 1) - p
            wtf = np.empty((G, cg, og, k, k), dtype=dt)
            _flip_transpose_kernel(wb.reshape(G, og, cg, k, k), wtf)
            wtf = wtf.reshape(G, cg, og * k * k)
        else:
            wgt = wb.reshape(G, og, -1).transpose(0, 2, 1)         # [G, C/G*k*k, O/G]
        winograd_dx = transposed and self._uses_winograd(pt, O, C, (N, C, H, W))
        dx = None if winograd_dx else np.empty((N, C, H, W), dtype=dt)
        rows = max(C, O) * k * k
        nb = _chunk_size(N, rows, max(HW, H * W))

        def run(lo, hi):
            dw = np.zeros((G, cg * k * k, og) if dw_transposed else (G, og, cg * k * k), dtype=dt)
            for q in range(lo, hi, nb):
                n = min(nb, hi - q)
                if n == 1:
                    dyt = dy3[q]
                else:
                    dyt = _scratch.get("dyt", (O, n, HW), dt)
                    dyt[...] = dy3[q:q + n].transpose(1, 0, 2)
                dyt = dyt.reshape(G, og, n * HW)
                cols = self._unfold(saved[q:q + n], Ho, Wo, pointwise,
                                    None if mask is None else (mask[0][q:q + n], mask[1][q:q + n]))
                if dw_transposed:
                    dw += np.matmul(cols, dyt.transpose(0, 2, 1), out=_scratch.get("dw", dw.shape, dt))
                else:
                    dw += np.matmul(dyt, cols.transpose(0, 2, 1), out=_scratch.get("dw", dw.shape, dt))
                if winograd_dx:
                    continue                            # dX after this loop
                if pointwise and n == 1:
                    np.matmul(wgt, dyt, out=dx[q].reshape(G, cg, HW))
                elif transposed:
                    dyq = dy[q:q + n]
                    dcols = _scratch.get("dcols", (O, k, k, n, H, W), dt)
                    dyp = _scratch.get("dpad", (n, O, Ho + 2 * pt, Wo + 2 * pt), dt) if pt else dyq
                    _im2col_kernel(dyq, k, 1, pt, d, dyp, dcols)
                    dcols = dcols.reshape(G, og * k * k, n * H * W)
                    if n == 1:
                        np.matmul(wtf, dcols, out=dx[q].reshape(G, cg, H * W))
                    else:
                        out = np.matmul(wtf, dcols, out=_scratch.get("out", (G, cg, n * H * W), dt))
                        dx[q:q + n] = out.reshape(C, n, H, W).transpose(1, 0, 2, 3)
                else:
                    dcols = np.matmul(wgt, dyt,
                                      out=_scratch.get("dcols", (G, cg * k * k, n * HW), dt))
                    if pointwise:
                        dx[q:q + n] = dcols.reshape(C, n, H, W).transpose(1, 0, 2, 3)
                    else:
                        dxq = dx[q:q + n]
                        dxp = _scratch.get("dpad", (n, C, H + 2 * p, W + 2 * p), dt) if p else dxq
                        _col2im_kernel(dcols.reshape(C, k, k, n, Ho, Wo), k, s.stride, p, d,
                                       dxp, dxq)
            return dw

        work = N * rows * max(HW, H * W)
        # each piece adds a partial dW: more pieces than workers only where that is cheap
        parts = _run_split(run, N, work, _kernels._PARALLEL_CONV_ELEMENTS,
                           pieces=_pieces(N, nb, work // (32 * O * cg * k * k)))
        dw = parts[0]
        for part in parts[1:]:
            dw += part
        if winograd_dx:
            dx = _winograd.conv3x3(dy, _winograd.transform_weight(wtf.reshape(C, O, k, k)), pt)
        if dw_transposed:
            dw = dw.transpose(0, 2, 1)
        return dx, np.ascontiguousarray(dw).reshape(s.weight_shape)


class Linear(WeightLayer):
    """Fully connected layer (torch ``nn.Linear``): x [N, C] -> [N, O], weight [O, C]."""

    kind = "fc"

    def _check_input(self, x):
        if x.ndim != 2 or x.shape[1] != self.spec.in_channels:
            raise ValueError(f"layer {self.spec.name}: expected input [N, {self.spec.in_channels}]"
                             f", got shape {x.shape}")

    def _forward(self, x, w):
        return x @ w.T

    def _backward(self, dy, saved, wb):
        if isinstance(saved, Thresholded):
            saved = saved.dense()
        return dy @ wb, dy.T @ saved


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
