"""Lowering the three training passes of a layer onto the array's streams (units: elements, MACs).

Every pass becomes one or more *parts*, each a forward convolution in stream form: per
convolution group g, a *kernel operand* [Fk, S, L] and an *input operand* [Fi, S, L]
over a common reduction of S steps x L lanes, with output[g, fk, fi] = sum of their
elementwise products. One operand is *scheduled* (its rows are the filter lanes'
streams, reordered by the front-end); the other is *broadcast* (its rows are the
windows). The scheduled operand is a per-pass choice (see `choose_operand`).

Stream layout: taps (kernel positions) outer, reduction channels in blocks of `lanes`
inner, zero-padded to a multiple of `lanes` at each tap (DESIGN.md). `tap_order`
row-major (the default) runs the taps (u, v) with v fastest; column-major with u
fastest, as DNNsim does (it loops over the last array axis outermost).

First layer (`first_layer`): `pad` streams it like any other layer (a 3-channel input
fills 3 of 16 lanes at each of k*k taps); `space-to-depth` rewrites the forward pass of
a strided first layer as a stride-1 convolution over s*s*C channels and ceil(k/s)^2
taps (`space_to_depth`; DNNsim's rewrite of 3-channel strided layers): ResNet-50's
7x7/2 conv1 becomes 4x4/1 over 12 channels, 16 steps instead of 49. It changes the
forward pass only: the input gradient reduces over the layer's output channels and the
weight gradient over N*Ho*Wo positions, which already fill the lanes.

- forward, Y = conv(X, W): kernel W [C_out/g rows], input im2col(X) [N*Ho*Wo rows];
  reduction over taps (u, v) x C_in/g channels.
- input gradient, dX = conv_transpose(dY, W), run as forward convolutions with the
  rotated (taps in descending u, v), channel-swapped kernel W'[c, o, u, v]. Default
  `phase` lowering: the outputs i with (i + p) mod s = phi only meet the taps u with
  u*d = phi (mod s), reading dY at y = (i + p - u*d) / s; one part per phase pair
  (phi_h, phi_w), so the s-1 zeros a zero-inserted dY would hold are never streamed.
  `zero-insert`: one part over all k x k taps and all outputs, streaming the inserted
  zeros as zeros of the broadcast operand. Kernel rows: C_in/g; input rows: dX positions;
  reduction over taps x C_out/g channels.
- weight gradient, dW[o, c, u, v] = sum over n, y, x of dY[n, o, y, x] X[n, c, y*s + u*d - p, ...]:
  kernel dY^T [C_out/g rows], input the saved activations X^T im2col [C_in/g*k*k rows];
  one tap, reduction over N*Ho*Wo positions packed into lanes.

fc layers are 1x1 convolutions on a 1x1 input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .trace import TraceLayer

PASSES = ("forward", "input_grad", "weight_grad")
OPERANDS = ("weights", "activations", "auto")
INPUT_GRAD_LOWERINGS = ("phase", "zero-insert")
FIRST_LAYER_MAPPINGS = ("pad", "space-to-depth")
TAP_ORDERS = ("row-major", "column-major")
# (kernel-operand tensor, input-operand tensor) of each pass's lowered convolution
PASS_TENSORS = {"forward": ("weight", "input"), "input_grad": ("weight", "grad_output"),
                "weight_grad": ("grad_output", "input_saved")}


@dataclass
class LoweredPart:
    """One forward convolution of a pass. `kernel_op()` / `input_op()` materialise the
    operands as [G, F, S, L] of the layer's type (float32; uint8 zero patterns when streamed); `input_ids` [Fi] place the input rows on the
    pass output's input axis (e.g. which dX positions a phase computes)."""

    kernel_op: Callable[[], np.ndarray]
    input_op: Callable[[], np.ndarray]
    input_ids: np.ndarray
    steps: int


@dataclass
class LoweredPass:
    """A training pass of one layer as parts. `out_shape` = (G, kernel rows, input rows)
    of the whole output; `scheduled` is 'kernel' or 'input'; `scheduled_tensor` names the
    trace tensor it comes from; `macs` are the true dense MACs of the pass."""

    layer: str
    pass_name: str
    parts: list[LoweredPart]
    out_shape: tuple[int, int, int]
    scheduled: str
    scheduled_tensor: str
    macs: int

    def operands(self, part: LoweredPart) -> tuple[np.ndarray, np.ndarray]:
        """(scheduled, broadcast) operands of `part`, [G, F, S, L] each."""
        k, i = part.kernel_op(), part.input_op()
        return (k, i) if self.scheduled == "kernel" else (i, k)

    @property
    def broadcast_tensor(self) -> str:
        kt, it = PASS_TENSORS[self.pass_name]
        return it if self.scheduled == "kernel" else kt


