"""The trace: the contract between the trainer (or a synthetic workload) and the simulator.

A trace is what the accelerator sees in one training iteration, layer by layer:
the layer's shape (`LayerSpec`) and its tensors (`TraceLayer`). On disk it is a
directory with `manifest.yaml` and one compressed `.npz` per layer, read with
`allow_pickle=False` only (see `traces/README.md`). Synthetic workloads build the
same in-memory `Trace` without touching disk, so the simulator cannot tell them apart.

Units: channel counts and spatial sizes are element counts; tensors are float32
(the manifest's `dtype`) in NCHW / OIHW layout; `macs` are multiply-accumulates.
"""

from __future__ import annotations

import math
import os
import shutil
import stat
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from . import safe_yaml
from .outputs import (OutputError, check_name_length, make_temp_dir, nearest_existing,  # noqa: F401
                      probe_output_dir, replace_directory, write_atomic)

FORMAT_VERSION = 1
TENSORS = ("weight", "input", "input_saved", "grad_output")
KINDS = ("conv", "fc")


class TraceError(ValueError):
    """A trace on disk is missing, malformed, or of a format this reader does not know."""


@dataclass(frozen=True)
class LayerSpec:
    """Shape of one conv or fc layer. fc layers are 1x1 convolutions on a 1x1 input.

    `kernel`, `stride`, `padding`, `dilation` are square (same on both axes);
    `in_hw` and `out_hw` are (height, width) in elements.
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    in_hw: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    bias: bool = False

    def __post_init__(self):
        def fail(key: str, expected: str) -> ValueError:
            return ValueError(f"layer {safe_yaml.cut(repr(self.name))}: {key}: expected {expected}, "
                              f"got {safe_yaml.cut(repr(getattr(self, key)))}")

        if not isinstance(self.name, str) or not self.name:
            raise fail("name", "a non-empty string")
        if self.kind not in KINDS:
            raise fail("kind", f"one of {', '.join(KINDS)}")
        minimum = {"in_channels": 1, "out_channels": 1, "kernel": 1, "stride": 1, "padding": 0,
                   "dilation": 1, "groups": 1}
        for key, low in minimum.items():
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise fail(key, f"an integer >= {low}")
            object.__setattr__(self, key, int(v))
        if not isinstance(self.bias, (bool, np.bool_)):
            raise fail("bias", "true or false")
        def pair(key: str) -> None:
            v = getattr(self, key)
            if (not isinstance(v, (tuple, list)) or len(v) != 2
                    or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i >= 1 for i in v)):
                raise fail(key, "[height, width], two integers >= 1")
            object.__setattr__(self, key, tuple(int(i) for i in v))

        pair("in_hw")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise fail("groups", "a divisor of in_channels and out_channels")
        if self.kind == "fc" and (self.kernel, self.stride, self.padding, self.dilation, self.groups,
                                  self.in_hw) != (1, 1, 0, 1, 1, (1, 1)):
            raise fail("kind", "conv for a layer with a kernel, stride, padding, groups or "
                       "spatial size (fc layers are 1x1 convolutions on a 1x1 input)")
        expected = tuple(conv_output_size(i, self.kernel, self.stride, self.padding, self.dilation)
                         for i in self.in_hw)
        if min(expected) < 1:
            raise fail("in_hw", f"an input at least as large as the dilated kernel "
                       f"({self.dilation * (self.kernel - 1) + 1 - 2 * self.padding})")
        pair("out_hw")
        if self.out_hw != expected:
            raise fail("out_hw", f"{list(expected)}, which follows from in_hw and the kernel geometry")

    @property
    def channels_per_group(self) -> int:
        """Input channels each filter reduces over (C_in / groups)."""
        return self.in_channels // self.groups

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.kind == "fc":
            return (self.out_channels, self.in_channels)
        return (self.out_channels, self.channels_per_group, self.kernel, self.kernel)

    @property
    def weight_count(self) -> int:
        """Number of weights (elements), bias excluded."""
        return int(np.prod(self.weight_shape))

    @property
    def param_count(self) -> int:
        """Weights plus bias, in elements."""
        return self.weight_count + (self.out_channels if self.bias else 0)

    def input_shape(self, batch: int) -> tuple[int, ...]:
        if self.kind == "fc":
            return (batch, self.in_channels)
        return (batch, self.in_channels, *self.in_hw)

    def output_shape(self, batch: int) -> tuple[int, ...]:
        if self.kind == "fc":
            return (batch, self.out_channels)
        return (batch, self.out_channels, *self.out_hw)

    def macs(self, batch: int = 1) -> int:
        """Dense multiply-accumulates of the forward pass for `batch` samples."""
        return batch * self.out_hw[0] * self.out_hw[1] * self.weight_count


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis (elements)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@dataclass
class TraceLayer:
    """One layer of a trace: its shape and the tensors of one iteration.

    `weight`: the weights the forward pass uses (after Top-K), OIHW or [O, C];
    `input`: forward-pass input activations, NCHW or [N, C];
    `input_saved`: activations saved for the backward pass (None if not recorded);
    `grad_output`: gradient at the layer output (None if not recorded).
    """

    spec: LayerSpec
    weight: np.ndarray
    input: np.ndarray
    input_saved: np.ndarray | None = None
    grad_output: np.ndarray | None = None

    def __post_init__(self):
        s = self.spec
        if tuple(self.weight.shape) != s.weight_shape:
            raise TraceError(f"layer {s.name}: weight has shape {self.weight.shape}, "
                             f"expected {s.weight_shape}")
        batch = self.input.shape[0] if self.input.ndim else 0
        for tname, expected in (("input", s.input_shape(batch)), ("input_saved", s.input_shape(batch)),
                                ("grad_output", s.output_shape(batch))):
            t = getattr(self, tname)
            if t is not None and tuple(t.shape) != expected:
                raise TraceError(f"layer {s.name}: {tname} has shape {t.shape}, expected {expected}")

    @property
    def batch(self) -> int:
        return int(self.input.shape[0])

    @property
    def saved_is_input(self) -> bool:
        """Whether the backward pass reads the input itself (no separate saved copy)."""
        return self.input_saved is None or self.input_saved is self.input

    def samples(self, start: int, stop: int) -> "TraceLayer":
        """The layer restricted to samples [start, stop) of the batch (views, no copies),
        what the streamed simulation (`streaming.py`) takes one chunk at a time."""
        x, saved, dy = self.input[start:stop], self.input_saved, self.grad_output
        if saved is not None:
            saved = x if saved is self.input else saved[start:stop]
        return TraceLayer(self.spec, self.weight, x, saved, None if dy is None else dy[start:stop])


@dataclass
class Trace:
    """A network's layers for one training iteration plus provenance metadata."""

    network: str
    layers: list[TraceLayer]
    method: str = "dense"
    sparsity: float = 0.0
    meta: dict = field(default_factory=dict)

    def layer(self, name: str) -> TraceLayer:
        for lay in self.layers:
            if lay.spec.name == name:
                return lay
        raise KeyError(name)


