"""The NumPy SWAT trainer: train a zoo network with a sparsity method, export traces.

One loop (iterations are counted from 1):

    for it in 1..N:   x, y = next batch
                      method.before_forward(it)        # Top-K hooks on every conv/fc
                      logits = model(x); loss = CE(logits, y)
                      model.backward(dloss); method.after_backward(it)
                      sgd.step(lr(it))
                      if it in trace_at: export the recorded iteration as a trace

Files (all written atomically: temporary file or directory, then rename):
- `<run_dir>/log.csv`: iteration, epoch, loss, train_accuracy, lr, and per conv/fc layer
  the measured weight sparsity (`w:<layer>`) and saved-activation sparsity (`a:<layer>`);
- `<run_dir>/checkpoint.npz`: model, optimizer and progress, every `checkpoint_every`
  iterations and at the end (no pickles); `resume=True` continues from it;
- `<run_dir>/summary.yaml`: test accuracy and where the traces went;
- the traces: `out` when one iteration is traced, else `out/iter-<I>` per iteration.
Ctrl-C leaves the last checkpoint and every finished trace intact (nothing is written
in place); the log keeps what the last checkpoint covers.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from simulator.trace import write_atomic

from .data import Loader, load_dataset
from .export import export_trace
from .layers import softmax_cross_entropy
from .models import build_model, weight_layers
from .networks import build_network
from .optim import SGD, LRSchedule
from .sparsity import make_method


@dataclass(frozen=True)
class TrainSettings:
    """Everything a training run depends on (learning rates in SGD units, sizes in pixels)."""

    network: str
    method: str = "swat-u"
    sparsity: float = 0.8
    iterations: int | None = None      # total SGD steps; or
    epochs: float | None = None        # passes over the training split (default 1)
    batch: int = 64
    image_size: int | None = None      # default: the network's
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_bn: bool = False
    label_smoothing: float = 0.0
    schedule: str = "cosine"
    warmup: int = 0                    # iterations of linear warm-up
    topk_scope: str = "NCHW"
    topk_period: int = 1
    trace_batch: int = 8
    trace_at: tuple[int, ...] = ()     # default: the last iteration
    out: str | None = None             # default: traces/<network>-<method>-<sparsity %>
    run_dir: str | None = None         # default: runs/<name of out>
    seed: int = 0
    checkpoint_every: int = 100
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


@dataclass
class TrainResult:
    test_accuracy: float
    log: pd.DataFrame
    traces: list[Path]
    iterations: int


def save_checkpoint(path: Path, model, optimizer, progress: dict) -> None:
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays |= {f"optim/{k}": v for k, v in optimizer.state_dict().items()}
    arrays["progress"] = np.array(json.dumps(progress))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())


def load_checkpoint(path: Path, model, optimizer) -> dict:
    with np.load(path, allow_pickle=False) as data:
        model.load_state_dict({k[6:]: data[k] for k in data.files if k.startswith("model/")})
        optimizer.load_state_dict({k[6:]: data[k] for k in data.files if k.startswith("optim/")})
        return json.loads(str(data["progress"]))


def evaluate(model, loader, layers, method=None) -> float:
    """Test accuracy of the model as trained: eval-mode BN and, with `method`, the sparse
    forward weights Top-K'd from the *current* weights (the last step changed them)."""
    if method is not None:
        method.before_forward(0)  # iteration 0 always recomputes the thresholds
    hooks = [(lay.save_input, lay.grad_output_hook) for lay in layers]
    for lay in layers:
        lay.save_input = lay.grad_output_hook = None
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model.forward(x).argmax(axis=1) == y).sum())
        total += len(y)
    model.train()
    for lay, (s, g) in zip(layers, hooks):
        lay.save_input, lay.grad_output_hook = s, g
    return correct / max(total, 1)


