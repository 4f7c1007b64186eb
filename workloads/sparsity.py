"""Sparsity methods for training: SWAT and its relatives, one interface (units: fractions).

A method plugs into the hooks of the trainer's weight layers (`workloads.layers`:
`forward_weight`, `backward_weight`, `save_input`, `grad_output_hook`) before each
forward pass, and may edit gradients after the backward pass:

    method.attach(weight_layers, optimizer)       # once
    method.before_forward(iteration)              # every iteration
    ... forward, loss, backward ...
    method.after_backward(iteration)              # every iteration, before optimizer.step()
    method.measured                               # {layer: (weight sparsity, activation sparsity)}

| method            | forward W | forward X | dX uses  | dW uses (saved X) | gradient update            |
|-------------------|-----------|-----------|----------|-------------------|----------------------------|
| dense             | dense     | dense     | dense W  | dense X           | all weights                |
| swat-u            | Top-K     | dense     | Top-K W  | Top-K X           | all weights (dense dW)     |
| swat-erk, swat-m  | as swat-u, per-layer sparsity from ERK / mean momentum, activations = weights |
| swat-structured   | channel Top-K (L1 of each k x k kernel slice) | dense | that W | Top-K X | all |
| saw               | dense     | dense     | Top-K W  | Top-K X           | all weights                |
| meprop            | dense     | dense     | dense W, Top-K dY | dense X, Top-K dY | all weights      |
| topkast           | A = top-D | dense     | A        | dense X           | only B = top-(D+M), plus exploration penalty |

Top-K (SWAT A.6) is over the whole tensor (`NCHW`, default), per sample / per filter
(`CHW`) or per channel map / per kernel slice (`HW`; for [N, C] tensors `HW` acts as
`CHW`). Thresholds are the K-th largest magnitude (exactly `np.partition`'s, found by
`workloads.topk.TopKSelector`), recomputed every `topk_period` iterations and reused in
between (SWAT A.7), so between recomputations
the measured sparsity drifts a little; `measured` reports what was actually used. BN
layers are never sparsified; the dense layers (default: the first conv) are left alone.
The saved activations are handed to the layers as `Thresholded` tensors (x and its
threshold), which the conv masks as its backward pass unfolds them; an input that feeds
two layers (a block's first conv and its downsample) is thresholded once.

ERK (Evci et al., RigL): density of layer l proportional to (C_in + C_out + k + k) /
(C_in * C_out * k * k) (fc: (C_in + C_out) / (C_in * C_out)), scaled so the sparsified
layers keep (1 - S) of their weights, densities capped at 1 with the excess spread over
the others. SWAT-M (after Dettmers & Zettlemoyer): at each recomputation, densities
proportional to the mean momentum magnitude of each layer's active weights, under the
same budget and cap (uniform until momentum exists). Top-KAST's exploration penalty
follows its Appendix D pseudocode, an L2 term: penalty * (w on A, w / D on B \\ A)
is added to the gradient (the paper's Loss_R writes |theta| but expresses it as L2).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import numpy as np

from .topk import (SCOPES, Thresholded, TopKSelector, apply_threshold, apply_threshold_count,
                   count_kept, topk_threshold, zero_fraction)

METHODS = ("dense", "swat-u", "swat-erk", "swat-m", "swat-structured", "saw", "meprop", "topkast")


def _budgeted_densities(weights: np.ndarray, sizes: np.ndarray, density: float) -> np.ndarray:
    """Densities proportional to `weights`, keeping density * sum(sizes) elements in all,
    each capped at 1 (the excess is spread over the uncapped layers)."""
    budget = density * sizes.sum()
    dens = np.zeros(len(sizes))
    free = np.ones(len(sizes), dtype=bool)
    weights = np.maximum(weights, 1e-30)
    while free.any():
        scale = (budget - sizes[~free].sum()) / (weights[free] * sizes[free]).sum()
        dens[free] = weights[free] * scale
        over = free & (dens > 1.0)
        if not over.any():
            break
        dens[over] = 1.0
        free &= ~over
    return np.clip(dens, 0.0, 1.0)


class SparsityMethod:
    """Base: SWAT-U. Subclasses change which hooks are set and how sparsities are chosen."""

    name = "swat-u"
    sparsify_forward_weight = True
    sparsify_backward_weight = True
    sparsify_saved_input = True

    def __init__(self, sparsity: float, *, scope: str = "NCHW", topk_period: int = 1,
                 dense_layers: Sequence[str] | None = None):
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        if scope not in SCOPES:
            raise ValueError(f"Top-K scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if topk_period < 1:
            raise ValueError(f"topk_period must be >= 1, got {topk_period}")
        self.sparsity, self.scope, self.topk_period = sparsity, scope, topk_period
        self.dense_names = None if dense_layers is None else set(dense_layers)
        self.layers: list = []
        self.layer_sparsity: dict[str, float] = {}
        self.weight_threshold: dict[str, np.ndarray] = {}
        self.input_threshold: dict[str, np.ndarray] = {}
        self.measured: dict[str, tuple[float, float]] = {}
        self.optimizer = None
        self.selector = TopKSelector()   # exact thresholds, fast when tensors change little
        self._inputs: list = []          # this iteration's (weakref(x), sparsity, threshold, kept)

    # -- set-up ---------------------------------------------------------------------------
    def attach(self, layers: Sequence, optimizer=None) -> None:
        """Take the model's weight layers (in network order) and the optimizer."""
        self.layers = list(layers)
        self.optimizer = optimizer
        names = [lay.spec.name for lay in self.layers]
        if self.dense_names is None:
            first_conv = next((lay.spec.name for lay in self.layers if lay.spec.kind == "conv"), None)
            self.dense_names = {first_conv} if first_conv else set()
        unknown = sorted(self.dense_names - set(names))
        if unknown:
            raise ValueError(f"dense layer {unknown[0]!r} is not a layer of this model")
        self.layer_sparsity = {n: (0.0 if n in self.dense_names else self.sparsity) for n in names}

    def sparse_layers(self):
        return [lay for lay in self.layers if lay.spec.name not in self.dense_names]

    # -- state (checkpoints, and the trainer's side pass at the trace size) ------------------------
    STATE = ("layer_sparsity", "weight_threshold", "input_threshold", "backward_threshold")

    def state(self) -> dict[str, dict]:
        """Copies of the per-layer dictionaries that carry over from one iteration to the
        next (target sparsities and thresholds); `set_state` puts them back."""
        return {a: dict(getattr(self, a)) for a in self.STATE if hasattr(self, a)}

    def set_state(self, state: dict[str, dict]) -> None:
        for attr, values in state.items():
            setattr(self, attr, dict(values))

    def state_dict(self) -> dict[str, np.ndarray]:
        """`state()` as flat arrays keyed "<attr>/<layer>" (np.savez-able, no pickles)."""
        return {f"{a}/{name}": np.asarray(v) for a, d in self.state().items() for name, v in d.items()}

    def load_state_dict(self, arrays) -> None:
        state = {a: {} for a in self.STATE if hasattr(self, a)}
        for key, value in arrays.items():
            attr, name = key.split("/", 1)
            if attr not in state:
                raise KeyError(f"method state: unknown entry {key!r} for {self.name}")
            state[attr][name] = float(value) if attr == "layer_sparsity" else np.asarray(value)
        self.set_state(state)

    def recompute(self, iteration: int) -> bool:
        return iteration % self.topk_period == 0 or not self.weight_threshold

    def update_layer_sparsity(self) -> None:
        """Per-layer target sparsities before thresholds are recomputed (uniform here)."""

    # -- per iteration --------------------------------------------------------------------
    def before_forward(self, iteration: int) -> None:
        recompute = self.recompute(iteration)
        if recompute:
            self.update_layer_sparsity()
        self._inputs = []
        for lay in self.layers:
            name = lay.spec.name
            s = self.layer_sparsity[name]
            lay.forward_weight = lay.backward_weight = lay.save_input = lay.grad_output_hook = None
            if s == 0.0:
                self.measured[name] = (zero_fraction(lay.weight.value), np.nan)
                continue
            w = lay.weight.value
            kept = None
            if self.sparsify_forward_weight or self.sparsify_backward_weight:
                if recompute or name not in self.weight_threshold:
                    w, self.weight_threshold[name], kept = self.select_weight(lay, s)
                else:
                    w, kept = self.sparse_weight(lay)
            if self.sparsify_forward_weight:
                lay.forward_weight = w
            if self.sparsify_backward_weight:
                lay.backward_weight = w
            if self.sparsify_saved_input:
                lay.save_input = self._input_sparsifier(name, s, recompute)
            weight_sparsity = zero_fraction(w) if kept is None else 1.0 - kept / max(w.size, 1)
            self.measured[name] = (weight_sparsity, np.nan)

    def after_backward(self, iteration: int) -> None:
        """Edit gradients before the optimizer step (nothing: SWAT updates all weights)."""

    # -- helpers --------------------------------------------------------------------------
    def select_weight(self, lay, sparsity: float) -> tuple[np.ndarray, np.ndarray, int | None]:
        """(the layer's new sparse weight, its threshold, its non-zeros or None)."""
        return self.selector.sparsify(("weight", lay.spec.name), lay.weight.value, sparsity,
                                      self.scope)

    def sparse_weight(self, lay) -> tuple[np.ndarray, int | None]:
        """(the layer's sparse weight, its number of non-zeros, or None if not counted)."""
        return apply_threshold_count(lay.weight.value, self.weight_threshold[lay.spec.name])

    def _input_sparsifier(self, name: str, sparsity: float, recompute: bool) -> Callable:
        """The layer's `save_input` hook: x as a `Thresholded` tensor (masked by the conv as
        its backward pass reads it). A tensor that feeds two layers (a block's first conv
        and its downsample shortcut) is thresholded once."""
        def sparsify(x: np.ndarray) -> Thresholded:
            thr = self.input_threshold.get(name)
            seen = next((i for i in self._inputs if i[0]() is x and i[1] == sparsity), None)
            if seen is not None and recompute:
                thr, kept = seen[2], seen[3]
                self.input_threshold[name] = thr
            elif recompute or thr is None or thr.shape[:1] not in ((x.shape[0],), (1,)):
                thr, kept = self.selector.threshold(("input", name), x, sparsity, self.scope)
                self.input_threshold[name] = thr
            else:
                kept = count_kept(x, thr)  # periodic Top-K reuses thr
            self._inputs.append((weakref.ref(x), sparsity, thr, kept))
            self.measured[name] = (self.measured[name][0], 1.0 - kept / max(x.size, 1))
            return Thresholded(x, thr, kept)
        return sparsify


