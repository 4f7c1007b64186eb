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

import io
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from simulator.trace import TraceError, check_trace_destination, nearest_existing, write_atomic

from .data import Loader, load_dataset
from .export import export_trace
from .layers import softmax_cross_entropy
from .models import build_model, weight_layers
from .networks import build_network
from .optim import SGD, LRSchedule
from .recipes import (estimate_seconds, format_duration, peak_bytes, physical_memory_bytes, recipe,
                      scaled_lr, warmup_iterations)
from .sparsity import make_method


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

    def __post_init__(self):
        if self.method == "dense":  # dense training has no sparsity, whatever was asked
            object.__setattr__(self, "sparsity", 0.0)

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


def save_checkpoint(path: Path, model, optimizer, progress: dict, method=None) -> None:
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays |= {f"optim/{k}": v for k, v in optimizer.state_dict().items()}
    if method is not None:
        arrays |= {f"method/{k}": v for k, v in method.state_dict().items()}
    arrays["progress"] = np.array(json.dumps(progress))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())


def load_checkpoint(path: Path, model, optimizer, method=None) -> dict:
    with np.load(path, allow_pickle=False) as data:
        model.load_state_dict({k[6:]: data[k] for k in data.files if k.startswith("model/")})
        optimizer.load_state_dict({k[6:]: data[k] for k in data.files if k.startswith("optim/")})
        if method is not None:
            method.load_state_dict({k[7:]: data[k] for k in data.files if k.startswith("method/")})
        return json.loads(str(data["progress"]))


def _dropout_generators(model) -> list:
    """The distinct random generators of the model's dropout layers."""
    from .layers import Dropout

    gens = {id(m.rng): m.rng for m in model.modules() if isinstance(m, Dropout)}
    return list(gens.values())


def evaluate(model, loader, layers, method=None, progress: bool = False) -> float:
    """Test accuracy of the model as trained: eval-mode BN and, with `method`, the sparse
    forward weights Top-K'd from the *current* weights (the last step changed them)."""
    from tqdm.auto import tqdm

    if method is not None:
        method.before_forward(0)  # iteration 0 always recomputes the thresholds
    hooks = [(lay.save_input, lay.grad_output_hook) for lay in layers]
    for lay in layers:
        lay.save_input = lay.grad_output_hook = None
    model.eval()
    correct = total = 0
    with tqdm(total=len(loader.dataset), desc="evaluating", unit="img", leave=False,
              disable=True if not progress else None) as bar:
        for x, y in loader:
            correct += int((model.forward(x).argmax(axis=1) == y).sum())
            total += len(y)
            bar.update(len(y))
    model.train()
    for lay, (s, g) in zip(layers, hooks):
        lay.save_input, lay.grad_output_hook = s, g
    return correct / max(total, 1)


