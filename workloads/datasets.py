"""The image classification data sets of the NumPy trainer, read from disk (`workloads.data`
re-exports them and holds the loader).

Fashion-MNIST (IDX files, gzipped or plain; Debian's dataset-fashion-mnist), CIFAR-10
(python batches, read with a restricted unpickler that builds only arrays, dtypes and
plain containers: no code can run) and a deterministic synthetic set. Each is a
`Dataset` of uint8 images [N, H, W, C] and int64 labels [N]; problems are one-line
`DataError`s saying what is wrong and how to get the data. See `workloads.data` for the
details.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator.outputs import file_kind

DATASETS = ("fashion-mnist", "cifar10", "synthetic")
SPLITS = ("train", "test")

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}

# Per-channel pixel mean and std of each data set's train split, on the 0..1 scale.
# Fashion-MNIST: measured on the 60,000 training images; CIFAR-10: the pixel-level
# values over its 50,000 training images; synthetic: measured on synthetic_size=8192
# (seeds 0..2, averaged over channels: its channel means vary by about 0.01 with the seed).
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860406,), (0.3530242,)),
    "cifar10": ((0.4913997, 0.4821584, 0.4465309), (0.2470322, 0.2434851, 0.2615878)),
    "synthetic": ((0.4980, 0.4980, 0.4980), (0.1927, 0.1927, 0.1927)),
}

NUM_CLASSES = 10
DEFAULT_CACHE_BYTES = 512 * 2**20


class DataError(ValueError):
    """Bad or missing data, or bad loader arguments; the message is one user-facing line."""


@dataclass
class Dataset:
    """One split of an image classification data set, as stored."""

    name: str
    images: np.ndarray  # uint8 [N, H, W, C], C = 1 or 3, pixel values 0..255
    labels: np.ndarray  # int64 [N], values 0..num_classes-1
    num_classes: int

    def __post_init__(self):
        im, lab = self.images, self.labels
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 4 \
                or im.shape[3] not in (1, 3):
            raise DataError(f"{self.name}: images must be uint8 [N, H, W, C] with C = 1 or 3, "
                            f"got {getattr(im, 'dtype', type(im).__name__)} "
                            f"{getattr(im, 'shape', '')}")
        if not isinstance(lab, np.ndarray) or lab.dtype != np.int64 or lab.shape != im.shape[:1]:
            raise DataError(f"{self.name}: labels must be int64 [{im.shape[0]}], got "
                            f"{getattr(lab, 'dtype', type(lab).__name__)} {getattr(lab, 'shape', '')}")
        if self.num_classes < 1:
            raise DataError(f"{self.name}: num_classes must be at least 1, got {self.num_classes}")
        if lab.size and (lab.min() < 0 or lab.max() >= self.num_classes):
            raise DataError(f"{self.name}: labels must be in 0..{self.num_classes - 1}, "
                            f"found {lab.min()}..{lab.max()}")

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_dataset(name: str, split: str, data_dir: str | None = None, *,
                 synthetic_size: int = 1024, seed: int = 0) -> Dataset:
    """Load one split ("train" or "test") of the data set `name` (one of `DATASETS`).

    `data_dir` overrides the default directory (Fashion-MNIST) or is required (CIFAR-10);
    the synthetic set ignores it and uses `synthetic_size` and `seed`. Missing or bad
    data raise `DataError` with one line saying what is wrong and how to get the data.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (expected one of: {', '.join(DATASETS)})")
    if split not in SPLITS:
        raise DataError(f"{name}: unknown split {split!r} (expected train or test)")
    if name == "fashion-mnist":
        return load_fashion_mnist(split, data_dir)
    if name == "cifar10":
        return load_cifar10(split, data_dir)
    return synthetic_dataset(split, synthetic_size, seed)


# ---------------------------------------------------------------------------- IDX

_IDX_DTYPES = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_IDX_NAMES = {0x08: "ubyte", 0x09: "byte", 0x0B: "short", 0x0C: "int", 0x0D: "float",
              0x0E: "double"}