class Dense(SparsityMethod):
    name = "dense"

    def __init__(self, sparsity: float = 0.0, **kwargs):
        super().__init__(0.0, **kwargs)

    def attach(self, layers, optimizer=None):
        super().attach(layers, optimizer)
        self.layer_sparsity = dict.fromkeys(self.layer_sparsity, 0.0)


class SwatERK(SparsityMethod):
    name = "swat-erk"

    def attach(self, layers, optimizer=None):
        super().attach(layers, optimizer)
        sparse = self.sparse_layers()
        sizes = np.array([lay.weight.value.size for lay in sparse], dtype=float)
        scores = np.array([(sum(lay.weight.value.shape)) / lay.weight.value.size for lay in sparse])
        for lay, d in zip(sparse, _budgeted_densities(scores, sizes, 1.0 - self.sparsity)):
            self.layer_sparsity[lay.spec.name] = float(1.0 - d)


class SwatM(SparsityMethod):
    name = "swat-m"

    def update_layer_sparsity(self):
        sparse = self.sparse_layers()
        if self.optimizer is None or not self.weight_threshold:
            return
        means = []
        for lay in sparse:
            buf = self.optimizer.momentum_buffer(lay.weight)
            if buf is None:
                return  # no momentum yet: stay uniform
            active = apply_threshold(lay.weight.value, self.weight_threshold[lay.spec.name]) != 0
            means.append(float(np.abs(buf[active]).mean()) if active.any() else 0.0)
        sizes = np.array([lay.weight.value.size for lay in sparse], dtype=float)
        for lay, d in zip(sparse, _budgeted_densities(np.array(means), sizes, 1.0 - self.sparsity)):
            self.layer_sparsity[lay.spec.name] = float(np.clip(1.0 - d, 0.0, 0.999))


