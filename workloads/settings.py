"""What a training run depends on: `TrainSettings`, checked field by field when built.

Every field is range-checked (`TrainSettings.check`): a bad value raises `SettingsError`
naming the field, which the CLI reports as its option (`--label-smoothing: expected a
number in [0, 1), got 5.0`). Counts stop at 2**31 - 1 and the seed at 2**63 - 1, as in a
config. Fields left at None take the network's recipe (`workloads.recipes`) in
`resolved()`; what needs the data set as well is checked by `trainer.Trainer`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .data import DATASETS
from .networks import NETWORKS, build_network
from .optim import LR_KINDS
from .recipes import recipe, scaled_lr, warmup_iterations
from .sparsity import METHODS
from .topk import SCOPES

MAX_COUNT = 2**31 - 1   # iterations, batches, sizes, periods: as a config's integers
MAX_SEED = 2**63 - 1


class TrainingError(ValueError):
    """A run refused (bad settings, a run directory or checkpoint that is not usable) or
    stopped (the loss diverged); `str()` is one line naming the setting or the file."""


class SettingsError(TrainingError):
    """A bad value of the TrainSettings field `field`; `detail` says what was expected
    and what was got (the CLI names the option instead of the field)."""

    def __init__(self, field: str, detail: str):
        self.field, self.detail = field, detail
        super().__init__(f"{field}: {detail}")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _is_real(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


@dataclass(frozen=True)
class TrainSettings:
    """Everything a training run depends on (sizes in pixels). Fields left at None take
    the network's recipe (`workloads.recipes`); `resolved()` fills them in."""

    network: str
    method: str = "swat-u"
    sparsity: float = 0.8
    iterations: int | None = None      # total SGD steps; or
    epochs: float | None = None        # passes over the training split
    batch: int | None = None
    image_size: int | None = None      # training resolution
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    lr: float | None = None            # at batch 256 when lr_scaling, else as is
    lr_scaling: bool = True            # peak lr = lr * batch / 256
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_bn: bool = False
    label_smoothing: float = 0.0
    schedule: str = "cosine"
    warmup: int | None = None          # iterations of linear warm-up
    zero_init_residual: bool = True    # residual branches' last BN gamma starts at 0
    topk_scope: str = "NCHW"
    topk_period: int = 1
    trace_batch: int | None = None
    trace_image_size: int | None = None  # default: the network's native size
    trace_at: tuple[int, ...] = ()     # default: the last iteration
    out: str | None = None             # default: traces/<network>-<method>-<sparsity %>
    run_dir: str | None = None         # default: runs/<name of out>
    seed: int = 0
    checkpoint_every: int = 100
    checkpoint_minutes: float = 4.0
    eval_limit: int | None = None      # test samples to evaluate (default all)
    synthetic_size: int = 1024
    resume: bool = False
    method_options: dict = field(default_factory=dict)
    max_memory: float | None = None    # GiB a run may need (default: the available memory)

    def __post_init__(self):
        self.check()
        if self.method == "dense":  # dense training has no sparsity, whatever was asked
            object.__setattr__(self, "sparsity", 0.0)
        object.__setattr__(self, "trace_at", tuple(int(i) for i in self.trace_at))

    def check(self) -> None:
        """SettingsError naming the first field whose value is out of range or of the
        wrong type (what needs the data set or the recipe is checked by `Trainer`)."""
        def choice(name, options):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in options:
                raise SettingsError(name, f"expected one of {', '.join(options)}, got {_shown(value)}")

        def integer(name, low, high=MAX_COUNT, optional=True):
            value = getattr(self, name)
            if value is None and optional:
                return
            if not _is_int(value) or not low <= value <= high:
                raise SettingsError(name, f"expected an integer in {low}..{high:,}, got {_shown(value)}")

        def real(name, low, high=None, low_open=False, optional=False):
            value = getattr(self, name)
            if value is None and optional:
                return
            ok = _is_real(value) and math.isfinite(value) and (value > low if low_open else value >= low) \
                and (high is None or value < high)
            if not ok:
                expected = (f"a number in [{low:g}, {high:g})" if high is not None
                            else f"a finite number {'>' if low_open else '>='} {low:g}")
                raise SettingsError(name, f"expected {expected}, got {_shown(value)}")

        def flag(name):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise SettingsError(name, f"expected true or false, got {_shown(getattr(self, name))}")

        def path(name):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (str, os.PathLike)) or str(value) == ""):
                raise SettingsError(name, f"expected a path, got {_shown(value)}")

        choice("network", NETWORKS)
        choice("method", METHODS)
        real("sparsity", 0.0, 1.0)
        integer("iterations", 1)
        real("epochs", 0.0, low_open=True, optional=True)
        integer("batch", 1)
        integer("image_size", 1)
        choice("dataset", DATASETS)
        path("data_dir")
        real("lr", 0.0, low_open=True, optional=True)
        real("momentum", 0.0, 1.0)
        real("weight_decay", 0.0)
        real("label_smoothing", 0.0, 1.0)
        choice("schedule", LR_KINDS)
        integer("warmup", 0)
        choice("topk_scope", SCOPES)
        integer("topk_period", 1, optional=False)
        integer("trace_batch", 1)
        integer("trace_image_size", 1)
        if not isinstance(self.trace_at, (tuple, list)) or len(self.trace_at) > 10_000 \
                or not all(_is_int(i) and 1 <= i <= MAX_COUNT for i in self.trace_at):
            shown = (",".join(str(i) for i in self.trace_at)
                     if isinstance(self.trace_at, (tuple, list)) else repr(self.trace_at))
            raise SettingsError("trace_at", f"expected iterations in 1..{MAX_COUNT:,} (at most "
                                f"10,000 of them), got {shown[:60]}")
        path("out")
        path("run_dir")
        integer("seed", 0, MAX_SEED, optional=False)
        integer("checkpoint_every", 1, optional=False)
        real("checkpoint_minutes", 0.0, low_open=True)
        integer("eval_limit", 1)
        integer("synthetic_size", 1, optional=False)
        for name in ("lr_scaling", "nesterov", "decay_bn", "zero_init_residual", "resume"):
            flag(name)
        if not isinstance(self.method_options, dict):
            raise SettingsError("method_options", f"expected a dict, got {_shown(self.method_options)}")
        real("max_memory", 0.0, low_open=True, optional=True)

    @property
    def name(self) -> str:
        return f"{self.network}-{self.method}-{round(self.sparsity * 100)}"

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("traces") / self.name

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.out_dir.name

    def resolved(self, per_epoch: int | None = None) -> TrainSettings:
        """These settings with the recipe's defaults filled in (`per_epoch`: batches per
        epoch, needed when the length is given in epochs or the recipe trains one epoch)."""
        r = recipe(self.network)
        batch = r.batch if self.batch is None else self.batch
        image_size = r.image_size if self.image_size is None else self.image_size
        iterations = self.iterations
        if iterations is None and (self.epochs is not None or r.iterations is None):
            if per_epoch is None:
                raise ValueError("resolved: the length is in epochs; give per_epoch")
            iterations = max(1, round((self.epochs or 1.0) * per_epoch))
            if iterations > MAX_COUNT:
                raise SettingsError("epochs", f"{self.epochs or 1.0:g} epochs of {per_epoch:,} batches "
                                    f"are {iterations:.3g} iterations, more than the {MAX_COUNT:,} "
                                    "a run may have")
        elif iterations is None:
            iterations = r.iterations
        lr = r.lr_at_256 if self.lr is None else self.lr
        warmup = warmup_iterations(iterations, r.warmup_fraction) if self.warmup is None else self.warmup
        trace_size = self.trace_image_size
        if trace_size is None:
            native = build_network(self.network).image_size
            trace_size = native if _same_weights(self.network, image_size, native) else image_size
        return replace(self, batch=batch, image_size=image_size, iterations=iterations, lr=lr,
                       warmup=warmup, trace_image_size=trace_size,
                       trace_batch=r.trace_batch if self.trace_batch is None else self.trace_batch)

    @property
    def peak_lr(self) -> float:
        """The learning rate after warm-up (of resolved settings)."""
        return scaled_lr(self.lr, self.batch) if self.lr_scaling else self.lr


def _same_weights(network: str, size_a: int, size_b: int) -> bool:
    """Whether `network`'s conv/fc weights have the same shapes at both image sizes."""
    try:
        a, b = (build_network(network, image_size=s, num_classes=10) for s in (size_a, size_b))
    except ValueError:
        return False
    return [lay.weight_shape for lay in a.layers] == [lay.weight_shape for lay in b.layers]