class Trainer:
    """Builds everything a run needs from `TrainSettings`; `plan()` says what it will do,
    `run()` trains, evaluates and exports."""

    def __init__(self, settings: TrainSettings):
        s = settings
        self.train_set = load_dataset(s.dataset, "train", s.data_dir, synthetic_size=s.synthetic_size, seed=s.seed)
        self.test_set = load_dataset(s.dataset, "test", s.data_dir, synthetic_size=s.synthetic_size, seed=s.seed)
        batch = recipe(s.network).batch if s.batch is None else s.batch
        per_epoch = len(self.train_set) // batch if len(self.train_set) >= batch else 0
        s = self.settings = s.resolved(per_epoch=max(per_epoch, 1))
        self.network = build_network(s.network, image_size=s.image_size,
                                     num_classes=self.train_set.num_classes)
        size = self.network.image_size
        self.loader = Loader(self.train_set, s.batch, size, 3, train=True, seed=s.seed)
        if s.eval_limit:
            self.test_set.images = self.test_set.images[:s.eval_limit]
            self.test_set.labels = self.test_set.labels[:s.eval_limit]
        self.test_loader = Loader(self.test_set, s.batch, size, 3, train=False)  # memory: as a step
        self.iterations = s.iterations
        self.trace_at = tuple(sorted(set(s.trace_at))) or (self.iterations,)
        bad = [i for i in self.trace_at if not 1 <= i <= self.iterations]
        if bad:
            raise ValueError(f"trace_at: iteration {bad[0]} is outside 1..{self.iterations}")
        self.trace_network = self.network
        self.trace_loader = None
        if s.trace_image_size != size:  # record a separate iteration at the trace size
            try:
                self.trace_network = build_network(s.network, image_size=s.trace_image_size,
                                                   num_classes=self.train_set.num_classes)
            except ValueError as e:
                raise ValueError(f"trace_image_size: {e}") from None
            if not _same_weights(s.network, size, s.trace_image_size):
                raise ValueError(f"trace_image_size: {s.network}'s weights depend on the image size "
                                 f"(its classifier sees the feature map unpooled), so it can only "
                                 f"be recorded at the size it trains at, {size}")
            self.trace_loader = Loader(self.train_set, min(s.trace_batch, len(self.train_set)),
                                       s.trace_image_size, 3, train=True, seed=s.seed,
                                       drop_last=False, cache_bytes=0)
        self._check_memory()
        self._check_outputs()
        self.model = build_model(self.network, seed=s.seed, zero_init_residual=s.zero_init_residual)
        self.layers = weight_layers(self.model)
        self.optimizer = SGD(self.model.params(), lr=s.peak_lr, momentum=s.momentum, nesterov=s.nesterov,
                             weight_decay=s.weight_decay, decay_bn=s.decay_bn)
        self.schedule = LRSchedule(s.peak_lr, self.iterations, kind=s.schedule, warmup_iterations=s.warmup)
        self.method = make_method(s.method, s.sparsity, scope=s.topk_scope, topk_period=s.topk_period,
                                  **s.method_options)
        self.method.attach(self.layers, self.optimizer)

    def _check_outputs(self) -> None:
        """Fail now, not after training, if a trace or the run directory cannot be written
        where asked, or would replace something that is not ours."""
        for it in self.trace_at:
            check_trace_destination(self.trace_dir(it))
        out = self.settings.out_dir
        if len(self.trace_at) > 1 and out.exists() and (not out.is_dir() or (out / "manifest.yaml").exists()):
            raise TraceError(f"{out}: expected a directory for the iter-* traces, found "
                             + ("a trace" if out.is_dir() else "a file"))
        run = self.settings.run_path
        probe = nearest_existing(run)
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise TraceError(f"{run}: cannot write the log and checkpoint here ({probe} is not a "
                             "writable directory)")

    def _check_memory(self) -> None:
        """Refuse a run whose training step or recorded iteration cannot fit in this
        machine's memory (`recipes.peak_bytes`), before the model is built."""
        ram = physical_memory_bytes()
        if ram is None:
            return
        s = self.settings
        for what, net, batch in (("batch/image_size", self.network, s.batch),
                                 ("trace_batch/trace_image_size", self.trace_network, self.trace_batch)):
            need = peak_bytes(net, batch)
            if need > 0.9 * ram:
                raise ValueError(f"{what}: a step of {s.network} at {net.image_size}x{net.image_size}, "
                                 f"batch {batch}, needs about {need / 2**30:.1f} GiB, more than this "
                                 f"machine's {ram / 2**30:.1f} GiB; lower the batch or the image size")

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
        start, rows = 0, []
        if s.resume and not ckpt.is_file():
            raise ValueError(f"resume: no checkpoint at {ckpt} (run without --resume to start)")
        if s.resume:
            state = load_checkpoint(ckpt, self.model, self.optimizer, self.method)
            self._check_resumable(state.get("settings"), ckpt)
            start = state["iteration"]
            self.loader.set_state(state["loader"])
            for gen, saved in zip(_dropout_generators(self.model), state.get("dropout_rng", [])):
                gen.bit_generator.state = saved
            if log_path.is_file():
                rows = pd.read_csv(log_path).query("iteration <= @start").to_dict("records")
        traces = [self.trace_dir(i) for i in self.trace_at if i <= start]
        per_epoch = len(self.loader)
        bar = tqdm(total=self.iterations, initial=start, desc=s.name, unit="it",
                   disable=True if not progress else None)
        batches = self._batches()
        started = last_checkpoint = time.monotonic()
        elapsed = float(rows[-1].get("elapsed_s", 0.0)) if rows else 0.0  # before a resume
        elapsed = elapsed if np.isfinite(elapsed) else 0.0
        for it in range(start + 1, self.iterations + 1):
            x, y = next(batches)
            record = it in self.trace_at
            if record and self.trace_loader is not None:
                traces.append(self._record_at_trace_size(it, progress))
            record_here = record and self.trace_loader is None
            for lay in self.layers:
                lay.record = record_here
            self.method.before_forward(it - 1)
            logits = self.model.forward(x)
            loss, dlogits = softmax_cross_entropy(logits, y, s.label_smoothing)
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
                self._checkpoint(ckpt, log_path, rows, it)
                last_checkpoint = time.monotonic()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.2f}")
        bar.close()
        accuracy = evaluate(self.model, self.test_loader, self.layers, self.method, progress=progress)
        summary = {"settings": {k: (list(v) if isinstance(v, tuple) else v)
                                for k, v in asdict(s).items()},
                   "iterations": self.iterations, "test_accuracy": accuracy,
                   "traces": [str(p) for p in traces]}
        write_atomic(run_path / "summary.yaml", yaml.safe_dump(summary, sort_keys=False).encode())
        return TrainResult(accuracy, pd.DataFrame(rows), traces, self.iterations)

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
        """Write the layers' recorded iteration `it` as a trace, then free the copies."""
        s = self.settings
        try:
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
        if saved is None:
            raise ValueError(f"resume: {ckpt} does not record the settings it was trained with "
                             "(an older accelsim wrote it); start again without --resume")
        mine = json.loads(json.dumps(self._training_settings()))
        for key in TRAINING_FIELDS:
            if saved.get(key) != mine.get(key):
                raise ValueError(f"resume: {ckpt} was trained with {key} {saved.get(key)!r}, this "
                                 f"run has {mine.get(key)!r}; resume with the same settings")

    def _checkpoint(self, ckpt: Path, log_path: Path, rows: list, iteration: int) -> None:
        save_checkpoint(ckpt, self.model, self.optimizer,
                        {"iteration": iteration, "loader": self.loader.state(),
                         "settings": self._training_settings(),
                         "dropout_rng": [g.bit_generator.state for g in _dropout_generators(self.model)]},
                        self.method)
        write_atomic(log_path, pd.DataFrame(rows).to_csv(index=False).encode())


def train(settings: TrainSettings, progress: bool = False) -> TrainResult:
    """Train as `settings` say; returns test accuracy, the log and the trace paths."""
    return Trainer(settings).run(progress=progress)