def _conv_view(layer: TraceLayer, tensor: str) -> np.ndarray | None:
    """A trace tensor in conv layout (fc: 1x1 spatial dims added)."""
    t = getattr(layer, tensor)
    if tensor == "input_saved" and t is None:
        t = layer.input  # no separate saved copy: the backward pass reads the input
    if t is None:
        return None
    if layer.spec.kind == "fc":
        return t[:, :, None, None]
    return t


def blocks(channels: int, lanes: int) -> int:
    return -(-channels // lanes)


def to_streams(x: np.ndarray, lanes: int) -> np.ndarray:
    """[..., taps, channels] -> [..., taps * blocks, lanes], channels zero-padded per tap.
    Values keep their type: float32 tensors give float32 streams, uint8 zero patterns
    (the streamed simulation's, `streaming.py`) uint8 streams."""
    *lead, taps, ch = x.shape
    nb = blocks(ch, lanes)
    out = np.zeros((*lead, taps, nb * lanes), dtype=x.dtype)
    out[..., :ch] = x
    return out.reshape(*lead, taps * nb, lanes)


def receptive_fields(x: np.ndarray, spec) -> np.ndarray:
    """Padded input's receptive fields [N, C, Ho, Wo, k, k] (a strided view)."""
    return _fields(x, spec.kernel, spec.stride, spec.padding, spec.dilation, spec.out_hw)


def _fields(x: np.ndarray, k: int, s: int, p: int, d: int, out_hw) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ho, wo = out_hw
    need = ((ho - 1) * s + d * (k - 1) + 1, (wo - 1) * s + d * (k - 1) + 1)
    if xp.shape[2] < need[0] or xp.shape[3] < need[1]:  # never read past the array
        xp = np.pad(xp, ((0, 0), (0, 0), (0, max(0, need[0] - xp.shape[2])),
                         (0, max(0, need[1] - xp.shape[3]))))
    n, c = x.shape[:2]
    st = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, shape=(n, c, ho, wo, k, k),
        strides=(st[0], st[1], st[2] * s, st[3] * s, st[2] * d, st[3] * d), writeable=False)


def space_to_depth_applies(spec, first: bool) -> bool:
    """Whether `first_layer: space-to-depth` rewrites this layer's forward pass: the
    network's first layer, a strided, ungrouped, undilated convolution."""
    return first and spec.kind == "conv" and spec.stride > 1 and spec.groups == 1 and spec.dilation == 1


def uses_space_to_depth(lowering, spec, pass_name: str, first: bool) -> bool:
    """Whether a config's `lowering` runs `pass_name` of the layer `spec` (`first`: the
    network's first) through `space_to_depth`: only the forward pass, where it applies."""
    return (pass_name == "forward" and lowering.first_layer == "space-to-depth"
            and space_to_depth_applies(spec, first))