class SwatStructured(SparsityMethod):
    """Channel Top-K: a filter's k x k kernel slice for one input channel is kept or
    dropped whole, by its L1 norm (fc weights: each element is its own channel)."""

    name = "swat-structured"

    def _norms(self, lay) -> np.ndarray:
        w = lay.weight.value
        return np.abs(w).reshape(w.shape[0], w.shape[1], -1).sum(axis=2)

    def select_weight(self, lay, sparsity):
        threshold = topk_threshold(self._norms(lay), sparsity, "NCHW")
        self.weight_threshold[lay.spec.name] = threshold   # sparse_weight reads it
        weight, _ = self.sparse_weight(lay)
        return weight, threshold, None

    def sparse_weight(self, lay):
        keep = self._norms(lay) >= self.weight_threshold[lay.spec.name]
        w = lay.weight.value
        return np.where(keep.reshape(keep.shape + (1,) * (w.ndim - 2)), w, np.zeros((), w.dtype)), None


class SAW(SparsityMethod):
    name = "saw"
    sparsify_forward_weight = False


class MeProp(SparsityMethod):
    """Top-K on the output gradients; weights and activations stay dense."""

    name = "meprop"
    sparsify_forward_weight = sparsify_backward_weight = sparsify_saved_input = False

    def before_forward(self, iteration):
        super().before_forward(iteration)
        for lay in self.sparse_layers():
            s = self.layer_sparsity[lay.spec.name]
            lay.grad_output_hook = lambda dy, s=s: apply_threshold(dy, topk_threshold(dy, s, self.scope))


