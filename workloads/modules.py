"""The parameters and the module tree of the NumPy trainer (`workloads.layers` re-exports them).

`Param` is a named parameter with its gradient; `Module` is the PyTorch-like base class:
children, training mode, parameter naming by dotted path, state dicts. Units: elements;
dtypes float32 (default) or float64. See `workloads.layers` for the conventions every
module follows (forward caches, backward accumulates into ``grad``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import kernels as _kernels

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in _FLOATS:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


# ================================================================================================
# Parameters and the module tree
# ================================================================================================

class Param:
    """A trainable tensor: `value`, its gradient `grad` (same shape and dtype, zeroed at
    creation, accumulated by backward), and whether weight decay applies (`decay`).
    `name` is the dotted path from the root module (the `state_dict` key)."""

    def __init__(self, name: str, value: np.ndarray, decay: bool = True):
        self.name = name
        self.value = value
        self.grad = np.zeros_like(value)
        self.decay = bool(decay)

    def __repr__(self) -> str:
        return f"Param({self.name!r}, shape={self.value.shape}, dtype={self.value.dtype})"


class Module:
    """Base class: a node of the module tree with forward and backward passes.

    Sub-modules and `Param`s assigned as attributes are registered in assignment order
    (like torch's ``nn.Module``); `_buffer_names` lists non-trainable state arrays that
    go into `state_dict` (BatchNorm's running statistics).
    """

    _buffer_names: tuple[str, ...] = ()

    def __init__(self):
        self.__dict__.setdefault("_modules", {})
        self.__dict__.setdefault("_params", {})
        self.__dict__.setdefault("_parent", None)
        self.training = True

    # -- registration ---------------------------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        mods = d.setdefault("_modules", {})
        params = d.setdefault("_params", {})
        d.setdefault("_parent", None)
        mods.pop(name, None)
        params.pop(name, None)
        if isinstance(value, Module):
            if value._parent is not None and value._parent is not self:
                raise ValueError(f"module {type(value).__name__} already belongs to another "
                                 "module (sharing a module between parents is not supported)")
            object.__setattr__(value, "_parent", self)
            mods[name] = value
        elif isinstance(value, Param):
            params[name] = value
        object.__setattr__(self, name, value)
        if isinstance(value, (Module, Param)):
            self._rename_params()

    def _rename_params(self) -> None:
        root = self
        while root._parent is not None:
            root = root._parent
        for name, p in root.named_params():
            p.name = name

    # -- tree -----------------------------------------------------------------------------------
    def named_children(self) -> list[tuple[str, Module]]:
        return list(self.__dict__.get("_modules", {}).items())

    def children(self) -> list[Module]:
        return [m for _, m in self.named_children()]

    def modules(self) -> Iterator[Module]:
        """Pre-order, recursive, self first."""
        yield self
        for child in self.children():
            yield from child.modules()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_params(self, prefix: str = "") -> list[tuple[str, Param]]:
        """(dotted name, Param), own parameters first, then each child's, recursively."""
        out = [(f"{prefix}.{n}" if prefix else n, p)
               for n, p in self.__dict__.get("_params", {}).items()]
        for name, child in self.named_children():
            out.extend(child.named_params(f"{prefix}.{name}" if prefix else name))
        return out

    def params(self) -> list[Param]:
        """All parameters, recursive, in a deterministic order (see `named_params`)."""
        return [p for _, p in self.named_params()]

    def named_buffers(self, prefix: str = "") -> list[tuple[str, np.ndarray]]:
        out = [(f"{prefix}.{n}" if prefix else n, getattr(self, n)) for n in self._buffer_names]
        for name, child in self.named_children():
            out.extend(child.named_buffers(f"{prefix}.{name}" if prefix else name))
        return out

    # -- modes and gradients ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.params():
            p.grad[...] = 0

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of all parameters and buffers keyed by dotted path (np.savez-able)."""
        out = {n: p.value.copy() for n, p in self.named_params()}
        for n, b in self.named_buffers():
            out[n] = b.copy()
        return out

    def load_state_dict(self, state) -> None:
        """Copy `state` (a dict or an np.load'ed .npz) into the parameters and buffers, in
        place. Missing or unexpected keys and shape mismatches raise KeyError / ValueError."""
        targets = {n: p.value for n, p in self.named_params()}
        targets.update(self.named_buffers())
        keys = set(state.keys())
        missing = sorted(set(targets) - keys)
        unexpected = sorted(keys - set(targets))
        if missing or unexpected:
            raise KeyError(f"state_dict mismatch: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
        arrays = {name: np.asarray(state[name]) for name in targets}   # an .npz reads once
        for name, target in targets.items():
            if arrays[name].shape != target.shape:
                raise ValueError(f"state_dict[{name!r}] has shape {arrays[name].shape}, "
                                 f"the module {target.shape}")
        for name, target in targets.items():
            target[...] = arrays[name]

    # -- passes -----------------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def __repr__(self) -> str:
        kids = self.named_children()
        if not kids:
            return f"{type(self).__name__}({self.extra_repr()})"
        body = "\n".join(f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in kids)
        return f"{type(self).__name__}(\n{body}\n)"

    def extra_repr(self) -> str:
        return ""


def _need_cache(module: Module, cache):
    if cache is None:
        raise RuntimeError(f"{type(module).__name__}.backward called without a forward pass "
                           "before it")
    return cache


def _pieces(count: int, per_chunk: int = 1, limit: int | None = None) -> int:
    """How many pieces to cut a pass over `count` samples (channels, elements) into for
    `_run_split`: `PIECES_PER_WORKER` per worker, but no more than whole `per_chunk`s (a
    conv's chunk of samples, which sizes its BLAS calls) fit, and at most `limit` if given."""
    pieces = min(_kernels.PIECES_PER_WORKER * _kernels._WORKERS, max(1, count // per_chunk))
    return pieces if limit is None else min(pieces, limit)