def _spec_to_yaml(spec: LayerSpec) -> dict:
    d = asdict(spec)
    d["in_hw"] = list(spec.in_hw)
    d["out_hw"] = list(spec.out_hw)
    return d


def write_trace(trace: Trace, directory: str | os.PathLike) -> Path:
    """Write `trace` to `directory` atomically: built in a temporary sibling, then swapped in.

    An existing *trace* directory at that path (one holding manifest.yaml) is replaced only
    after the new one is complete; anything else there (a file, a device, another
    directory) is refused with a TraceError before anything is written
    (`simulator.outputs` has the naming and the clean-up of temporaries).
    """
    directory = Path(directory)
    check_trace_destination(directory)
    tmp = make_temp_dir(directory)
    try:
        layers = []
        for i, lay in enumerate(trace.layers):
            fname = f"{i:03d}_{lay.spec.name.replace('/', '_')}.npz"
            arrays = {t: getattr(lay, t) for t in TENSORS if getattr(lay, t) is not None}
            np.savez_compressed(tmp / fname, **arrays)
            layers.append({"file": fname, **_spec_to_yaml(lay.spec)})
        manifest = {
            "format_version": FORMAT_VERSION,
            "network": trace.network,
            "method": trace.method,
            "sparsity": float(trace.sparsity),
            "dtype": str(trace.layers[0].weight.dtype) if trace.layers else "float32",
            **trace.meta,
            "layers": layers,
        }
        (tmp / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        check_trace_destination(directory)  # still free, or still a trace: nothing else is replaced
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def check_trace_destination(directory: str | os.PathLike) -> None:
    """Raise TraceError unless `directory` is free (nothing there, and a directory can be
    made there: probed) or an existing trace directory that `write_trace` may replace."""
    directory = Path(directory)
    if not os.path.lexists(directory):
        try:
            check_name_length(directory, str(directory))
            probe_output_dir(directory.parent, f"{directory}: cannot create a trace directory here")
        except OutputError as e:
            raise TraceError(str(e)) from None
        return
    if directory.is_symlink() or not directory.is_dir():
        raise TraceError(f"{directory}: exists and is not a directory; refusing to replace it "
                         "(choose another output path)")
    if not (directory / "manifest.yaml").is_file():
        raise TraceError(f"{directory}: exists and is not a trace directory (no manifest.yaml); "
                         "refusing to replace it (choose another output path)")


_SPEC_FIELDS = ("name", "kind", "in_channels", "out_channels", "kernel", "stride", "padding",
                "dilation", "groups", "in_hw", "out_hw", "bias")


_CONV_FIELDS = ("kernel", "stride", "padding", "dilation", "groups", "in_hw", "out_hw")
PATH_CHARS = 200  # a path quoted in a message is cut to this length
NAME_CHARS = 200  # network, method and layer names: printable, at most this long
MAX_MAGNITUDE = 1e15  # |value| of any tensor: beyond, float32 sums of products overflow
# metadata the trainer writes that the simulator reads: (key, least, most)
META_INTEGERS = (("batch", 1, 2**31 - 1), ("image_size", 1, 4096), ("iteration", 0, 2**31 - 1),
                 ("seed", 0, 2**63 - 1))


def _plain_name(value, slash: bool = False) -> bool:
    """A non-empty string of at most NAME_CHARS printable characters (no '/' unless `slash`)."""
    return (isinstance(value, str) and 0 < len(value) <= NAME_CHARS and value.isprintable()
            and (slash or "/" not in value))
MAX_MEMBER_BYTES = 4 << 30   # an array of a layer archive, uncompressed


def _member(directory: Path, name, where: str) -> Path:
    """The layer archive `name` of the manifest: a relative path to a regular file inside
    the trace directory (no absolute path, no `..`, no symlink leading out)."""
    if not isinstance(name, str) or not name:
        raise TraceError(f"{where}: file: expected a file name, got {safe_yaml.cut(repr(name))}")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise TraceError(f"{where}: file: expected a file inside the trace directory, got "
                         f"{safe_yaml.cut(repr(name))}")
    path = directory / rel
    try:
        inside = path.resolve().is_relative_to(directory.resolve())
        st = os.stat(path)
    except (OSError, ValueError) as e:  # ValueError: a NUL in the name
        raise TraceError(f"{where}: file: cannot read {safe_yaml.cut(repr(name))} "
                         f"({getattr(e, 'strerror', None) or e})") from None
    if not inside:
        raise TraceError(f"{where}: file: {safe_yaml.cut(repr(name))} leads out of the trace "
                         "directory")
    if not stat.S_ISREG(st.st_mode):
        raise TraceError(f"{_shown_path(path)}: expected a regular file")
    return path


def _shown_path(path) -> str:
    return safe_yaml.cut(str(path), PATH_CHARS)


NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}