MAX_IDX_DATA_BYTES = 2**31  # an IDX file's data, as its header claims it (Fashion-MNIST: 47 MB)
MAX_IDX_DIMS = 16
MAX_CIFAR_BATCH_BYTES = 256 * 2**20  # a CIFAR-10 python batch file (10,000 images: 31 MB)


def _regular_file(path: Path) -> os.stat_result:
    """The `os.stat` of `path` if it is a regular file (a symlink to one is fine);
    DataError naming what it is otherwise (a FIFO or device is never opened)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: expected a regular file, found {file_kind(st.st_mode)}")
    return st


class _IdxFile:
    """An open IDX file, gzipped or plain (by its magic, whatever its name): its header is
    read and checked on opening, its data only by `read_data`, which reads exactly the
    size the header gives, so a file that inflates past it is refused after one byte more."""

    def __init__(self, path: Path):
        self.path = path
        self.size = _regular_file(path).st_size
        try:
            self._raw = open(path, "rb")
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
        try:
            self.gz = self._raw.read(2) == b"\x1f\x8b"
            self._raw.seek(0)
            self._f = gzip.GzipFile(fileobj=self._raw, mode="rb") if self.gz else self._raw
            self._header()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._f is not self._raw:
            self._f.close()
        self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read(self, n: int) -> bytes:
        try:
            return self._f.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{self.path}: corrupt or truncated gzip file ({exc})") from None

    def _header(self) -> None:
        path, magic = self.path, self._read(4)
        if len(magic) < 4:
            raise DataError(f"{path}: not an IDX file (expected a 4-byte magic number, "
                            f"file has {len(magic)} bytes)")
        code, ndim = magic[2], magic[3]
        if magic[0] != 0 or magic[1] != 0 or code not in _IDX_DTYPES or ndim == 0:
            raise DataError(f"{path}: not an IDX file (bad magic number 0x{magic.hex()}; "
                            f"expected 0x0000TTDD with type TT in 08/09/0b/0c/0d/0e and DD >= 1 "
                            f"dimensions)")
        if ndim > MAX_IDX_DIMS:
            raise DataError(f"{path}: not a data set IDX file (header says {ndim} dimensions; "
                            f"expected at most {MAX_IDX_DIMS})")
        header = 4 + 4 * ndim
        rest = self._read(4 * ndim)
        if len(rest) < 4 * ndim:
            raise DataError(f"{path}: truncated IDX header (expected {ndim} dimensions, "
                            f"{header} bytes; file has {4 + len(rest)})")
        self.code, self.header = code, header
        self.dtype = _IDX_DTYPES[code]
        self.dims = tuple(int(d) for d in np.frombuffer(rest, ">u4"))
        self.nbytes = math.prod(self.dims) * self.dtype.itemsize
        if self.nbytes > MAX_IDX_DATA_BYTES:
            raise DataError(f"{path}: implausible IDX header: {self.shape_text()} is "
                            f"{self.nbytes:,} bytes of data, more than the {MAX_IDX_DATA_BYTES:,} "
                            "a data set file may hold here (refused before reading it)")
        if not self.gz and self.size != header + self.nbytes:
            self._size_error(self.size - header)
        most = (self.size - 18) * 1032  # deflate inflates at most 1032:1 (gzip: 18 bytes of framing)
        if self.gz and most < header + self.nbytes:
            raise DataError(f"{path}: truncated: header says {self.shape_text()} = {self.nbytes} "
                            f"bytes of data, and {self.size:,} bytes of gzip hold at most "
                            f"{max(most, 0):,} (refused before reading it)")

    def shape_text(self) -> str:
        return f"{'x'.join(map(str, self.dims))} {_IDX_NAMES[self.code]}"

    def _size_error(self, found: int, more: bool = False):
        what = "truncated" if found < self.nbytes else "has trailing bytes"
        raise DataError(f"{self.path}: {what}: header says {self.shape_text()} = {self.nbytes} "
                        f"bytes of data, found {found}{' or more' if more else ''}")

    def read_data(self) -> np.ndarray:
        """The data as an array of shape `dims`, native byte order."""
        out = np.empty(self.nbytes, np.uint8)
        view, got = memoryview(out), 0
        while got < self.nbytes:
            try:
                n = self._f.readinto(view[got:])
            except (OSError, EOFError, zlib.error) as exc:
                raise DataError(f"{self.path}: corrupt or truncated gzip file ({exc})") from None
            if not n:
                self._size_error(got)
            got += n
        if self._read(1):
            self._size_error(self.nbytes + 1, more=self.gz)
        arr = out.view(self.dtype).reshape(self.dims)
        if not arr.dtype.isnative:
            arr.byteswap(inplace=True)
        return arr.view(self.dtype.newbyteorder("="))


def read_idx_header(path: str | os.PathLike) -> tuple[np.dtype, tuple[int, ...]]:
    """The (native) dtype and dimensions an IDX file's header gives, reading only the header."""
    with _IdxFile(Path(path)) as f:
        return f.dtype.newbyteorder("="), f.dims


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (gzipped or plain) into an array of its native-endian dtype.

    Header, big-endian: two zero bytes, a dtype code (0x08 ubyte, 0x09 byte,
    0x0B short, 0x0C int, 0x0D float, 0x0E double), the number of dimensions, then
    each dimension as a uint32; the data follow, exactly prod(dims) items. Only a
    regular file is read (a FIFO or device is refused unopened); a header claiming more
    than `MAX_IDX_DATA_BYTES` of data is refused before any data are read, and a gzipped
    file is inflated only up to the size its header gives (plus one byte, to see that it
    ends there).
    """
    with _IdxFile(Path(path)) as f:
        return f.read_data()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzipped if `path` ends in .gz (for tests and tools)."""
    codes = {np.dtype(v).newbyteorder("=").str: k for k, v in _IDX_DTYPES.items()}
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=").str
    if key not in codes:
        raise DataError(f"{path}: IDX cannot store dtype {array.dtype}")
    code = codes[key]
    data = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
            + array.astype(_IDX_DTYPES[code]).tobytes())
    path = Path(path)
    path.write_bytes(gzip.compress(data, 6) if path.suffix == ".gz" else data)


