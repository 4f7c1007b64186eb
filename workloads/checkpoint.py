"""Checkpoints of a training run: written atomically, read all or nothing.

A checkpoint is an .npz archive (no pickles) of the model's parameters and buffers
(`model/<name>`), the optimizer's momentum (`optim/<name>`), the sparsity method's
per-layer state (`method/<attr>/<layer>`) and a JSON progress record. Reading one for
`--resume` checks, before anything is loaded, that it is a regular file of plausible
size (`checkpoint_limit`), a complete archive whose arrays unpack to no more than that,
and that every array has the name, shape and dtype it is loaded into, with finite values;
anything else is a `CheckpointError` naming the file.
"""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from simulator.outputs import file_kind, write_atomic

from .settings import TrainingError

class CheckpointError(TrainingError):
    """A checkpoint or log that cannot be resumed from; the message names the file."""


def save_checkpoint(path: Path, model, optimizer, progress: dict, method=None) -> None:
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays |= {f"optim/{k}": v for k, v in optimizer.state_dict().items()}
    if method is not None:
        arrays |= {f"method/{k}": v for k, v in method.state_dict().items()}
    arrays["progress"] = np.array(json.dumps(progress))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())


def _model_state(model) -> dict[str, np.ndarray]:
    state = {n: p.value for n, p in model.named_params()}
    state.update(model.named_buffers())
    return state


def checkpoint_limit(model, method=None, batch: int = 1) -> int:
    """The most bytes a checkpoint of `model` (with `method`'s state at `batch`) can hold:
    the parameters and buffers, a momentum buffer per parameter, the method's per-layer
    thresholds (at most one per output-input channel pair of a weight, and one per
    sample and channel of an input) and 1 MiB for the progress record and the archive."""
    params = sum(p.value.nbytes for p in model.params())
    model_bytes = sum(a.nbytes for a in _model_state(model).values())
    members = len(_model_state(model)) + len(model.params()) + 1
    thresholds = 0
    for lay in (method.layers if method is not None else ()):
        shape = lay.weight.value.shape
        thresholds += 8 * (2 * int(np.prod(shape[:2])) + batch * lay.spec.in_channels) + 8
        members += len(method.STATE)
    return model_bytes + params + thresholds + 2**20 + 512 * members


