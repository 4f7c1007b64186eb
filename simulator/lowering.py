"""Lowering a layer's training pass onto the array's streams (units: elements, MACs).

Every pass becomes the same thing: per convolution group g, a set of *filters*
(outputs computed by one filter lane each) that reduce over a stream of S steps x
L lanes. The *scheduled operand* gives each filter its stream [S, L] (the values the
front-end reorders); the *broadcast operand* gives each output position ("window")
the matching stream [S, L], shared by all filter lanes. A filter's output at a window
is the dot product of the two streams.

Forward convolution layout (DESIGN.md): the reduction over C_in/groups x k x k is
cut with kernel position (u, v) outer and input-channel blocks of `lanes` inner;
channels are zero-padded to a multiple of `lanes` at each kernel position, so
S = k * k * ceil((C_in / groups) / lanes). Step t, lane l names kernel position
(t // blocks) and channel (t % blocks) * lanes + l. fc layers are 1x1 convolutions
on a 1x1 input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .trace import LayerSpec, TraceLayer


@dataclass
class LoweredPass:
    """One training pass of one layer, lowered to streams.

    `scheduled`: float32 [G, F, S, L], the scheduled operand per group and filter;
    `n_windows`: output positions per filter (N * Ho * Wo for a forward conv);
    `macs`: true dense MACs of the pass (padding lanes excluded);
    `effectual_macs`: MACs with both operands non-zero.
    `broadcast(g)` materialises group g's broadcast operand [n_windows, S, L]
    (im2col in stream layout); only the functional check needs it.
    """

    layer: str
    pass_name: str
    scheduled_operand: str
    scheduled: np.ndarray
    n_windows: int
    macs: int
    effectual_macs: int
    _broadcast: object = None

    def broadcast(self, group: int) -> np.ndarray:
        return self._broadcast(group)

    @property
    def groups(self) -> int:
        return self.scheduled.shape[0]


def _as_conv(layer: TraceLayer) -> tuple[np.ndarray, np.ndarray]:
    """Weight as OIHW and input as NCHW (fc: 1x1 kernel on a 1x1 input)."""
    w, x = layer.weight, layer.input
    if layer.spec.kind == "fc":
        return w[:, :, None, None], x[:, :, None, None]
    return w, x


def stream_layout(spec: LayerSpec, lanes: int) -> tuple[int, int]:
    """(channel blocks per kernel position, steps S) of the forward stream."""
    blocks = -(-spec.channels_per_group // lanes)
    return blocks, spec.kernel * spec.kernel * blocks


def weights_to_streams(w: np.ndarray, groups: int, lanes: int) -> np.ndarray:
    """OIHW weights -> [G, O/G, S, L] streams (kernel position outer, channel blocks inner)."""
    o, cg, kh, kw = w.shape
    blocks = -(-cg // lanes)
    s = w.reshape(groups, o // groups, cg, kh * kw).transpose(0, 1, 3, 2)  # G, F, kk, Cg
    padded = np.zeros((groups, o // groups, kh * kw, blocks * lanes), dtype=np.float32)
    padded[..., :cg] = s
    return padded.reshape(groups, o // groups, kh * kw * blocks, lanes)


def _windows(x: np.ndarray, spec: LayerSpec) -> np.ndarray:
    """Padded input's receptive fields: [N, C, Ho, Wo, k, k] view (no copy)."""
    p, s, d, k = spec.padding, spec.stride, spec.dilation, spec.kernel
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ho, wo = spec.out_hw
    n, c = x.shape[:2]
    st = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, shape=(n, c, ho, wo, k, k),
        strides=(st[0], st[1], st[2] * s, st[3] * s, st[2] * d, st[3] * d), writeable=False)


def forward_effectual_macs(layer: TraceLayer) -> int:
    """MACs of the forward pass whose weight and input are both non-zero."""
    spec = layer.spec
    w, x = _as_conv(layer)
    g, cg = spec.groups, spec.channels_per_group
    wins = _windows((x != 0).astype(np.float32), spec)
    # per (input channel, kernel position): output positions that read a non-zero input
    reads = wins.sum(axis=(0, 2, 3), dtype=np.float64)  # [C, k, k]
    nz_w = (w != 0).reshape(g, -1, cg, spec.kernel, spec.kernel).astype(np.float64)
    per_group = reads.reshape(g, cg, spec.kernel, spec.kernel)
    return int(round(float(np.einsum("gfcuv,gcuv->", nz_w, per_group))))


def lower_forward(layer: TraceLayer, lanes: int) -> LoweredPass:
    """Forward pass Y = conv(X, W): scheduled operand W, broadcast operand X."""
    spec = layer.spec
    w, x = _as_conv(layer)
    g, cg = spec.groups, spec.channels_per_group
    scheduled = weights_to_streams(w, g, lanes)
    n = x.shape[0]
    n_windows = n * spec.out_hw[0] * spec.out_hw[1]

    def broadcast(group: int) -> np.ndarray:
        xg = x[:, group * cg:(group + 1) * cg]
        wins = _windows(xg, spec)  # N, Cg, Ho, Wo, k, k
        cols = wins.transpose(0, 2, 3, 4, 5, 1).reshape(n_windows, spec.kernel ** 2, cg)
        blocks = scheduled.shape[2] // (spec.kernel ** 2)
        out = np.zeros((n_windows, spec.kernel ** 2, blocks * lanes), dtype=np.float32)
        out[..., :cg] = cols
        return out.reshape(n_windows, -1, lanes)

    return LoweredPass(layer=spec.name, pass_name="forward", scheduled_operand="weights",
                       scheduled=scheduled, n_windows=n_windows, macs=spec.macs(n),
                       effectual_macs=forward_effectual_macs(layer), _broadcast=broadcast)


def reference_forward(layer: TraceLayer) -> np.ndarray:
    """Y = conv(X, W) straight from the definition, float64, [N, O, Ho, Wo].

    Independent of the lowering: one strided slice of the padded input per kernel
    position, contracted with that kernel position's weights, group by group.
    """
    spec = layer.spec
    w, x = _as_conv(layer)
    g, cg, k = spec.groups, spec.channels_per_group, spec.kernel
    p, s, d = spec.padding, spec.stride, spec.dilation
    ho, wo = spec.out_hw
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    w = w.astype(np.float64)
    fg = spec.out_channels // g
    y = np.zeros((x.shape[0], spec.out_channels, ho, wo))
    for gi in range(g):
        ci, fi = slice(gi * cg, (gi + 1) * cg), slice(gi * fg, (gi + 1) * fg)
        for u in range(k):
            for v in range(k):
                patch = xp[:, ci, u * d: u * d + s * (ho - 1) + 1: s, v * d: v * d + s * (wo - 1) + 1: s]
                y[:, fi] += np.einsum("ncyx,fc->nfyx", patch, w[fi, :, u, v])
    return y