def _find_idx(directory: Path, stem: str) -> Path | None:
    """The IDX file `stem`.gz or `stem` in `directory`: whatever is there under that name
    (a FIFO or directory too, which `read_idx` then refuses by name)."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if os.path.lexists(candidate):
            return candidate
    return None


def load_fashion_mnist(split: str, data_dir: str | None = None) -> Dataset:
    """Fashion-MNIST from its IDX files in `data_dir` (default `FASHION_MNIST_DIR`). Both
    files' headers are read and checked against each other (ubyte images [N, rows, cols],
    N ubyte labels) before either's data are."""
    directory = Path(data_dir if data_dir is not None else FASHION_MNIST_DIR)
    how = ("install the Debian package: apt-get install dataset-fashion-mnist, "
           "or pass --data-dir DIR")
    stems = FASHION_MNIST_FILES[split]
    found = [_find_idx(directory, s) for s in stems]
    if not directory.is_dir() or not any(
            _find_idx(directory, s) for pair in FASHION_MNIST_FILES.values() for s in pair):
        raise DataError(f"fashion-mnist: no IDX files in {directory} ({how})")
    for stem, path in zip(stems, found):
        if path is None:
            raise DataError(f"fashion-mnist: missing {stem}.gz (or {stem}) in {directory} ({how})")
    images_path, labels_path = found
    with _IdxFile(images_path) as images_file, _IdxFile(labels_path) as labels_file:
        dims, ldims = images_file.dims, labels_file.dims
        if images_file.code != 0x08 or len(dims) != 3:
            raise DataError(f"{images_path}: expected ubyte images [N, rows, cols], "
                            f"got {images_file.shape_text()}")
        if labels_file.code != 0x08 or len(ldims) != 1:
            raise DataError(f"{labels_path}: expected ubyte labels [N], got {labels_file.shape_text()}")
        if ldims[0] != dims[0]:
            raise DataError(f"{labels_path}: {ldims[0]} labels for the {dims[0]} "
                            f"images of {images_path.name}")
        if dims[0] and (dims[1] == 0 or dims[2] == 0):
            raise DataError(f"{images_path}: expected images of at least 1x1 pixels, "
                            f"got {images_file.shape_text()}")
        labels = labels_file.read_data()
        if labels.size and labels.max() >= NUM_CLASSES:
            raise DataError(f"{labels_path}: labels must be 0..{NUM_CLASSES - 1}, found {labels.max()}")
        images = images_file.read_data()
    return Dataset("fashion-mnist", images[..., None], labels.astype(np.int64), NUM_CLASSES)