def read_checkpoint(path: str | os.PathLike, model, method=None, batch: int = 1) -> tuple[dict, dict]:
    """The arrays and the progress record of the checkpoint at `path`, read without loading
    anything: a regular file (a FIFO or device is never opened) of at most
    `checkpoint_limit` bytes, a zip archive of .npy arrays (no pickles) that unpacks to at
    most that much, with a JSON progress record. CheckpointError naming the file
    otherwise ("corrupt or truncated", or "not a checkpoint of this run")."""
    path = Path(path)

    def fail(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: {why}")

    try:
        st = os.stat(path)
    except OSError as e:
        raise fail(f"cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise fail(f"expected a checkpoint file, found {file_kind(st.st_mode)}")
    limit = checkpoint_limit(model, method, batch)
    if st.st_size == 0:
        raise fail("corrupt or truncated (an empty file)")
    if st.st_size > limit:
        raise fail(f"not a checkpoint of this run ({st.st_size:,} bytes, more than the {limit:,} "
                   f"a checkpoint of this model can have)")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise fail(f"cannot read ({e.strerror or e})") from None
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        raise fail(f"corrupt or truncated (not a complete zip archive: {e})") from None
    names = [i.filename for i in infos]
    if len(set(names)) != len(names) or not all(n.endswith(".npy") for n in names):
        raise fail("not a checkpoint of this run (not an archive of distinct .npy arrays)")
    unpacked = sum(i.file_size for i in infos)
    if unpacked > limit:
        raise fail(f"not a checkpoint of this run (its arrays unpack to {unpacked:,} bytes, more "
                   f"than the {limit:,} a checkpoint of this model can have)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:  # whatever a damaged archive or .npy header raises
        raise fail(f"corrupt or truncated ({type(e).__name__}: {str(e)[:100]})") from None
    progress = arrays.pop("progress", None)
    if progress is None:
        raise fail("not a checkpoint of this run (no progress record)")
    try:
        record = json.loads(str(progress)) if progress.dtype.kind == "U" and progress.ndim == 0 else None
    except (ValueError, RecursionError):
        record = None
    if not isinstance(record, dict):
        raise fail("corrupt (its progress record is not a JSON object)")
    return arrays, record


def check_checkpoint_arrays(path: str | os.PathLike, arrays: dict, model, optimizer,
                            method=None, batch: int = 1) -> None:
    """CheckpointError naming `path` unless `arrays` (from `read_checkpoint`) hold exactly
    the model's parameters and buffers and, at most, a momentum buffer per parameter and
    the method's per-layer state, each with the shape and dtype it is loaded into, and
    finite values (thresholds may be +inf: nothing kept)."""
    def fail(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: {why}")

    def foreign(why: str) -> CheckpointError:
        return fail(f"not a checkpoint of this run ({why})")

    groups: dict[str, dict[str, np.ndarray]] = {"model": {}, "optim": {}, "method": {}}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group not in groups or not name:
            raise foreign(f"unexpected array {key[:60]!r}")
        groups[group][name] = value
    state = _model_state(model)
    missing = sorted(set(state) - set(groups["model"]))
    unexpected = sorted(set(groups["model"]) - set(state))
    if missing or unexpected:
        raise foreign(f"model arrays missing {missing[:3]}, unexpected {unexpected[:3]}")
    params = {p.name: p.value for p in optimizer.params}
    unexpected = sorted(set(groups["optim"]) - set(params))
    if unexpected:
        raise foreign(f"optimizer arrays for unknown parameters {unexpected[:3]}")
    for group, targets in (("model", state), ("optim", params)):
        for name, value in groups[group].items():
            target = targets[name]
            if value.shape != target.shape or value.dtype != target.dtype:
                raise foreign(f"{group}/{name}: expected {target.dtype} {list(target.shape)}, got "
                              f"{value.dtype} {list(value.shape)}")
            if not np.isfinite(value).all():
                raise fail(f"corrupt ({group}/{name} holds non-finite values)")
    if method is None:
        return
    layers = {lay.spec.name: lay for lay in method.layers}
    attrs = [a for a in method.STATE if hasattr(method, a)]
    for key, value in groups["method"].items():
        attr, _, name = key.partition("/")
        if attr not in attrs or name not in layers:
            raise foreign(f"method/{key[:60]}: not state of {method.name} on this network")
        lay = layers[name]
        if value.dtype.kind != "f" or np.isnan(value).any():
            raise foreign(f"method/{key}: expected floating-point numbers, got {value.dtype}")
        if attr == "layer_sparsity":
            ok = value.ndim == 0 and 0.0 <= float(value) < 1.0
        elif attr == "input_threshold":
            x = lay.spec.input_shape(batch)
            ok = value.ndim == len(x) and all(t in (1, d) for t, d in zip(value.shape[1:], x[1:]))
        else:
            w = lay.weight.value.shape
            ok = value.ndim <= len(w) and all(t in (1, d) for t, d in zip(value.shape, w))
        if not ok:
            raise foreign(f"method/{key}: shape {list(value.shape)} does not fit layer {name}")


def load_checkpoint(path: Path, model, optimizer, method=None, batch: int = 1) -> dict:
    """Load the checkpoint at `path` into the model, optimizer and method, all or nothing
    (`read_checkpoint` and `check_checkpoint_arrays` first); returns its progress record."""
    arrays, progress = read_checkpoint(path, model, method, batch)
    check_checkpoint_arrays(path, arrays, model, optimizer, method, batch)
    _load_arrays(arrays, model, optimizer, method)
    return progress


def _load_arrays(arrays: dict, model, optimizer, method=None) -> None:
    part = {g: {k[len(g) + 1:]: v for k, v in arrays.items() if k.startswith(g + "/")}
            for g in ("model", "optim", "method")}
    model.load_state_dict(part["model"])
    optimizer.load_state_dict(part["optim"])
    if method is not None:
        method.load_state_dict(part["method"])
