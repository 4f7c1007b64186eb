"""The conv and fc layers of the NumPy trainer, with SWAT's hooks (`workloads.layers` re-exports them).

`WeightLayer` holds the hooks sparse training needs (forward and backward weights, the
saved input, the output-gradient hook, recording of one iteration); `Conv2d` (im2col +
BLAS, Winograd F(2x2, 3x3) where it pays) and `Linear` implement them. Layouts and units
as in `workloads.layers`: NCHW activations, OIHW weights, elements.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from simulator.trace import LayerSpec

from . import kernels as _kernels
from . import winograd as _winograd
from .kernels import (_col2im_kernel, _flip_transpose_kernel, _im2col_kernel, _mask_cols_kernel,
                      _masked_pad_kernel, _out_size, _run_split, _scratch)
from .modules import Module, Param, _check_dtype, _need_cache, _pieces
from .topk import Thresholded

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