# ------------------------------------------------------------------------- CIFAR-10

def _numpy_attr(module: str, name: str):
    """numpy._core.<module>.<name> (numpy 2) or numpy.core.<module>.<name> (numpy 1)."""
    try:
        mod = __import__(f"numpy._core.{module}", fromlist=[name])
        return getattr(mod, name)
    except (ImportError, AttributeError):
        mod = __import__(f"numpy.core.{module}", fromlist=[name])
        return getattr(mod, name)


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """The only use of _codecs.encode that protocol-2 pickles of bytes make."""
    if encoding not in ("latin1", "latin-1") or errors != "strict" or not isinstance(text, str):
        raise DataError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    reconstruct = _numpy_attr("multiarray", "_reconstruct")
    scalar = _numpy_attr("multiarray", "scalar")
    frombuffer = _numpy_attr("numeric", "_frombuffer")
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("builtins", "bytes"): bytes,
        ("__builtin__", "bytes"): bytes,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dtypes, dicts, lists, strings and bytes; nothing else."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(f"{self._path}: refusing to unpickle {module}.{name} (a CIFAR-10 "
                            f"batch holds only numpy arrays, lists, dicts and bytes)") from None

    def persistent_load(self, pid):
        raise DataError(f"{self._path}: refusing a pickle with persistent ids")


def _key(d: dict, key: str):
    if key in d:
        return d[key]
    return d.get(key.encode())