def space_to_depth(w: np.ndarray, x: np.ndarray, spec, column_major: bool = False):
    """Rewrite a stride-s convolution as a stride-1 one over s*s times the channels
    (DNNsim's `reshape_first_layer_act/wgt`): the padded input and the kernel are split
    by phase (a, b) = (row mod s, column mod s) into channel (a*s + b)*C + c at position
    (row div s, column div s); the kernel becomes ceil(k/s) x ceil(k/s), zero where the
    phases run past k. `column_major` numbers the phases (b*s + a)*C + c, as DNNsim does
    (its axis order). Returns (w' [O, s*s*C, k', k'], x' [N, s*s*C, H', W'])."""
    s, k, p = spec.stride, spec.kernel, spec.padding
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    n, c, h, wd = xp.shape
    hs, ws, ks = -(-h // s), -(-wd // s), -(-k // s)
    xp = np.pad(xp, ((0, 0), (0, 0), (0, hs * s - h), (0, ws * s - wd)))
    wp = np.pad(w, ((0, 0), (0, 0), (0, ks * s - k), (0, ks * s - k)))
    phases = (5, 3) if column_major else (3, 5)
    x2 = xp.reshape(n, c, hs, s, ws, s).transpose(0, *phases, 1, 2, 4).reshape(n, s * s * c, hs, ws)
    w2 = wp.reshape(w.shape[0], c, ks, s, ks, s).transpose(0, *phases, 1, 2, 4)
    return w2.reshape(w.shape[0], s * s * c, ks, ks), x2


def _forward_parts(layer: TraceLayer, lanes: int, first_layer: str = "pad",
                   tap_order: str = "row-major", first: bool = False) -> list[LoweredPart]:
    spec = layer.spec
    g, k, s, p, d = spec.groups, spec.kernel, spec.stride, spec.padding, spec.dilation
    w, x = _conv_view(layer, "weight"), _conv_view(layer, "input")
    column_major = tap_order == "column-major"
    if first_layer == "space-to-depth" and space_to_depth_applies(spec, first):
        w, x = space_to_depth(w, x, spec, column_major)
        k, s, p = w.shape[2], 1, 0
    cpg = w.shape[1]
    n = x.shape[0]
    n_windows = n * spec.out_hw[0] * spec.out_hw[1]
    taps = (0, 1, 2, 4, 3) if column_major else (0, 1, 2, 3, 4)  # column-major: v outer, u inner

    def kernel_op():  # [G, O/g, k*k*blocks, L]: W[o, c, u, v] at tap (u, v), channel c
        wg = w.reshape(g, -1, cpg, k, k).transpose(taps).reshape(g, -1, cpg, k * k)
        return to_streams(wg.transpose(0, 1, 3, 2), lanes)

    def input_op():  # [G, N*Ho*Wo, k*k*blocks, L]
        f = _fields(x, k, s, p, d, spec.out_hw)  # N, C, Ho, Wo, k, k
        if column_major:
            f = f.swapaxes(4, 5)
        f = f.reshape(n, g, -1, *spec.out_hw, k, k).transpose(1, 0, 3, 4, 5, 6, 2)
        return to_streams(f.reshape(g, n_windows, k * k, -1), lanes)

    steps = k * k * blocks(cpg, lanes)
    return [LoweredPart(kernel_op, input_op, np.arange(n_windows), steps)]


def _grad_positions(taps: list[int], outs: np.ndarray, p: int, s: int, d: int, size: int) -> np.ndarray:
    """dY index read by output i through tap u: (i + p - u*d) / s, or `size` (a zero
    slot) where that is not an integer in [0, size)."""
    num = outs[:, None] + p - np.asarray(taps, dtype=np.int64)[None, :] * d
    y = np.floor_divide(num, s)
    ok = (num % s == 0) & (y >= 0) & (y < size)
    return np.where(ok, y, size)


def _input_grad_part(layer: TraceLayer, lanes: int, taps_h: list[int], taps_w: list[int],
                     rows: np.ndarray, cols: np.ndarray, column_major: bool = False) -> LoweredPart:
    spec = layer.spec
    g, k, p, s, d = spec.groups, spec.kernel, spec.padding, spec.stride, spec.dilation
    w, dy = _conv_view(layer, "weight"), _conv_view(layer, "grad_output")
    n, (h, wd), (ho, wo) = dy.shape[0], spec.in_hw, spec.out_hw
    fo, fc = spec.out_channels // g, spec.channels_per_group

    def kernel_op():  # [G, C_in/g, taps*blocks, L]: W'[c, o, u, v] = W[o, c, u, v]
        wg = w.reshape(g, fo, fc, k, k)[:, :, :, taps_h][:, :, :, :, taps_w]
        wg = wg.transpose((0, 2, 4, 3, 1) if column_major else (0, 2, 3, 4, 1))
        wg = wg.reshape(g, fc, len(taps_h) * len(taps_w), fo)
        return to_streams(wg, lanes)

    def input_op():  # [G, windows, taps*blocks, L]: dY at the positions the taps read
        yi = _grad_positions(taps_h, rows, p, s, d, ho)  # [rows, Th]
        xj = _grad_positions(taps_w, cols, p, s, d, wo)  # [cols, Tw]
        dyz = np.zeros((n, spec.out_channels, ho + 1, wo + 1), dtype=dy.dtype)
        dyz[:, :, :ho, :wo] = dy
        gathered = dyz[:, :, yi][..., xj]  # N, O, rows, Th, cols, Tw
        gathered = gathered.reshape(n, g, fo, len(rows), len(taps_h), len(cols), len(taps_w))
        gathered = gathered.transpose((1, 0, 3, 5, 6, 4, 2) if column_major  # .., Tw, Th, O/g
                                      else (1, 0, 3, 5, 4, 6, 2))  # G, N, rows, cols, Th, Tw, O/g
        return to_streams(gathered.reshape(g, -1, len(taps_h) * len(taps_w), fo), lanes)

    ids = (np.arange(n)[:, None, None] * (h * wd) + rows[None, :, None] * wd
           + cols[None, None, :]).ravel()
    steps = len(taps_h) * len(taps_w) * blocks(fo, lanes)
    return LoweredPart(kernel_op, input_op, ids, steps)


def _input_grad_parts(layer: TraceLayer, lanes: int, lowering: str,
                      column_major: bool = False) -> list[LoweredPart]:
    spec = layer.spec
    k, p, s, d = spec.kernel, spec.padding, spec.stride, spec.dilation
    h, w = spec.in_hw
    rotated = list(range(k - 1, -1, -1))
    if lowering not in INPUT_GRAD_LOWERINGS:
        raise ValueError(f"input_grad lowering: expected one of {', '.join(INPUT_GRAD_LOWERINGS)}, "
                         f"got {lowering!r}")
    if lowering == "zero-insert":
        return [_input_grad_part(layer, lanes, rotated, rotated, np.arange(h), np.arange(w), column_major)]
    parts = []
    for phi_h in range(s):
        rows = np.array([i for i in range(h) if (i + p) % s == phi_h], dtype=np.int64)
        taps_h = [u for u in rotated if (u * d) % s == phi_h]
        for phi_w in range(s):
            cols = np.array([j for j in range(w) if (j + p) % s == phi_w], dtype=np.int64)
            taps_w = [v for v in rotated if (v * d) % s == phi_w]
            if len(rows) and len(cols) and taps_h and taps_w:
                parts.append(_input_grad_part(layer, lanes, taps_h, taps_w, rows, cols, column_major))
    return parts  # outputs of phases with no taps receive no gradient: they stay 0


def _weight_grad_parts(layer: TraceLayer, lanes: int) -> list[LoweredPart]:
    spec = layer.spec
    g, k = spec.groups, spec.kernel
    dy, x = _conv_view(layer, "grad_output"), _conv_view(layer, "input_saved")
    n, (ho, wo) = dy.shape[0], spec.out_hw
    reduction = n * ho * wo

    def kernel_op():  # [G, O/g, blocks, L]: dY^T, one tap over N*Ho*Wo positions
        t = dy.reshape(n, g, -1, ho * wo).transpose(1, 2, 0, 3)
        return to_streams(t.reshape(g, -1, 1, reduction), lanes)

    def input_op():  # [G, C/g*k*k, blocks, L]: X^T im2col, row (c, u, v)
        f = receptive_fields(x, spec).transpose(1, 4, 5, 0, 2, 3)  # C, k, k, N, Ho, Wo
        return to_streams(f.reshape(g, -1, 1, reduction), lanes)

    rows = spec.channels_per_group * k * k
    return [LoweredPart(kernel_op, input_op, np.arange(rows), blocks(reduction, lanes))]


def tensor_sparsity(layer: TraceLayer, tensor: str) -> float:
    t = _conv_view(layer, tensor)
    return float(1.0 - np.count_nonzero(t) / t.size) if t is not None and t.size else 0.0


def choose_operand(layer: TraceLayer, pass_name: str, choice: str,
                   sparsity: Callable[[str], float] | None = None) -> str:
    """'kernel' or 'input': which operand of the lowered convolution is scheduled.
    `weights` = the kernel operand (W; for the weight gradient, dY), `activations` = the
    input operand (X; dY; the saved X), `auto` = the sparser of the two tensors (ties:
    the kernel operand). `sparsity`: tensor name -> its sparsity (default: counted in
    `layer`; the streamed simulation counts them chunk by chunk)."""
    if choice not in OPERANDS:
        raise ValueError(f"scheduled operand: expected one of {', '.join(OPERANDS)}, got {choice!r}")
    if choice == "weights":
        return "kernel"
    if choice == "activations":
        return "input"
    sparsity = sparsity or (lambda t: tensor_sparsity(layer, t))
    kt, it = PASS_TENSORS[pass_name]
    return "input" if sparsity(it) > sparsity(kt) else "kernel"


def lower(layer: TraceLayer, pass_name: str, lanes: int, operand: str = "weights",
          input_grad_lowering: str = "phase", first_layer: str = "pad",
          tap_order: str = "row-major", first: bool = False) -> LoweredPass:
    """Lower `pass_name` of `layer` for an array with `lanes` weight lanes. `first`: the
    layer is the network's first (where `first_layer` applies)."""
    for name, value, allowed in (("first_layer", first_layer, FIRST_LAYER_MAPPINGS),
                                 ("tap_order", tap_order, TAP_ORDERS)):
        if value not in allowed:
            raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")
    spec = layer.spec
    if pass_name != "forward" and layer.grad_output is None:
        raise ValueError(f"layer {spec.name}: the {pass_name} pass needs grad_output, "
                         "which this trace does not hold")
    if pass_name == "forward":
        parts = _forward_parts(layer, lanes, first_layer, tap_order, first)
    elif pass_name == "input_grad":
        parts = _input_grad_parts(layer, lanes, input_grad_lowering, tap_order == "column-major")
    elif pass_name == "weight_grad":
        parts = _weight_grad_parts(layer, lanes)
    else:
        raise ValueError(f"unknown pass {pass_name!r}; expected one of {', '.join(PASSES)}")
    side = choose_operand(layer, pass_name, operand)
    return lowered_pass(spec, layer.batch, pass_name, side, parts)


def lowered_pass(spec, batch: int, pass_name: str, side: str, parts: list[LoweredPart]) -> LoweredPass:
    """The `LoweredPass` of `pass_name` on `batch` samples of the layer `spec` with the
    operand `side` ('kernel' or 'input') scheduled: its output shape, scheduled tensor
    and MACs (and `parts`, which may be empty where only those are needed)."""
    g, n = spec.groups, batch
    out_shape = {"forward": (g, spec.out_channels // g, n * spec.out_hw[0] * spec.out_hw[1]),
                 "input_grad": (g, spec.channels_per_group, n * spec.in_hw[0] * spec.in_hw[1]),
                 "weight_grad": (g, spec.out_channels // g,
                                 spec.channels_per_group * spec.kernel ** 2)}[pass_name]
    tensor = PASS_TENSORS[pass_name][0 if side == "kernel" else 1]
    return LoweredPass(spec.name, pass_name, parts, out_shape, side, tensor, spec.macs(n))


def reference(layer: TraceLayer, pass_name: str) -> np.ndarray:
    """The pass's output straight from the definition of the convolution and its
    gradients (float64, not through the lowering), arranged as `out_shape`."""
    spec = layer.spec
    g, k, p, s, d = spec.groups, spec.kernel, spec.padding, spec.stride, spec.dilation
    w = _conv_view(layer, "weight").astype(np.float64)
    ho, wo = spec.out_hw
    fo, fc = spec.out_channels // g, spec.channels_per_group

    def taps():
        for gi in range(g):
            for u in range(k):
                for v in range(k):
                    yield (gi, u, v, slice(gi * fc, (gi + 1) * fc), slice(gi * fo, (gi + 1) * fo),
                           (slice(None), slice(None), slice(u * d, u * d + s * (ho - 1) + 1, s),
                            slice(v * d, v * d + s * (wo - 1) + 1, s)))

    if pass_name == "forward":
        xp = np.pad(_conv_view(layer, "input").astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
        y = np.zeros((xp.shape[0], spec.out_channels, ho, wo))
        for gi, u, v, ci, fi, win in taps():
            y[:, fi] += np.einsum("ncyx,fc->nfyx", xp[win][:, ci], w[fi, :, u, v], optimize=True)
        return y.transpose(1, 0, 2, 3).reshape(g, fo, -1)
    dy = _conv_view(layer, "grad_output").astype(np.float64)
    if pass_name == "input_grad":  # adjoint of the forward: scatter dY through each tap
        h, wd = spec.in_hw
        dxp = np.zeros((dy.shape[0], spec.in_channels, h + 2 * p, wd + 2 * p))
        for gi, u, v, ci, fi, win in taps():
            view = dxp[win]
            view[:, ci] += np.einsum("noyx,oc->ncyx", dy[:, fi], w[fi, :, u, v], optimize=True)
        dx = dxp[:, :, p:p + h, p:p + wd]
        return dx.transpose(1, 0, 2, 3).reshape(g, fc, -1)
    if pass_name == "weight_grad":
        xp = np.pad(_conv_view(layer, "input_saved").astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
        dw = np.zeros((spec.out_channels, fc, k, k))
        for gi, u, v, ci, fi, win in taps():
            dw[fi, :, u, v] = np.einsum("noyx,ncyx->oc", dy[:, fi], xp[win][:, ci], optimize=True)
        return dw.reshape(g, fo, -1)
    raise ValueError(f"unknown pass {pass_name!r}")
