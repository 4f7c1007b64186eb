"""Analytic training-FLOP model of SWAT appendix A.3 (units: MACs; FLOPs = 2 MACs).

Each conv/fc layer (`LayerSpec`) runs three passes per training iteration. Their dense
MACs for a batch of N samples, with F filters of C/groups channels and R x S taps, output
H x W and input X x Y:

===============  =====================================  ======================================
pass             dense MACs (``counting="a3"``)         MACs of the sparse run scale with
===============  =====================================  ======================================
forward          N F (C R S) H W            (eq. 4)     the forward weights' density
input_grad       N C (F R S) X Y            (eq. 5)     the backward weights' density
weight_grad      N F (C R S) H W                        the saved activations' density (eq. 6)
===============  =====================================  ======================================

Eq. 5 counts the input gradient over its N C X Y outputs, each a full F R S reduction,
i.e. as the transposed convolution of a zero-inserted output gradient: for a layer of
stride s that is s^2 times the forward MACs (for stride 1, the same). The weight gradient
is counted over the N H W positions the output gradient has. This is the reading that
reproduces SWAT's Table 3: ResNet-50 SWAT-U 76.12% / 85.63% (paper 76.1 / 85.6) and
WRN-50-2 78.57% / 88.39% (paper 78.6 / 88.4) at 80% / 90%. Eq. 6 as printed says
N X Y for the weight gradient as well; taking that literally too gives 74.97% / 84.35%
on ResNet-50, so the table was not computed that way. ``counting="true"`` instead counts
every pass as the forward MACs, the true products without the inserted zeros, as the
simulator's lowering does (`simulator.lowering`: the dense baseline of every pass equals
the forward MACs); ResNet-50 SWAT-U then gives 77.69% / 87.40%.

A.3's conventions: a pass's MACs scale with the density of one operand (the one named
above); the activations' natural (ReLU) sparsity is ignored in the forward pass, where
every method has it; batch norm, pooling, additions and the Top-K itself are not
counted; the first layer (the one that reads the image) stays dense in every pass, its
input gradient included unless ``first_layer_input_grad=False``.

Methods (`METHODS`, density = 1 - sparsity of the operand a pass scales with):

=================  ============  ==============  ==================================================
method             forward       input_grad      weight_grad
=================  ============  ==============  ==================================================
dense              1             1               1
swat-u             1 - S (W)     1 - S (W)       1 - A (saved X; A defaults to S)
saw                1 (dense W)   1 - S (W)       1 - A (saved X; A defaults to S)
meprop             1             1 - S (dY)      1 - S (dY)
sparse-learning    1 - S (W)     1 - S (W)       1 - A (X; A defaults to 0.5, A.3's default
                                                 activation sparsity of non-SWAT methods)
=================  ============  ==============  ==================================================

meprop (Sun et al. 2017) keeps weights and activations dense and Top-K's the output
gradient dY of each layer, which is an operand of both backward passes (dX = dY * W^T,
dW = X^T * dY), so both scale with dY's density and the forward pass not at all.
sparse-learning stands for the static and dynamic sparse-training methods of SWAT's
Table 3 (SET, DSR, SNFS, RigL, DST): sparse weights in both weight passes, activations
only as sparse as ReLU leaves them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pandas as pd

from .lowering import PASSES
from .trace import LayerSpec

METHODS = ("dense", "swat-u", "saw", "meprop", "sparse-learning")
COUNTINGS = ("a3", "true")
DEFAULT_ACTIVATION_SPARSITY = 0.5  # A.3: "we assumed default activation sparsity of 50%"

# the operand whose density each pass's MACs scale with, per method ("-": stays dense)
SCALED_OPERAND = {
    "dense": {"forward": "-", "input_grad": "-", "weight_grad": "-"},
    "swat-u": {"forward": "weights", "input_grad": "weights", "weight_grad": "saved activations"},
    "saw": {"forward": "-", "input_grad": "weights", "weight_grad": "saved activations"},
    "meprop": {"forward": "-", "input_grad": "output gradient", "weight_grad": "output gradient"},
    "sparse-learning": {"forward": "weights", "input_grad": "weights",
                        "weight_grad": "activations (default)"},
}

ROWS = ("forward", "input_grad", "weight_grad", "backward", "training")


def _fraction(what: str, value, high_open: bool = True) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = None
    if v is None or not (0.0 <= v < 1.0 if high_open else 0.0 <= v <= 1.0):
        raise ValueError(f"{what}: expected a number in [0, {'1)' if high_open else '1]'}, "
                         f"got {value!r}")
    return v


def pass_densities(method: str, sparsity: float,
                   activation_sparsity: float | None = None) -> dict[str, float]:
    """{pass: density} of the operand each pass's MACs scale with, for a sparsified layer.

    `sparsity` is S (weights, or dY for meprop) in [0, 1); `activation_sparsity` A is the
    sparsity of the activations the weight gradient reads (default: S for swat-u and saw,
    0.5 for sparse-learning; not accepted by dense and meprop, which do not use it)."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    s = _fraction("sparsity", sparsity)
    if activation_sparsity is not None and method in ("dense", "meprop"):
        raise ValueError(f"activation_sparsity: not used by method {method} "
                         "(its weight gradient scales with " +
                         ("nothing" if method == "dense" else "the output gradient") + ")")
    if activation_sparsity is None:
        a = DEFAULT_ACTIVATION_SPARSITY if method == "sparse-learning" else s
    else:
        a = _fraction("activation_sparsity", activation_sparsity, high_open=False)
    return {
        "dense": {"forward": 1.0, "input_grad": 1.0, "weight_grad": 1.0},
        "swat-u": {"forward": 1 - s, "input_grad": 1 - s, "weight_grad": 1 - a},
        "saw": {"forward": 1.0, "input_grad": 1 - s, "weight_grad": 1 - a},
        "meprop": {"forward": 1.0, "input_grad": 1 - s, "weight_grad": 1 - s},
        "sparse-learning": {"forward": 1 - s, "input_grad": 1 - s, "weight_grad": 1 - a},
    }[method]