def load_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images uint8 [n, 32, 32, 3] (HWC) and labels int64 [n].

    The file is a pickled dict with ``data``, uint8 [n, 3072], each row the 1024 red,
    then green, then blue values of a 32x32 image in row-major order, and ``labels``,
    a list of n ints 0..9; keys may be bytes (Python 2 pickles) or str.
    """
    path = Path(path)
    size = _regular_file(path).st_size
    if size > MAX_CIFAR_BATCH_BYTES:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({size:,} bytes; a batch of "
                        f"10,000 images is about 31 MB)")
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, path).load()
    except DataError:
        raise
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # anything a corrupt pickle can raise
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (expected a dict, got "
                        f"{type(obj).__name__})")
    data, labels = _key(obj, "data"), _key(obj, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: expected 'data' as uint8 [n, 3072], got "
                        f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        labels = None
    if labels is None or labels.shape != (data.shape[0],):
        raise DataError(f"{path}: expected 'labels' as a list of {data.shape[0]} ints")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels must be 0..{NUM_CLASSES - 1}, found "
                        f"{labels.min()}..{labels.max()}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW -> HWC
    return np.ascontiguousarray(images), labels


def load_cifar10(split: str, data_dir: str | None) -> Dataset:
    """CIFAR-10 from `data_dir`: the cifar-10-batches-py directory or its parent."""
    how = ("get the CIFAR-10 python version, cifar-10-python.tar.gz, unpack it and pass "
           "--data-dir DIR/cifar-10-batches-py")
    if data_dir is None:
        raise DataError(f"cifar10: no data directory given (no default location; {how})")
    directory = Path(data_dir)
    if not (directory / "test_batch").exists() and (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    if not directory.is_dir():
        raise DataError(f"cifar10: no directory {directory} ({how})")
    parts = []
    for name in CIFAR10_FILES[split]:
        path = directory / name
        if not os.path.lexists(path):
            raise DataError(f"cifar10: missing {name} in {directory} ({how})")
        parts.append(load_cifar_batch(path))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return Dataset("cifar10", images, labels, NUM_CLASSES)


# ------------------------------------------------------------------------ synthetic

def synthetic_dataset(split: str, size: int = 1024, seed: int = 0) -> Dataset:
    """Deterministic 32x32x3 images whose class is learnable.

    Each of the 10 classes has a smooth mean pattern (a 4x4x3 Gaussian grid, bilinearly
    upsampled, made left-right symmetric so horizontal flips keep the class), drawn from
    ``default_rng([seed, 0])`` and so shared by both splits. An image is
    ``127.5 + brightness + contrast * 8 * pattern[label] + noise`` (brightness uniform
    in +-16, contrast uniform in 0.6..1.4, noise N(0, 48) per pixel), clipped to 0..255.
    Labels are balanced (index mod 10, then shuffled). The train split has `size`
    images from ``default_rng([seed, 1])``; the test split ``max(1, size // 4)`` images
    from ``default_rng([seed, 2])``.
    """
    if split not in SPLITS:
        raise DataError(f"synthetic: unknown split {split!r} (expected train or test)")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise DataError(f"synthetic: synthetic_size must be a positive integer, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"synthetic: seed must be a non-negative integer, got {seed!r}")
    k, s = NUM_CLASSES, 32
    grid = np.random.default_rng([seed, 0]).standard_normal((k, 4, 4, 3))
    patterns = _resize_float(grid, s)
    patterns = (patterns + patterns[:, :, ::-1]) / 2
    patterns /= patterns.std(axis=(1, 2, 3), keepdims=True)
    n = int(size) if split == "train" else max(1, int(size) // 4)
    rng = np.random.default_rng([seed, 1 if split == "train" else 2])
    labels = rng.permutation(np.arange(n) % k).astype(np.int64)
    images = np.empty((n, s, s, 3), np.uint8)
    chunk = 1024
    for start in range(0, n, chunk):
        lab = labels[start:start + chunk]
        m = lab.size
        bright = rng.uniform(-16, 16, (m, 1, 1, 1))
        contrast = rng.uniform(0.6, 1.4, (m, 1, 1, 1))
        noise = rng.standard_normal((m, s, s, 3)) * 48
        img = 127.5 + bright + contrast * 8 * patterns[lab] + noise
        images[start:start + m] = np.clip(np.rint(img), 0, 255)
    return Dataset("synthetic", images, labels, k)


# ------------------------------------------------------------------------ resizing

def _axis_weights(in_size: int, out_size: int):
    """Source indices and weights of bilinear resampling along one axis.

    Half-pixel centres (align_corners=False): source coordinate
    (i + 0.5) * in / out - 0.5, clamped at 0; neighbours i0 = floor, i1 = min(i0 + 1, in - 1).
    """
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.intp), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w = src - i0
    return i0, i1, w


def _resize_float(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of [N, H, W, C] to [N, size, size, C] (float64/float32 math)."""
    n, h, w, c = images.shape
    y0, y1, wy = _axis_weights(h, size)
    x0, x1, wx = _axis_weights(w, size)
    dt = np.float32 if images.dtype == np.uint8 or images.dtype == np.float32 else np.float64
    wy = wy.astype(dt)[None, :, None, None]
    wx = wx.astype(dt)[None, None, :, None]
    a = images[:, y0].astype(dt)
    rows = a + (images[:, y1].astype(dt) - a) * wy
    b = rows[:, :, x0]
    return b + (rows[:, :, x1] - b) * wx


def resize_bilinear(images: np.ndarray, size: int, chunk_bytes: int = 64 * 2**20) -> np.ndarray:
    """Resize uint8 images [N, H, W, C] to uint8 [N, size, size, C], bilinear, rounded.

    Vectorised over the batch, in chunks of about `chunk_bytes` of float32 temporaries.
    Returns the input itself when it is already size x size.
    """
    n, h, w, c = images.shape
    if h == size and w == size:
        return images
    out = np.empty((n, size, size, c), np.uint8)
    per_image = size * max(w, size) * c * 4 * 3
    step = max(1, chunk_bytes // per_image)
    for start in range(0, n, step):
        res = _resize_float(images[start:start + step], size)
        np.clip(np.rint(res), 0, 255, out=res)
        out[start:start + step] = res
    return out
