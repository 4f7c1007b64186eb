"""Per-network training defaults that finish on a 2-core machine, and a time estimate.

`accelsim trace-from-training NETWORK` with no options trains with `recipe(NETWORK)`:
a training resolution, batch and iteration count chosen so that training, evaluation
and recording took about 20-25 minutes on this project's 2-core machine when chosen, and
13-18 minutes since the Winograd convolutions (see the README's
trace-from-training section for the measured times), and records the trace at the
network's native resolution (224x224 for the ImageNet-shaped networks). The long runs
stay one option away (`--epochs`, `--image-size 224`).

The learning rate is given for batch 256 and scaled linearly to the batch (Goyal et
al. 2017, "Accurate, large minibatch SGD"), after a linear warm-up over the first
`warmup_fraction` of the iterations.

`estimate_seconds` predicts the wall time of a run from its multiply-accumulates
(MACs): a training step costs 3x the forward MACs (forward, input gradient, weight
gradient), run at `EFFICIENCY` times the machine's float32 matrix-multiply rate (measured
in 50 ms when asked), plus a fixed cost per layer and per step. The per-layer and per-step
costs were fitted to ResNet-18/50 steps at 32x32 and 64x64, batch 32, on the 2-core
machine (2026-12-01); `EFFICIENCY` was refitted to the ResNet-18/34/50 and VGG-16 steps
at 64x64 after the Winograd convolutions made the 3x3 layers faster (2026-12-02).
`benchmarks/bench_recipes.py` compares it with measured steps: within about 15% for the
ImageNet-shaped ResNets, VGG-16 and DenseNet-121; 10-75% high for the CIFAR-shaped ResNets
and WRN-16-8; 40% low for MobileNet-v2, whose many small layers cost more than their MACs
say. The estimate is a guide; the progress bar's rate is the measurement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the settings module imports this one
    from .settings import TrainSettings

EFFICIENCY = 0.49           # the trainer's MAC rate / the machine's sgemm MAC rate
SECONDS_PER_LAYER = 0.003   # per conv/fc layer per training step (forward + backward)
SECONDS_PER_STEP = 0.05     # per training step (data, Top-K bookkeeping, optimizer)
TRACE_WRITE_BYTES_PER_S = 40e6  # np.savez_compressed of float32 activations


@dataclass(frozen=True)
class Recipe:
    """Training defaults of one network (sizes in pixels, lr at batch 256)."""

    image_size: int
    batch: int
    iterations: int | None      # None: one epoch
    lr_at_256: float = 0.1
    trace_batch: int = 1
    warmup_fraction: float = 0.05


# Iterations chosen from measured step times at these sizes (2 cores, 2026-12-01): about 20
# minutes of training for the large networks then, 13-18 now; simple-cnn keeps its one epoch.
RECIPES: dict[str, Recipe] = {
    "simple-cnn": Recipe(28, 64, None, lr_at_256=0.4, trace_batch=8),
    "resnet18": Recipe(64, 32, 2000),
    "resnet34": Recipe(64, 32, 1000),
    "resnet50": Recipe(64, 32, 800),
    "resnet18-cifar": Recipe(32, 32, 800, trace_batch=4),
    "resnet34-cifar": Recipe(32, 32, 350, trace_batch=4),
    "resnet50-cifar": Recipe(32, 32, 250, trace_batch=4),
    "wrn-16-8": Recipe(32, 32, 300, trace_batch=4),
    "vgg16": Recipe(64, 32, 250, lr_at_256=0.01),
    "vgg16-bn": Recipe(64, 32, 250),
    "densenet121": Recipe(64, 32, 800),
    "mobilenet-v2": Recipe(64, 32, 2000, lr_at_256=0.05),
}


def recipe(network: str) -> Recipe:
    """The training defaults of `network` (a generic 64x64 recipe for unlisted ones)."""
    return RECIPES.get(network, Recipe(64, 32, 500))


def warmup_iterations(iterations: int, fraction: float) -> int:
    """Linear warm-up length: `fraction` of the run, at least 1 step when the run has 10."""
    return min(iterations, max(1 if iterations >= 10 else 0, round(fraction * iterations)))


def scaled_lr(lr_at_256: float, batch: int) -> float:
    """The linear scaling rule: lr = lr_256 * batch / 256."""
    return lr_at_256 * batch / 256


_SGEMM_MACS_PER_S: float | None = None


def sgemm_macs_per_second() -> float:
    """This machine's float32 matrix-multiply rate in MACs/s (best of 3, 1024^3)."""
    global _SGEMM_MACS_PER_S
    if _SGEMM_MACS_PER_S is None:
        a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
        a @ a
        best = min(_timed(lambda: a @ a) for _ in range(3))
        _SGEMM_MACS_PER_S = 1024 ** 3 / max(best, 1e-6)
    return _SGEMM_MACS_PER_S


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