class TopKAST(SparsityMethod):
    """Forward and backward use A = top-D weights (D = 1 - S); only B = top-(D + M)
    weights are updated; exploration penalty on A and (more) on B \\ A."""

    name = "topkast"
    sparsify_saved_input = False

    def __init__(self, sparsity: float, *, extra: float | None = None, penalty: float = 1e-4, **kwargs):
        super().__init__(sparsity, **kwargs)
        self.extra = min(0.3, sparsity) if extra is None else extra
        if not 0.0 <= self.extra <= sparsity:
            raise ValueError(f"topkast extra fraction M must be in [0, sparsity], got {self.extra}")
        self.penalty = penalty
        self.backward_threshold: dict[str, np.ndarray] = {}

    def _masked_layers(self):
        """The layers Top-K masks (a layer at sparsity 0 trains dense, as in the base class)."""
        return [lay for lay in self.sparse_layers() if self.layer_sparsity[lay.spec.name] > 0.0]

    def before_forward(self, iteration):
        recompute = self.recompute(iteration)
        super().before_forward(iteration)
        for lay in self._masked_layers():
            name = lay.spec.name
            if recompute or name not in self.backward_threshold:
                s_b = max(self.layer_sparsity[name] - self.extra, 0.0)
                self.backward_threshold[name] = topk_threshold(lay.weight.value, s_b, self.scope)

    def after_backward(self, iteration):
        for lay in self._masked_layers():
            name = lay.spec.name
            w = lay.weight.value
            in_a = np.abs(w) >= self.weight_threshold[name]
            in_b = np.abs(w) >= self.backward_threshold[name]
            density = 1.0 - self.layer_sparsity[name]
            scale = np.where(in_a, 1.0, np.where(in_b, 1.0 / density, 0.0)).astype(w.dtype)
            lay.weight.grad *= in_b
            lay.weight.grad += self.penalty * scale * w


_CLASSES = {c.name: c for c in (Dense, SparsityMethod, SwatERK, SwatM, SwatStructured, SAW, MeProp, TopKAST)}


def make_method(name: str, sparsity: float, **kwargs) -> SparsityMethod:
    """The sparsity method called `name` (one of METHODS)."""
    if name not in _CLASSES:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return _CLASSES[name](sparsity, **kwargs)