def _check_archive(npz: Path, spec: LayerSpec) -> None:
    """Before any array is read: the archive holds only `<tensor>.npy` members of TENSORS,
    each an NPY array of float32 or float64 whose header shape is the one `spec` gives it
    (one batch for the activations), whose size is what that shape takes, and no more than
    `MAX_MEMBER_BYTES`; so a zip bomb or a member of the wrong shape is refused unread."""
    shown = _shown_path(npz)
    batch = None
    with zipfile.ZipFile(npz) as z:
        for info in z.infolist():
            tensor = info.filename[:-4] if info.filename.endswith(".npy") else None
            if tensor not in TENSORS:
                raise TraceError(f"{shown}: {safe_yaml.cut(repr(info.filename))}: expected only "
                                 f"the arrays {', '.join(t + '.npy' for t in TENSORS)}")
            if info.file_size > MAX_MEMBER_BYTES:
                raise TraceError(f"{shown}: {info.filename}: {info.file_size:,} bytes uncompressed: "
                                 f"expected at most {MAX_MEMBER_BYTES:,}")
            with z.open(info) as f:
                try:
                    version = np.lib.format.read_magic(f)
                    read_header = NPY_HEADERS.get(version)
                    if read_header is None:
                        raise ValueError(f"NPY format version {version} (expected 1.0 or 2.0)")
                    shape, _, dtype = read_header(f)
                    header = f.tell() if f.seekable() else None
                except (ValueError, OSError, EOFError, SyntaxError) as e:
                    raise TraceError(f"{shown}: {tensor}: expected an NPY array "
                                     f"({safe_yaml.cut(str(e))})") from None
            if dtype not in (np.float32, np.float64):
                raise TraceError(f"{shown}: {tensor}: expected float32 or float64 values, got "
                                 f"dtype {safe_yaml.cut(str(dtype))}")
            if tensor == "weight":
                expected = spec.weight_shape
            else:
                if len(shape) < 1 or batch is not None and shape[0] != batch:
                    expected = (batch, *spec.input_shape(1)[1:])
                else:
                    batch = shape[0] if batch is None else batch
                    expected = (spec.output_shape if tensor == "grad_output" else spec.input_shape)(batch)
            if tuple(shape) != tuple(expected):
                raise TraceError(f"{shown}: {tensor}: expected shape {tuple(expected)} (layer "
                                 f"{safe_yaml.cut(spec.name, 40)}), got {safe_yaml.cut(str(tuple(shape)))}")
            size = math.prod(shape) * dtype.itemsize
            if header is not None and info.file_size != header + size:
                raise TraceError(f"{shown}: {tensor}: {info.file_size:,} bytes, expected "
                                 f"{header + size:,} for its shape and dtype")


