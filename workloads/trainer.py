"""The NumPy SWAT trainer: train a zoo network with a sparsity method, export traces.

One loop (iterations are counted from 1):

    for it in 1..N:   x, y = next batch
                      method.before_forward(it)        # Top-K hooks on every conv/fc
                      logits = model(x); loss = CE(logits, y)
                      model.backward(dloss); method.after_backward(it)
                      sgd.step(lr(it))
                      if it in trace_at: export the recorded iteration as a trace

Files (all written atomically: temporary file or directory, then rename):
- `<run_dir>/log.csv`: iteration, epoch, loss, train_accuracy, lr, elapsed_s (wall time
  of training so far, recording included), and per conv/fc layer
  the measured weight sparsity (`w:<layer>`) and saved-activation sparsity (`a:<layer>`);
- `<run_dir>/checkpoint.npz`: model, optimizer and progress, every `checkpoint_every`
  iterations and at the end (no pickles); `resume=True` continues from it;
- `<run_dir>/summary.yaml`: test accuracy and where the traces went;
- the traces: `out` when one iteration is traced, else `out/iter-<I>` per iteration.
Ctrl-C leaves the last checkpoint and every finished trace intact (nothing is written
in place); the log keeps what the last checkpoint covers. A checkpoint is written every
`checkpoint_every` iterations and whenever `checkpoint_minutes` have passed since the
last one, so an interruption loses at most that much work.

Train at one resolution, record at another: conv and fc weights do not depend on the
image size when the network pools globally before its classifier (the ResNets, VGG's
adaptive pool, DenseNet, MobileNet-v2), so a model trained at `image_size` (say 64) can
run a training iteration at `trace_image_size` (say 224, the size the accelerator
studies use). When the two differ, a traced iteration `I` first runs one extra
forward and backward pass of the model as it is before step `I` (the weights and masks
of step `I`, batch-norm in training mode) on `trace_batch` training images resized to
`trace_image_size`, records it (the activations get their own Top-K thresholds), and
then puts back the batch-norm running statistics, the method's per-layer state and the
dropout generators, so the training run itself is unchanged. When they
are equal, the training iteration itself is recorded (its first `trace_batch` samples).

Defaults come from `workloads.recipes` (per network: training size, batch, iterations,
learning rate at batch 256 scaled linearly to the batch, warm-up); `TrainSettings`
fields left at None take them, and `Trainer.plan` says what a run will do and how long
it should take.
"""

from __future__ import annotations

import json
import math
import os
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from simulator.outputs import file_kind, probe_output_dir, write_atomic
from simulator.resources import check_memory
from simulator.trace import TraceError, check_trace_destination

from .checkpoint import (CheckpointError, _load_arrays, check_checkpoint_arrays,  # noqa: F401
                         load_checkpoint, read_checkpoint, save_checkpoint)
from .data import NUM_CLASSES, DataError, Loader, load_dataset
from .export import export_trace
from .layers import softmax_cross_entropy
from .models import build_model, weight_layers
from .networks import build_network
from .optim import SGD, LRSchedule
from .recipes import _nominal_data_shapes, estimate_seconds, format_duration, memory_needed, recipe  # noqa: F401
from .settings import (MAX_COUNT, SettingsError, TrainingError, TrainSettings,  # noqa: F401
                       _is_int, _same_weights, _shown)
from .sparsity import make_method

RUN_FILES = ("log.csv", "checkpoint.npz", "summary.yaml")


@dataclass
class TrainResult:
    test_accuracy: float
    log: pd.DataFrame
    traces: list[Path]
    iterations: int


# Settings that change what training computes: a resumed run must have the same ones.
TRAINING_FIELDS = ("network", "method", "sparsity", "iterations", "batch", "image_size", "dataset",
                   "lr", "lr_scaling", "momentum", "nesterov", "weight_decay", "decay_bn",
                   "label_smoothing", "schedule", "warmup", "zero_init_residual", "topk_scope",
                   "topk_period", "seed", "synthetic_size", "method_options")


def _dropout_generators(model) -> list:
    """The distinct random generators of the model's dropout layers."""
    from .layers import Dropout

    gens = {id(m.rng): m.rng for m in model.modules() if isinstance(m, Dropout)}
    return list(gens.values())