def dense_pass_macs(layer: LayerSpec, pass_name: str, batch: int = 1, counting: str = "a3") -> int:
    """Dense MACs of one pass of `layer` for `batch` samples (see the module docstring)."""
    if counting not in COUNTINGS:
        raise ValueError(f"counting: expected one of {', '.join(COUNTINGS)}, got {counting!r}")
    if pass_name not in PASSES:
        raise ValueError(f"pass: expected one of {', '.join(PASSES)}, got {pass_name!r}")
    if pass_name == "input_grad" and counting == "a3":
        # eq. 5: N * C * X * Y outputs, F/groups * R * S each
        return batch * layer.in_hw[0] * layer.in_hw[1] * layer.weight_count
    return layer.macs(batch)


def default_dense_layers(layers: Sequence[LayerSpec]) -> tuple[str, ...]:
    """The layer A.3 keeps dense: the first conv (the first layer, if there is no conv)."""
    if not layers:
        return ()
    return (next((lay.name for lay in layers if lay.kind == "conv"), layers[0].name),)


def layer_flops(layers: Sequence[LayerSpec], sparsity: float, method: str = "swat-u", *,
                activation_sparsity: float | None = None, batch: int = 1, counting: str = "a3",
                dense_layers: Collection[str] | None = None,
                first_layer_input_grad: bool = True) -> pd.DataFrame:
    """One row per (layer, pass): layer, kind, pass, sparse (bool: is the layer
    sparsified), density, dense_macs, sparse_macs (= density * dense_macs, a float).

    `dense_layers` (names) stay dense in every pass; default `default_dense_layers`.
    `first_layer_input_grad=False` drops the first layer's input gradient (the image
    needs none) from both the dense and the sparse count; A.3 counts it."""
    layers = list(layers)
    if not layers:
        raise ValueError("layers: expected at least one conv or fc layer, got none")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: expected an integer >= 1, got {batch!r}")
    dens = pass_densities(method, sparsity, activation_sparsity)
    dense_names = set(default_dense_layers(layers) if dense_layers is None else dense_layers)
    unknown = sorted(dense_names - {lay.name for lay in layers})
    if unknown:
        raise ValueError(f"dense_layers: {unknown[0]!r} is not a layer of this network")
    rows = []
    for i, lay in enumerate(layers):
        sparse = lay.name not in dense_names
        for p in PASSES:
            if i == 0 and p == "input_grad" and not first_layer_input_grad:
                continue
            d = dens[p] if sparse else 1.0
            macs = dense_pass_macs(lay, p, batch, counting)
            rows.append({"layer": lay.name, "kind": lay.kind, "pass": p, "sparse": sparse,
                         "density": d, "dense_macs": macs, "sparse_macs": d * macs})
    return pd.DataFrame(rows)


def summarize_flops(per_layer: pd.DataFrame) -> pd.DataFrame:
    """Rows forward, input_grad, weight_grad, backward (= input_grad + weight_grad) and
    training (all three): dense_macs, sparse_macs, dense_flops, sparse_flops (2 per MAC)
    and reduction = 1 - sparse / dense (a fraction). Sums, never averages of ratios."""
    sums = per_layer.groupby("pass", sort=False)[["dense_macs", "sparse_macs"]].sum()
    sums = sums.reindex(PASSES, fill_value=0)
    sums.loc["backward"] = sums.loc["input_grad"] + sums.loc["weight_grad"]
    sums.loc["training"] = sums.loc[list(PASSES)].sum()
    out = sums.loc[list(ROWS)].astype(float)
    out["dense_flops"] = 2 * out["dense_macs"]
    out["sparse_flops"] = 2 * out["sparse_macs"]
    out["reduction"] = 1.0 - out["sparse_macs"] / out["dense_macs"].where(out["dense_macs"] > 0)
    out.index.name = "pass"
    return out


def training_flop_reduction(layers: Sequence[LayerSpec], sparsity: float,
                            method: str = "swat-u", **kwargs) -> float:
    """Fraction of a training iteration's MACs (all three passes) a method removes."""
    return float(summarize_flops(layer_flops(layers, sparsity, method, **kwargs))
                 .loc["training", "reduction"])


def format_flops(summary: pd.DataFrame, method: str, title: str) -> str:
    """A small text table of `summarize_flops` output: GMACs and GFLOPs dense vs sparse
    and the reduction per pass, for the backward pass and for a training iteration."""
    ops = SCALED_OPERAND[method]
    head = (f"{'pass':<12}{'scales with':<24}{'dense GMACs':>13}{'sparse GMACs':>14}"
            f"{'dense GFLOPs':>14}{'sparse GFLOPs':>15}{'reduction':>11}")
    lines = [title, "", head, "-" * len(head)]
    for name, r in summary.iterrows():
        if name == "backward":
            lines.append("-" * len(head))
        what = ops.get(name, "")
        red = "-" if pd.isna(r["reduction"]) else f"{r['reduction']:.2%}"
        lines.append(f"{name:<12}{what:<24}{r['dense_macs'] / 1e9:>13.3f}{r['sparse_macs'] / 1e9:>14.3f}"
                     f"{r['dense_flops'] / 1e9:>14.3f}{r['sparse_flops'] / 1e9:>15.3f}{red:>11}")
    return "\n".join(lines)