def read_trace(directory: str | os.PathLike) -> Trace:
    """Read a trace directory. Raises `TraceError` with the file and field on bad input."""
    directory = Path(directory)
    mpath = directory / "manifest.yaml"
    try:
        found = mpath.is_file()
    except (OSError, ValueError) as e:  # a name too long, a NUL in the path
        raise TraceError(f"{safe_yaml.cut(mpath, PATH_CHARS)}: cannot read "
                         f"({getattr(e, 'strerror', None) or e})") from None
    if not found:
        raise TraceError(f"{safe_yaml.cut(mpath, PATH_CHARS)}: no such file (a trace is a "
                         "directory with manifest.yaml)")
    try:
        manifest = safe_yaml.load(mpath)
    except (OSError, safe_yaml.YAMLInputError) as e:
        raise TraceError(f"{mpath}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(manifest, dict):
        raise TraceError(f"{mpath}: expected a mapping at the top level")
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise TraceError(f"{mpath}: format_version: expected {FORMAT_VERSION}, got {safe_yaml.cut(repr(version))} "
                         "(written by a different accelsim version)")
    entries = manifest.get("layers")
    if not isinstance(entries, list) or not entries:
        raise TraceError(f"{mpath}: layers: expected a non-empty list")
    sparsity = manifest.get("sparsity", 0.0)
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise TraceError(f"{mpath}: sparsity: expected a number in [0, 1), got {safe_yaml.cut(repr(sparsity))}")
    for key in ("network", "method"):
        value = manifest.get(key)
        if value is not None and not _plain_name(value):
            raise TraceError(f"{mpath}: {key}: expected a name of at most {NAME_CHARS} printable "
                             f"characters without '/', got {safe_yaml.cut(repr(value))}")
    declared = manifest.get("dtype")
    if declared is not None and declared not in ("float32", "float64"):
        raise TraceError(f"{mpath}: dtype: expected float32 or float64, got "
                         f"{safe_yaml.cut(repr(declared))}")
    for key, low, high in META_INTEGERS:
        value = manifest.get(key)
        if value is not None and (type(value) is not int or not low <= value <= high):
            raise TraceError(f"{mpath}: {key}: expected an integer in {low}..{high:,}, got "
                             f"{safe_yaml.cut(repr(value))}")
    seen: set[str] = set()
    layers = []
    for i, entry in enumerate(entries):
        where = f"{mpath}: layers[{i}]"
        if not isinstance(entry, dict):
            raise TraceError(f"{where}: expected a mapping")
        required = ("file", *_SPEC_FIELDS[:4]) + (_CONV_FIELDS if entry.get("kind") == "conv" else ())
        missing = [k for k in required if k not in entry]
        if missing:
            raise TraceError(f"{where}: missing field {safe_yaml.cut(repr(missing[0]))}")
        try:
            spec = LayerSpec(**{k: entry[k] for k in _SPEC_FIELDS if k in entry})
        except (TypeError, ValueError) as e:
            raise TraceError(f"{where}: {e}") from None
        if not _plain_name(spec.name, slash=True):
            raise TraceError(f"{where}: name: expected at most {NAME_CHARS} printable characters, "
                             f"got {safe_yaml.cut(repr(spec.name))}")
        if spec.name in seen:
            raise TraceError(f"{where}: name: expected a unique layer name, got {safe_yaml.cut(repr(spec.name))} twice")
        seen.add(spec.name)
        npz = _member(directory, entry["file"], where)
        shown = _shown_path(npz)
        try:
            _check_archive(npz, spec)
            with np.load(npz, allow_pickle=False) as data:
                arrays = {t: data[t] for t in TENSORS if t in data.files}
        except TraceError:
            raise
        except Exception as e:  # zip, zlib, EOF, pickle-refusal, OS errors: all one line
            raise TraceError(f"{shown}: cannot read as an npz archive ({type(e).__name__}: "
                             f"{safe_yaml.cut(str(e), 160)})") from None
        for t, a in arrays.items():
            if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
                raise TraceError(f"{shown}: {t}: expected float32 or float64 values, got "
                                 f"{safe_yaml.cut(str(getattr(a, 'dtype', type(a).__name__)))}")
            if not np.isfinite(a).all():
                first = np.flatnonzero(~np.isfinite(a))[0]
                raise TraceError(f"{shown}: {t}: expected finite values, found {a.flat[first]} "
                                 f"at index {tuple(int(i) for i in np.unravel_index(first, a.shape))}")
            if a.size and np.abs(a).max() > MAX_MAGNITUDE:
                raise TraceError(f"{shown}: {t}: expected magnitudes up to {MAX_MAGNITUDE:g} (the "
                                 f"values of a training run; the array sums in float32), found "
                                 f"{np.abs(a).max():g}")
        for t in ("weight", "input"):
            if t not in arrays:
                raise TraceError(f"{shown}: missing array {t!r}")
        if arrays["input"].ndim == 0 or arrays["input"].shape[0] < 1:
            raise TraceError(f"{shown}: input: expected a batch of at least 1 sample, got shape "
                             f"{arrays['input'].shape}")
        dtypes = {a.dtype.name for a in arrays.values()}
        if declared is not None and dtypes != {declared}:
            raise TraceError(f"{mpath}: dtype: the manifest says {declared}, but {shown} holds "
                             f"{', '.join(sorted(dtypes))}")
        try:
            layers.append(TraceLayer(spec, **arrays))
        except TraceError as e:
            raise TraceError(f"{shown}: {e}") from None
    meta = {k: v for k, v in manifest.items()
            if k not in ("format_version", "network", "method", "sparsity", "layers")}
    return Trace(network=str(manifest.get("network", directory.name)), layers=layers,
                 method=str(manifest.get("method", "unknown")),
                 sparsity=float(sparsity), meta=meta)