def evaluate(model, loader, layers, method=None, progress: bool = False) -> float:
    """Test accuracy of the model as trained: eval-mode BN and, with `method`, the sparse
    forward weights Top-K'd from the *current* weights (the last step changed them).
    FloatingPointError if the model's outputs are not finite (a diverged run)."""
    from tqdm.auto import tqdm

    if method is not None:
        method.before_forward(0)  # iteration 0 always recomputes the thresholds
    hooks = [(lay.save_input, lay.grad_output_hook) for lay in layers]
    for lay in layers:
        lay.save_input = lay.grad_output_hook = None
    model.eval()
    correct = total = 0
    try:
        with tqdm(total=len(loader.dataset), desc="evaluating", unit="img", leave=False,
                  disable=True if not progress else None) as bar, \
                np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for x, y in loader:
                logits = model.forward(x)
                if not np.isfinite(logits).all():
                    raise FloatingPointError("the model's outputs on the test set are not finite")
                correct += int((logits.argmax(axis=1) == y).sum())
                total += len(y)
                bar.update(len(y))
    finally:
        model.train()
        for lay, (s, g) in zip(layers, hooks):
            lay.save_input, lay.grad_output_hook = s, g
    return correct / max(total, 1)


class Trainer:
    """Builds everything a run needs from `TrainSettings`; `plan()` says what it will do,
    `run()` trains, evaluates and exports.

    Everything that can be checked is checked here, before anything large is allocated or
    any training step runs: the settings (`TrainSettings.check`, then those that need the
    recipe and the data set), the peak memory (`memory_needed`, against
    `simulator.resources`' limit: before the data set and the model are built, and again
    with the data set's real size), the output locations (`_check_outputs`) and, with
    `resume`, the checkpoint and the log (`_load_resume`). Errors are `TrainingError`s
    (`SettingsError` naming a field, `CheckpointError` naming a file), `DataError`s naming
    a data file, or `simulator.resources.MemoryLimitError` for a run that would not fit;
    each is one line. `option_names` maps field names to what the messages call them (the
    CLI's options)."""

    def __init__(self, settings: TrainSettings, option_names: dict[str, str] | None = None):
        self.option_names = dict(option_names or {})
        s = settings
        # the sizes that decide the memory, from the settings and the recipe alone
        early = s.resolved(per_epoch=1)
        network, trace_network = self._networks(early)
        stored = _nominal_data_shapes(s)
        self._check_batchnorm(early, network, trace_network, stored)
        self._check_memory(early, network, trace_network, stored)
        self.train_set = load_dataset(s.dataset, "train", s.data_dir, synthetic_size=s.synthetic_size, seed=s.seed)
        self.test_set = load_dataset(s.dataset, "test", s.data_dir, synthetic_size=s.synthetic_size, seed=s.seed)
        batch = recipe(s.network).batch if s.batch is None else s.batch
        if batch > len(self.train_set):
            raise SettingsError("batch", f"expected at most the {len(self.train_set):,} training "
                                f"images of {s.dataset}, got {batch:,}")
        per_epoch = len(self.train_set) // batch
        s = self.settings = s.resolved(per_epoch=max(per_epoch, 1))
        self._check_resolved()
        if s.eval_limit:
            self.test_set.images = self.test_set.images[:s.eval_limit]
            self.test_set.labels = self.test_set.labels[:s.eval_limit]
        self.network, self.trace_network = network, trace_network
        self._check_memory(s, network, trace_network,
                           {"train": self.train_set.images.shape, "test": self.test_set.images.shape})
        size = self.network.image_size
        self.loader = Loader(self.train_set, s.batch, size, 3, train=True, seed=s.seed)
        self.test_loader = Loader(self.test_set, s.batch, size, 3, train=False)  # memory: as a step
        self.iterations = s.iterations
        self.trace_at = tuple(sorted(set(s.trace_at))) or (self.iterations,)
        self.trace_loader = None
        if self.trace_network is not self.network:  # record a separate iteration at the trace size
            self.trace_loader = Loader(self.train_set, min(s.trace_batch, len(self.train_set)),
                                       s.trace_image_size, 3, train=True, seed=s.seed,
                                       drop_last=False, cache_bytes=0)
        self._check_outputs()
        self.model = build_model(self.network, seed=s.seed, zero_init_residual=s.zero_init_residual)
        self.layers = weight_layers(self.model)
        self.optimizer = SGD(self.model.params(), lr=s.peak_lr, momentum=s.momentum, nesterov=s.nesterov,
                             weight_decay=s.weight_decay, decay_bn=s.decay_bn)
        self.schedule = LRSchedule(s.peak_lr, self.iterations, kind=s.schedule, warmup_iterations=s.warmup)
        try:
            self.method = make_method(s.method, s.sparsity, scope=s.topk_scope, topk_period=s.topk_period,
                                      **s.method_options)
        except TypeError as e:
            raise SettingsError("method_options", f"not options of {s.method} ({e})") from None
        self.method.attach(self.layers, self.optimizer)
        self._start, self._rows = self._load_resume() if s.resume else (0, [])

    def _n(self, name: str) -> str:
        """What messages call the field `name` (its CLI option when run from the CLI)."""
        return self.option_names.get(name, name)

    def _networks(self, s: TrainSettings):
        """The network specs at the training and the trace size (the same object when
        the two are equal); cheap, nothing allocated."""
        try:
            network = build_network(s.network, image_size=s.image_size, num_classes=NUM_CLASSES)
        except ValueError as e:
            raise SettingsError("image_size", str(e)) from None
        if s.trace_image_size == network.image_size:
            return network, network
        try:
            trace_network = build_network(s.network, image_size=s.trace_image_size,
                                          num_classes=NUM_CLASSES)
        except ValueError as e:
            raise SettingsError("trace_image_size", str(e)) from None
        if not _same_weights(s.network, network.image_size, s.trace_image_size):
            raise SettingsError("trace_image_size", f"{s.network}'s weights depend on the image "
                                f"size (its classifier sees the feature map unpooled), so "
                                f"trace_image_size must be the size it trains at, {network.image_size}")
        return network, trace_network

    def _check_batchnorm(self, s: TrainSettings, network, trace_network, stored: dict) -> None:
        """A batch-norm in training mode needs more than one value per channel: refuse a
        batch that would give one (a 1x1 map and batch 1) before training, not at the step."""
        n = self._n
        passes = [(network, s.batch, ("batch", "image_size"))]
        if trace_network is not network:  # a pass of its own (else the training batch is recorded)
            passes.append((trace_network, min(s.trace_batch, stored["train"][0]),
                           ("trace_batch", "trace_image_size")))
        for net, batch, names in passes:
            bn = next((b for b in net.batchnorms if batch * b.hw[0] * b.hw[1] < 2), None)
            if bn is not None:
                raise SettingsError(names[0], f"{s.network} at {net.image_size}x{net.image_size}, batch "
                                    f"{batch}, has a single value per channel at batch-norm "
                                    f"{bn.name} ({bn.hw[0]}x{bn.hw[1]}), which cannot be "
                                    f"normalised in training; raise {n(names[0])} or {n(names[1])}")

    def _check_resolved(self) -> None:
        """The settings that need the recipe and the data set's size."""
        s = self.settings
        if not math.isfinite(s.peak_lr):
            raise SettingsError("lr", f"expected a learning rate that stays finite at batch "
                                f"{s.batch}, got {s.lr!r}")
        if s.warmup > s.iterations:
            raise SettingsError("warmup", f"expected at most the run's {s.iterations:,} iterations, "
                                f"got {s.warmup:,}")
        bad = [i for i in s.trace_at if i > s.iterations]
        if bad:
            raise SettingsError("trace_at", f"iteration {bad[0]:,} is outside the run's 1..{s.iterations:,} "
                                "(trace_at names iterations of the run)")

    def _check_outputs(self) -> None:
        """Fail now, not after training, if a trace or the run directory cannot be written
        where asked, or would replace something that is not ours: each trace directory is
        an existing trace or can be created (probed), `out` holds no trace when it is to
        hold the iter-* traces, and the run directory is a directory (or can be made one)
        in which a directory can really be created (probed: permissions, read-only and
        pseudo file systems, over-long names), whose log.csv, checkpoint.npz and
        summary.yaml are regular files if they exist."""
        s = self.settings
        out = s.out_dir
        if len(self.trace_at) > 1 and os.path.lexists(out) and (
                not out.is_dir() or (out / "manifest.yaml").exists()):
            raise TraceError(f"{out}: expected a directory for the iter-* traces, found "
                             + ("a trace" if out.is_dir() else "a file"))
        for it in self.trace_at:
            check_trace_destination(self.trace_dir(it))
        probe_output_dir(s.run_path, self._n("run_dir"), files=RUN_FILES)

    def _check_memory(self, s: TrainSettings, network, trace_network, stored: dict) -> None:
        """Refuse a run whose estimated peak memory (`memory_needed`) exceeds the limit of
        (`simulator.resources.check_memory`: `max_memory` GiB, else the machine's), naming the
        settings that lower the largest part."""
        need = memory_needed(s, network, trace_network, stored)
        total = sum(need.values())
        n = self._n
        part = max(need, key=need.get)
        if part == "trace":
            batch = min(s.trace_batch, stored["train"][0] if trace_network is not network else s.batch)
        if part == "train":
            what = (f"{n('batch')}/{n('image_size')}: a step of {s.network} at {network.image_size}x"
                    f"{network.image_size}, batch {s.batch:,}")
            change = f"{n('batch')} or {n('image_size')}"
        elif part == "trace":
            what = (f"{n('trace_batch')}/{n('trace_image_size')}: the recorded iteration of "
                    f"{s.network} at {trace_network.image_size}x{trace_network.image_size}, "
                    f"batch {batch:,}")
            change = f"{n('trace_batch')} or {n('trace_image_size')}"
        else:
            images = sum(shape[0] for shape in stored.values())
            what = (f"{n('dataset')} {s.dataset}: {images:,} images and their copies at "
                    f"{network.image_size}x{network.image_size}")
            change = (n("image_size") if s.dataset != "synthetic"
                      else f"{n('synthetic_size')} or {n('image_size')}")
        check_memory(total, what, change, s.max_memory)

    def trace_dir(self, iteration: int) -> Path:
        out = self.settings.out_dir
        return out if len(self.trace_at) == 1 else out / f"iter-{iteration:06d}"

    @property
    def trace_batch(self) -> int:
        s = self.settings
        return min(s.trace_batch, len(self.train_set) if self.trace_loader is not None else s.batch)

    def estimate(self):
        """Predicted seconds of training, evaluation and recording (`workloads.recipes`)."""
        trace_elements = sum(self.trace_batch * (2 * lay.in_hw[0] * lay.in_hw[1] * lay.in_channels
                                                 + lay.out_hw[0] * lay.out_hw[1] * lay.out_channels)
                             + lay.weight_count for lay in self.trace_network.layers)
        return estimate_seconds(
            self.network.macs(1), len(self.network.layers), self.settings.batch, self.iterations,
            len(self.test_set), self.trace_network.macs(1), self.trace_batch,
            4 * trace_elements * len(self.trace_at))

    def plan(self) -> str:
        """One paragraph: what this run will do, and about how long it should take."""
        s = self.settings
        epochs = self.iterations / max(len(self.loader), 1)
        sparsity = "dense" if s.method == "dense" else f"{s.method} at {s.sparsity:.0%} sparsity"
        lr = (f"lr {s.peak_lr:.4g} ({s.lr:g} x {s.batch}/256)" if s.lr_scaling else f"lr {s.peak_lr:.4g}")
        at = ("the last iteration" if self.trace_at == (self.iterations,)
              else "iterations " + ", ".join(str(i) for i in self.trace_at))
        stored = self.train_set.images.shape[1]
        e = self.estimate()
        return (f"{s.name}: trains {s.network} with {sparsity} on {s.dataset} "
                f"({len(self.train_set):,} images, {stored}x{stored} resized to "
                f"{s.image_size}x{s.image_size}) for {self.iterations:,} iterations of batch "
                f"{s.batch} ({epochs:.2f} epochs), {lr}, {s.warmup} warm-up iterations then "
                f"{s.schedule}; evaluates on {len(self.test_set):,} test images; records "
                f"{at} at {s.trace_image_size}x{s.trace_image_size} on {self.trace_batch} "
                f"sample{'s' if self.trace_batch > 1 else ''} into {s.out_dir}. Estimated time "
                f"on this machine: {format_duration(e.total)} (training "
                f"{format_duration(e.train)[6:]}, evaluation {format_duration(e.evaluate)[6:]}, "
                f"recording {format_duration(e.record)[6:]}). Log and checkpoint every "
                f"{s.checkpoint_every} iterations or {s.checkpoint_minutes:g} minutes in "
                f"{s.run_path}.")

    def run(self, progress: bool = False) -> TrainResult:
        from tqdm.auto import tqdm

        s, run_path = self.settings, self.settings.run_path
        ckpt, log_path = run_path / "checkpoint.npz", run_path / "log.csv"
        start, rows = self._start, list(self._rows)  # (0, []) unless resumed (see __init__)
        self._saved = start
        traces = [self.trace_dir(i) for i in self.trace_at if i <= start]
        per_epoch = len(self.loader)
        bar = tqdm(total=self.iterations, initial=start, desc=s.name, unit="it",
                   disable=True if not progress else None)
        batches = self._batches()
        started = last_checkpoint = time.monotonic()
        elapsed = float(rows[-1].get("elapsed_s", 0.0)) if rows else 0.0  # before a resume
        elapsed = elapsed if np.isfinite(elapsed) else 0.0
        # divergence is reported as such (the loss, and the weights at each checkpoint,
        # are checked), so numpy's overflow warnings on the way there are not shown
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for it in range(start + 1, self.iterations + 1):
                x, y = next(batches)
                record = it in self.trace_at
                if record and self.trace_loader is not None:
                    self._check_finite(it, run_path)  # no trace of a diverged model
                    traces.append(self._record_at_trace_size(it, progress))
                record_here = record and self.trace_loader is None
                for lay in self.layers:
                    lay.record = record_here
                self.method.before_forward(it - 1)
                logits = self.model.forward(x)
                loss, dlogits = softmax_cross_entropy(logits, y, s.label_smoothing)
                if not math.isfinite(loss):
                    bar.close()
                    self._diverged(it, f"the training loss is {loss}", run_path)
                self.model.zero_grad()
                self.model.backward(dlogits)
                self.method.after_backward(it - 1)
                lr = self.schedule(it - 1)
                self.optimizer.step(lr)
                acc = float((logits.argmax(axis=1) == y).mean())
                row = {"iteration": it, "epoch": (it - 1) // per_epoch, "loss": loss,
                       "train_accuracy": acc, "lr": lr,
                       "elapsed_s": round(elapsed + time.monotonic() - started, 3)}
                for name, (ws, xs) in self.method.measured.items():
                    row[f"w:{name}"], row[f"a:{name}"] = ws, xs
                rows.append(row)
                if record_here:
                    for lay in self.layers:
                        lay.record = False
                    traces.append(self._export(it, self.trace_batch))
                if (it % s.checkpoint_every == 0 or it == self.iterations
                        or time.monotonic() - last_checkpoint >= 60 * s.checkpoint_minutes):
                    self._check_finite(it, run_path)
                    self._checkpoint(ckpt, log_path, rows, it)
                    self._saved = it
                    last_checkpoint = time.monotonic()
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.2f}")
        bar.close()
        try:
            accuracy = evaluate(self.model, self.test_loader, self.layers, self.method, progress=progress)
        except FloatingPointError as e:
            self._diverged(self.iterations, str(e), run_path)
        summary = {"settings": {k: (list(v) if isinstance(v, tuple) else v)
                                for k, v in asdict(s).items()},
                   "iterations": self.iterations, "test_accuracy": accuracy,
                   "traces": [str(p) for p in traces]}
        write_atomic(run_path / "summary.yaml", yaml.safe_dump(summary, sort_keys=False).encode())
        return TrainResult(accuracy, pd.DataFrame(rows), traces, self.iterations)

    def _diverged(self, it: int, what: str, run_path: Path):
        s = self.settings
        raise TrainingError(
            f"iteration {it}: {what} (the run diverged); lower {self._n('lr')}"
            + (f" or {self._n('weight_decay')}" if s.weight_decay else "")
            + (f"; the checkpoint of iteration {self._saved} is kept in {run_path}" if self._saved else ""))

    def _check_finite(self, it: int, run_path: Path) -> None:
        """Stop a diverged run before its non-finite weights are checkpointed."""
        bad = next((name for name, p in self.model.named_params() if not np.isfinite(p.value).all()), None)
        if bad is not None:
            self._diverged(it, f"the weights of {bad} are not finite", run_path)

    def _record_at_trace_size(self, it: int, progress: bool) -> Path:
        """Record iteration `it` at the trace size: one forward and backward pass of the
        model as step `it` will see it, on `trace_batch` fresh training images, with no
        optimizer step; the BN running statistics and activation thresholds it touched are
        put back (see the module docstring)."""
        from tqdm.auto import tqdm

        s = self.settings
        buffers = {name: value.copy() for name, value in self.model.named_buffers()}
        method_state = self.method.state()
        generators = [(g, g.bit_generator.state) for g in _dropout_generators(self.model)]
        self.method.input_threshold = {}  # the trace's activations get their own Top-K
        with tqdm(total=3, desc=f"recording {s.trace_image_size}x{s.trace_image_size}",
                  unit="step", leave=False, disable=True if not progress else None) as bar:
            n = len(self.train_set)
            idx = np.random.default_rng([s.seed, it, 2]).choice(n, size=min(s.trace_batch, n), replace=False)
            x, y = self.trace_loader.make_batch(np.sort(idx), epoch=it, batch=0)
            for lay in self.layers:
                lay.record = True
            try:
                self.method.before_forward(it - 1)
                logits = self.model.forward(x)
                bar.update(1)
                _, dlogits = softmax_cross_entropy(logits, y, s.label_smoothing)
                self.model.zero_grad()
                self.model.backward(dlogits)
                bar.update(1)
            finally:
                for lay in self.layers:
                    lay.record = False
                for name, value in self.model.named_buffers():
                    value[...] = buffers[name]
                self.method.set_state(method_state)
                for gen, state in generators:
                    gen.bit_generator.state = state
                self.model.zero_grad()
            path = self._export(it, len(y))
            bar.update(1)
        return path

    def _export(self, it: int, trace_batch: int) -> Path:
        """Write the layers' recorded iteration `it` as a trace, then free the copies (a
        diverged iteration, with non-finite tensors, is not written: no reader takes it)."""
        s = self.settings
        try:
            for lay in self.layers:
                for kind, value in (lay.recorded or {}).items():
                    if not np.isfinite(value).all():
                        self._diverged(it, f"the recorded {kind} of {lay.spec.name} is not finite",
                                       s.run_path)
            return export_trace(
                self.layers, self.trace_dir(it), network=self.network.name, method=s.method,
                sparsity=s.sparsity, trace_batch=trace_batch, specs=self.trace_network.layers,
                meta={"iteration": it, "dataset": s.dataset, "seed": s.seed,
                      "image_size": self.trace_network.image_size, "batch": trace_batch,
                      "train_batch": s.batch, "train_image_size": self.network.image_size})
        finally:
            for lay in self.layers:
                lay.recorded = None

    def _batches(self):
        while True:  # the training loader keeps its place across epochs (and checkpoints)
            yield from self.loader

    def _training_settings(self) -> dict:
        return {k: v for k, v in asdict(self.settings).items() if k in TRAINING_FIELDS}

    def _check_resumable(self, saved: dict | None, ckpt: Path) -> None:
        if not isinstance(saved, dict):
            raise CheckpointError(f"{ckpt}: does not record the settings it was trained with (an "
                                  f"older accelsim wrote it, or another program); start again "
                                  f"without {self._n('resume')}")
        mine = json.loads(json.dumps(self._training_settings()))
        for key in TRAINING_FIELDS:
            if saved.get(key) != mine.get(key):
                raise CheckpointError(
                    f"{ckpt}: not a checkpoint of this run (trained with {key} "
                    f"{_shown(saved.get(key))}, this run has {mine.get(key)!r}); resume with the "
                    f"same settings, or start again without {self._n('resume')}")

    def _load_resume(self) -> tuple[int, list[dict]]:
        """The iteration and the log rows to go on from: the run directory's checkpoint,
        checked (`read_checkpoint`: a regular file, not too large, a complete archive; the
        settings it was trained with; its loader position and dropout generators; its
        arrays, against the model) before anything is loaded into the model, and its log
        (`_read_log`)."""
        s, n = self.settings, self._n
        ckpt = s.run_path / "checkpoint.npz"
        if not os.path.lexists(ckpt):
            raise CheckpointError(f"{ckpt}: no checkpoint to resume from (run without "
                                  f"{n('resume')} to start)")
        arrays, progress = read_checkpoint(ckpt, self.model, self.method, s.batch)
        self._check_resumable(progress.get("settings"), ckpt)
        start = progress.get("iteration")
        if not _is_int(start) or not 1 <= start <= self.iterations:
            raise CheckpointError(f"{ckpt}: corrupt (its iteration {_shown(start)} is not one of "
                                  f"this run's 1..{self.iterations})")
        generators = _dropout_generators(self.model)
        saved_rngs = progress.get("dropout_rng", [])
        if not isinstance(saved_rngs, list) or len(saved_rngs) != len(generators):
            raise CheckpointError(f"{ckpt}: corrupt (expected the states of {len(generators)} "
                                  "dropout generators)")
        for gen, saved in zip(generators, saved_rngs):
            try:
                type(gen.bit_generator)().state = saved  # a spare one: nothing set yet
            except (TypeError, ValueError, KeyError, OverflowError) as e:
                raise CheckpointError(f"{ckpt}: corrupt (a dropout generator's state: {e})") from None
        check_checkpoint_arrays(ckpt, arrays, self.model, self.optimizer, self.method, s.batch)
        rows = self._read_log(s.run_path / "log.csv", start)
        try:
            self.loader.set_state(progress.get("loader"))
        except (DataError, TypeError, ValueError, OverflowError) as e:
            raise CheckpointError(f"{ckpt}: not a checkpoint of this run ({e})") from None
        _load_arrays(arrays, self.model, self.optimizer, self.method)
        for gen, saved in zip(generators, saved_rngs):
            gen.bit_generator.state = saved
        return start, rows

    LOG_COLUMNS = ("iteration", "epoch", "loss", "train_accuracy", "lr", "elapsed_s")

    def _read_log(self, path: Path, start: int) -> list[dict]:
        """The log rows of iterations 1..`start` from `path`: a regular file of plausible
        size, with this run's columns, numbers only, iterations 1, 2, 3, ... at least to
        `start` (a log ahead of the checkpoint is cut there) and finite losses."""
        def fail(why: str) -> CheckpointError:
            return CheckpointError(f"{path}: {why}; start again without {self._n('resume')}")

        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise fail(f"missing (the checkpoint is at iteration {start}; resuming needs the "
                       f"log of iterations 1..{start})") from None
        except OSError as e:
            raise fail(f"cannot read ({e.strerror or e})") from None
        if not stat.S_ISREG(st.st_mode):
            raise fail(f"expected the run's log file, found {file_kind(st.st_mode)}")
        layers = [lay.spec.name for lay in self.layers]
        limit = 2**20 + (start + 1) * 32 * (len(self.LOG_COLUMNS) + 2 * len(layers))
        if st.st_size > limit:
            raise fail(f"not the log of this run ({st.st_size:,} bytes, more than the {limit:,} a "
                       f"log of {start} iterations can have)")
        try:
            df = pd.read_csv(path)
        except Exception as e:  # whatever a damaged CSV file raises
            raise fail(f"corrupt or truncated ({type(e).__name__}: {str(e)[:80]})") from None
        allowed = set(self.LOG_COLUMNS) | {f"{k}:{name}" for k in "wa" for name in layers}
        missing = [c for c in self.LOG_COLUMNS if c not in df.columns]
        extra = [str(c) for c in df.columns if c not in allowed]
        if missing or extra:
            raise fail(f"corrupt, truncated or not the log of this run (columns missing {missing[:3]}, unexpected "
                       f"{[c[:40] for c in extra[:3]]})")
        for column in df.columns:
            if df[column].dtype.kind not in "iuf":
                raise fail(f"corrupt (column {column} holds something other than numbers)")
        iterations = df["iteration"].to_numpy()
        if df["iteration"].dtype.kind not in "iu" or not np.array_equal(iterations, np.arange(1, len(df) + 1)):
            raise fail("corrupt (its iterations are not 1, 2, 3, ...)")
        if len(df) < start:
            raise fail(f"truncated (it ends at iteration {len(df)}; the checkpoint is at {start})")
        df = df.iloc[:start]
        if not np.isfinite(df[["loss", "lr"]].to_numpy(dtype=float)).all():
            raise fail("corrupt (non-finite losses or learning rates)")
        return df.to_dict("records")

    def _checkpoint(self, ckpt: Path, log_path: Path, rows: list, iteration: int) -> None:
        # the log first: interrupted between the two, the log is ahead of the checkpoint,
        # which a resume accepts (it keeps the rows up to the checkpoint's iteration)
        write_atomic(log_path, pd.DataFrame(rows).to_csv(index=False).encode())
        save_checkpoint(ckpt, self.model, self.optimizer,
                        {"iteration": iteration, "loader": self.loader.state(),
                         "settings": self._training_settings(),
                         "dropout_rng": [g.bit_generator.state for g in _dropout_generators(self.model)]},
                        self.method)


def train(settings: TrainSettings, progress: bool = False) -> TrainResult:
    """Train as `settings` say; returns test accuracy, the log and the trace paths."""
    return Trainer(settings).run(progress=progress)