class Trainer:
    """Builds everything a run needs from `TrainSettings`; `run()` trains and exports."""

    def __init__(self, settings: TrainSettings):
        s = self.settings = settings
        self.train_set = load_dataset(s.dataset, "train", s.data_dir, synthetic_size=s.synthetic_size, seed=s.seed)
        self.test_set = load_dataset(s.dataset, "test", s.data_dir, synthetic_size=s.synthetic_size, seed=s.seed)
        self.network = build_network(s.network, image_size=s.image_size,
                                     num_classes=self.train_set.num_classes)
        size = self.network.image_size
        self.loader = Loader(self.train_set, s.batch, size, 3, train=True, seed=s.seed)
        if s.eval_limit:
            self.test_set.images = self.test_set.images[:s.eval_limit]
            self.test_set.labels = self.test_set.labels[:s.eval_limit]
        self.test_loader = Loader(self.test_set, max(s.batch, 128), size, 3, train=False)
        per_epoch = len(self.loader)
        if s.iterations is not None:
            self.iterations = s.iterations
        else:
            self.iterations = max(1, round((s.epochs or 1.0) * per_epoch))
        self.trace_at = tuple(sorted(set(s.trace_at))) or (self.iterations,)
        bad = [i for i in self.trace_at if not 1 <= i <= self.iterations]
        if bad:
            raise ValueError(f"trace_at: iteration {bad[0]} is outside 1..{self.iterations}")
        self.model = build_model(self.network, seed=s.seed)
        self.layers = weight_layers(self.model)
        self.optimizer = SGD(self.model.params(), lr=s.lr, momentum=s.momentum, nesterov=s.nesterov,
                             weight_decay=s.weight_decay, decay_bn=s.decay_bn)
        self.schedule = LRSchedule(s.lr, self.iterations, kind=s.schedule, warmup_iterations=s.warmup)
        self.method = make_method(s.method, s.sparsity, scope=s.topk_scope, topk_period=s.topk_period,
                                  **s.method_options)
        self.method.attach(self.layers, self.optimizer)

    def trace_dir(self, iteration: int) -> Path:
        out = self.settings.out_dir
        return out if len(self.trace_at) == 1 else out / f"iter-{iteration:06d}"

    def run(self, progress: bool = False) -> TrainResult:
        from tqdm.auto import tqdm

        s, run_path = self.settings, self.settings.run_path
        ckpt, log_path = run_path / "checkpoint.npz", run_path / "log.csv"
        start, rows = 0, []
        if s.resume and not ckpt.is_file():
            raise ValueError(f"resume: no checkpoint at {ckpt} (run without --resume to start)")
        if s.resume:
            progress = load_checkpoint(ckpt, self.model, self.optimizer)
            start = progress["iteration"]
            self.loader.set_state(progress["loader"])
            if log_path.is_file():
                rows = pd.read_csv(log_path).query("iteration <= @start").to_dict("records")
        traces = [self.trace_dir(i) for i in self.trace_at if i <= start]
        per_epoch = len(self.loader)
        bar = tqdm(total=self.iterations, initial=start, desc=s.name, unit="it",
                   disable=True if not progress else None)
        batches = self._batches()
        for it in range(start + 1, self.iterations + 1):
            x, y = next(batches)
            record = it in self.trace_at
            for lay in self.layers:
                lay.record = record
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
                   "train_accuracy": acc, "lr": lr}
            for name, (ws, xs) in self.method.measured.items():
                row[f"w:{name}"], row[f"a:{name}"] = ws, xs
            rows.append(row)
            if record:
                for lay in self.layers:
                    lay.record = False
                traces.append(export_trace(
                    self.layers, self.trace_dir(it), network=self.network.name, method=s.method,
                    sparsity=s.sparsity, trace_batch=min(s.trace_batch, len(y)),
                    meta={"iteration": it, "dataset": s.dataset, "seed": s.seed,
                          "image_size": self.network.image_size, "batch": min(s.trace_batch, len(y)),
                          "train_batch": s.batch}))
            if it % s.checkpoint_every == 0 or it == self.iterations:
                self._checkpoint(ckpt, log_path, rows, it)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.2f}")
        bar.close()
        accuracy = evaluate(self.model, self.test_loader, self.layers, self.method)
        summary = {"settings": {k: (list(v) if isinstance(v, tuple) else v)
                                for k, v in asdict(s).items()},
                   "iterations": self.iterations, "test_accuracy": accuracy,
                   "traces": [str(p) for p in traces]}
        write_atomic(run_path / "summary.yaml", yaml.safe_dump(summary, sort_keys=False).encode())
        return TrainResult(accuracy, pd.DataFrame(rows), traces, self.iterations)

    def _batches(self):
        while True:  # the training loader keeps its place across epochs (and checkpoints)
            yield from self.loader

    def _checkpoint(self, ckpt: Path, log_path: Path, rows: list, iteration: int) -> None:
        save_checkpoint(ckpt, self.model, self.optimizer,
                        {"iteration": iteration, "loader": self.loader.state()})
        write_atomic(log_path, pd.DataFrame(rows).to_csv(index=False).encode())


def train(settings: TrainSettings, progress: bool = False) -> TrainResult:
    """Train as `settings` say; returns test accuracy, the log and the trace paths."""
    return Trainer(settings).run(progress=progress)