@dataclass(frozen=True)
class Estimate:
    """Predicted wall time of a run, in seconds, by stage."""

    train: float
    evaluate: float
    record: float

    @property
    def total(self) -> float:
        return self.train + self.evaluate + self.record


def estimate_seconds(train_macs_per_sample: int, layers: int, batch: int, iterations: int,
                     eval_images: int, trace_macs_per_sample: int, trace_batch: int,
                     trace_bytes: int, rate: float | None = None) -> Estimate:
    """The run's predicted time (see the module docstring); `rate` in MACs/s defaults to
    `EFFICIENCY` x this machine's sgemm rate."""
    rate = EFFICIENCY * sgemm_macs_per_second() if rate is None else rate
    step = 3 * train_macs_per_sample * batch / rate + layers * SECONDS_PER_LAYER + SECONDS_PER_STEP
    evaluate = eval_images * train_macs_per_sample / rate + (eval_images / 128) * layers * SECONDS_PER_LAYER / 2
    record = (3 * trace_macs_per_sample * trace_batch / rate + layers * SECONDS_PER_LAYER
              + trace_bytes / TRACE_WRITE_BYTES_PER_S)
    return Estimate(train=iterations * step, evaluate=evaluate, record=record)


def activation_bytes(network, batch: int) -> int:
    """float32 bytes of every conv/fc layer's input and output for `batch` samples."""
    return 4 * batch * sum(lay.in_channels * lay.in_hw[0] * lay.in_hw[1]
                           + lay.out_channels * lay.out_hw[0] * lay.out_hw[1] for lay in network.layers)


def peak_bytes(network, batch: int) -> int:
    """A generous bound on a training step's peak memory: 300 MB of interpreter, numba and
    data, 4x the parameters (weights, gradients, momentum, sparse copies) and 3x the
    activations (kept for backward, their gradients, unfold buffers). Measured peaks on the
    2-core machine were 0.5-0.7 of it (ResNet-18/50 at 32-224 pixels)."""
    params = sum(lay.param_count for lay in network.layers)
    return 300 * 2**20 + 16 * params + 3 * activation_bytes(network, batch)


def format_duration(seconds: float) -> str:
    """'about 40 s', 'about 12 minutes', 'about 2.5 hours'."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 5400:
        return f"about {round(seconds / 60)} minutes"
    return f"about {seconds / 3600:.1f} hours"


def _nominal_data_shapes(s: TrainSettings) -> dict[str, tuple[int, int, int, int]]:
    """[N, H, W, C] of each split of `s.dataset` as stored, before loading it (the files'
    own sizes are checked when they are read, and the memory again with them)."""
    if s.dataset == "synthetic":
        return {"train": (s.synthetic_size, 32, 32, 3), "test": (max(1, s.synthetic_size // 4), 32, 32, 3)}
    if s.dataset == "cifar10":
        return {"train": (50_000, 32, 32, 3), "test": (10_000, 32, 32, 3)}
    return {"train": (60_000, 28, 28, 1), "test": (10_000, 28, 28, 1)}


def memory_needed(s: TrainSettings, network, trace_network, stored: dict) -> dict[str, int]:
    """The estimated peak memory in bytes, by part, of a run with the resolved settings `s`
    (`network` and `trace_network`: its specs at the training and the trace size, the same
    object when they are equal; `stored`: the data set's [N, H, W, C] per split, as stored),
    from `recipes.peak_bytes` for the steps:

    - "train": a training step at `batch` and `image_size` (evaluation runs the same
      model at the same batch, forward only, so it needs less);
    - "trace": the recorded iteration: at `trace_image_size` a separate forward and
      backward pass on `trace_batch` images (counted on top of the training step's
      activations, which may still be held), plus the recorded tensors and their
      export buffers (twice their float32 size);
    - "data": the data set as stored, the copies resized to `image_size` that the
      loaders keep (each at most `data.DEFAULT_CACHE_BYTES`) and the resizing scratch."""
    from .data import DEFAULT_CACHE_BYTES

    train = peak_bytes(network, s.batch)
    separate = trace_network is not network
    trace_batch = min(s.trace_batch, stored["train"][0] if separate else s.batch)
    recorded = 4 * sum(trace_batch * (2 * lay.in_hw[0] * lay.in_hw[1] * lay.in_channels
                                      + lay.out_hw[0] * lay.out_hw[1] * lay.out_channels)
                       + lay.weight_count for lay in trace_network.layers)
    trace = 2 * recorded + (3 * activation_bytes(trace_network, trace_batch) if separate else 0)
    data, size = 0, network.image_size
    for n, h, w, c in stored.values():
        data += n * h * w * c
        resized = n * size * size * c
        if (h, w) != (size, size):
            data += resized if resized <= DEFAULT_CACHE_BYTES else 0
    if any((h, w) != (size, size) for _, h, w, _ in stored.values()):
        data += 3 * 64 * 2**20  # resizing, in chunks of 64 MiB of float32 temporaries
    return {"train": train, "trace": trace, "data": data}
