"""SGD with momentum and learning-rate schedules for the NumPy CNN trainer.

What this models: ``torch.optim.SGD`` (dampening 0) as SWAT trains with it, and the
usual warm-up / cosine / step learning-rate schedules. Units: the learning rate is
per iteration (one optimizer step); weight decay is the L2 coefficient added to the
gradient (``g = grad + weight_decay * w``); iterations are 0-based optimizer steps.

Parameters are any objects with ``.value`` (ndarray, updated in place), ``.grad``
(ndarray of the same shape, or None to skip the parameter in a step, as torch skips
parameters without a gradient), ``.decay`` (bool: False for BatchNorm gamma/beta and
biases) and a unique ``.name``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .kernels import _run_split


@numba.njit(cache=True, nogil=True)
def _sgd_kernel(w, grad, buf, lr, wd, momentum, nesterov, first):
    """One SGD step over flat arrays, in place, in w's precision, with the same operations
    in the same order as `SGD.step`'s NumPy fallback (so the results are bit-identical):
    g = grad + wd * w (wd > 0); buf = g (first) or buf * momentum + g; the update is
    g + momentum * buf (nesterov) or buf (or g without momentum); w -= lr * update."""
    t = w.dtype.type
    lr_, wd_, m_ = t(lr), t(wd), t(momentum)
    for i in range(w.shape[0]):
        g = grad[i] + wd_ * w[i] if wd > 0 else grad[i]
        if momentum > 0:
            b = g if first else buf[i] * m_ + g
            buf[i] = b
            g = g + m_ * b if nesterov else b
        w[i] -= lr_ * g


class SGD:
    """Stochastic gradient descent with momentum, exactly torch.optim.SGD's update.

    Per parameter w with gradient grad, each `step` (dampening 0):

    - g = grad + weight_decay * w, if weight decay applies to w: every parameter with
      ``decay=True``, and those with ``decay=False`` only when `decay_bn` is set;
    - with momentum > 0: buf = g on the parameter's first step, else
      buf = momentum * buf + g; then g = g + momentum * buf (nesterov) or g = buf;
    - w -= lr * g.

    The momentum buffers (one per parameter, same dtype as its value) are readable with
    `momentum_buffer` and saved with `state_dict` (a dict of arrays keyed by parameter
    name, np.savez-able).
    """

    def __init__(self, params: list, lr: float, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 0.0, decay_bn: bool = False):
        self.params = list(params)
        if not (lr >= 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        names = [p.name for p in self.params]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"parameter names must be unique, repeated: {', '.join(map(str, dup))}")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.decay_bn = bool(decay_bn)
        self._by_name = {p.name: p for p in self.params}
        self._buffers: dict[str, np.ndarray] = {}

    def _decay(self, param) -> float:
        if self.weight_decay and (param.decay or self.decay_bn):
            return self.weight_decay
        return 0.0

    def step(self, lr: float | None = None) -> None:
        """One update of every parameter that has a gradient.

        `lr`, when given, is used for this step and becomes ``self.lr``.
        """
        if lr is not None:
            if not (lr >= 0 and math.isfinite(lr)):
                raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
            self.lr = float(lr)
        lr = self.lr
        for p in self.params:
            grad = p.grad
            if grad is None:
                continue
            w = p.value
            if grad.shape != w.shape:
                raise ValueError(f"{p.name}: gradient shape {grad.shape} != value shape {w.shape}")
            wd = self._decay(p)
            buf = self._buffers.get(p.name)
            first = buf is None
            if (w.dtype == grad.dtype and w.dtype in (np.float32, np.float64)
                    and w.flags.c_contiguous and grad.flags.c_contiguous):
                if self.momentum and first:
                    buf = self._buffers[p.name] = np.empty_like(w)
                wf, gf = w.reshape(-1), grad.reshape(-1)
                bf = wf if buf is None else buf.reshape(-1)   # (unused without momentum)
                _run_split(lambda a, b: _sgd_kernel(wf[a:b], gf[a:b], bf[a:b], lr, wd,
                                                    self.momentum, self.nesterov, first),
                           wf.size, 3 * wf.size)
                continue
            g = grad + wd * w if wd else grad
            if self.momentum:
                if buf is None:
                    buf = np.array(g, dtype=w.dtype, copy=True)
                    self._buffers[p.name] = buf
                else:
                    buf *= self.momentum
                    buf += g
                g = g + self.momentum * buf if self.nesterov else buf
            w -= (lr * g).astype(w.dtype, copy=False)

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero (in place)."""
        for p in self.params:
            if p.grad is not None:
                p.grad[...] = 0

    def momentum_buffer(self, param) -> np.ndarray | None:
        """A read-only view of the momentum buffer of `param` (the object or its name).

        None before the parameter's first step, or without momentum.
        """
        name = param if isinstance(param, str) else param.name
        if name not in self._by_name:
            raise KeyError(f"no parameter {name!r} in this optimizer")
        buf = self._buffers.get(name)
        if buf is None:
            return None
        view = buf.view()
        view.flags.writeable = False
        return view

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the momentum buffers keyed by parameter name (np.savez-able).

        Parameters without a buffer yet (no step so far) are absent.
        """
        return {name: buf.copy() for name, buf in self._buffers.items()}

    def load_state_dict(self, state) -> None:
        """Restore buffers from `state_dict` (a dict or an np.load'ed .npz of it).

        Names not in the optimizer, or shapes that differ, raise ValueError; parameters
        missing from `state` get no buffer (as before their first step).
        """
        buffers = {}
        for name in state.keys():
            if name not in self._by_name:
                raise ValueError(f"optimizer state has an unknown parameter {name!r}")
            value = self._by_name[name].value
            arr = np.asarray(state[name])
            if arr.shape != value.shape:
                raise ValueError(f"optimizer state for {name!r} has shape {arr.shape}, "
                                 f"the parameter {value.shape}")
            buffers[name] = np.array(arr, dtype=value.dtype, copy=True)
        self._buffers = buffers


LR_KINDS = ("cosine", "step", "constant")


class LRSchedule:
    """The learning rate of each (0-based) iteration.

    - warm-up, for i < warmup_iterations: lr = base_lr * (i + 1) / warmup_iterations
      (linear, reaching base_lr at i = warmup_iterations - 1);
    - then, for i >= warmup_iterations, by `kind`:
      - "cosine": lr = final_lr + (base_lr - final_lr) * (1 + cos(pi * t)) / 2 with
        t = (i - warmup_iterations) / (total_iterations - warmup_iterations), so base_lr
        right after warm-up and final_lr at i = total_iterations;
      - "step": lr = base_lr * gamma ** k, k = the number of milestones m (fractions
        of total_iterations) with i >= floor(m * total_iterations + 0.5) (the
        ``milestone_iterations`` attribute);
      - "constant": lr = base_lr.
    Past total_iterations the value at total_iterations holds.
    """

    def __init__(self, base_lr: float, total_iterations: int, kind: str = "cosine",
                 warmup_iterations: int = 0, milestones: tuple[float, ...] = (0.5, 0.75),
                 gamma: float = 0.1, final_lr: float = 0.0):
        if kind not in LR_KINDS:
            raise ValueError(f"unknown schedule kind {kind!r} (expected one of: {', '.join(LR_KINDS)})")
        if not (base_lr >= 0 and math.isfinite(base_lr)):
            raise ValueError(f"base_lr must be a finite number >= 0, got {base_lr!r}")
        if isinstance(total_iterations, bool) or int(total_iterations) != total_iterations \
                or total_iterations < 1:
            raise ValueError(f"total_iterations must be an integer >= 1, got {total_iterations!r}")
        if isinstance(warmup_iterations, bool) or int(warmup_iterations) != warmup_iterations \
                or not 0 <= warmup_iterations <= total_iterations:
            raise ValueError(f"warmup_iterations must be an integer in 0..{total_iterations}, "
                             f"got {warmup_iterations!r}")
        milestones = tuple(float(m) for m in milestones)
        if any(not 0 < m <= 1 for m in milestones) or list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing fractions in (0, 1], got {milestones}")
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        if not (final_lr >= 0 and math.isfinite(final_lr)):
            raise ValueError(f"final_lr must be a finite number >= 0, got {final_lr!r}")
        self.base_lr = float(base_lr)
        self.total_iterations = int(total_iterations)
        self.kind = kind
        self.warmup_iterations = int(warmup_iterations)
        self.milestones = milestones
        self.milestone_iterations = tuple(math.floor(m * self.total_iterations + 0.5)
                                          for m in milestones)
        self.gamma = float(gamma)
        self.final_lr = float(final_lr)

    def __call__(self, iteration: int) -> float:
        if isinstance(iteration, bool) or int(iteration) != iteration or iteration < 0:
            raise ValueError(f"iteration must be an integer >= 0, got {iteration!r}")
        i = min(int(iteration), self.total_iterations)
        warm = self.warmup_iterations
        if i < warm:
            return self.base_lr * (i + 1) / warm
        if self.kind == "constant":
            return self.base_lr
        if self.kind == "step":
            k = sum(1 for m in self.milestone_iterations if i >= m)
            return self.base_lr * self.gamma ** k
        span = self.total_iterations - warm
        t = 1.0 if span == 0 else (i - warm) / span
        return self.final_lr + (self.base_lr - self.final_lr) * (1 + math.cos(math.pi * t)) / 2

    def __repr__(self) -> str:
        return (f"LRSchedule(base_lr={self.base_lr}, total_iterations={self.total_iterations}, "
                f"kind={self.kind!r}, warmup_iterations={self.warmup_iterations}, "
                f"milestones={self.milestones}, gamma={self.gamma}, final_lr={self.final_lr})")
