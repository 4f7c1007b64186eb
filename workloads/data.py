"""Image classification data sets and a batch loader for the NumPy CNN trainer.

What this models: the input pipeline of a SWAT-style training run, as torchvision
would build it, with nothing downloaded at run time.

Data sets (`load_dataset`), each a `Dataset` of uint8 images [N, H, W, C] as stored
(pixel values 0..255) and int64 labels [N]:

- ``fashion-mnist``: the four IDX files (gzipped or plain), 60,000 train and 10,000
  test images of 28x28x1, 10 classes. Default directory
  ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
- ``cifar10``: the "python version" directory ``cifar-10-batches-py`` (data_batch_1..5
  for train, test_batch for test), 32x32x3, 10 classes. Those files are pickles: they
  are read with a restricted unpickler that builds only numpy arrays, dtypes, dicts,
  lists, strings and bytes, and refuses every other global (no code can run). There is
  no default directory: ``data_dir`` must be given (the directory itself or its parent).
- ``synthetic``: deterministic 32x32x3 images with a learnable class structure (see
  `synthetic_dataset`), ``synthetic_size`` train images and a quarter as many test
  images.

Loader (`Loader`): one epoch of batches per iteration, each ``(x, y)`` with x float32
[B, channels, S, S] (NCHW) and y int64 [B]. Per batch, in this order:

1. resize to S = ``image_size``: bilinear with half-pixel centres and edge clamping,
   the formula of torch's ``interpolate(mode="bilinear", align_corners=False)`` without
   antialiasing, then rounded to uint8. When the resized data set fits in
   ``cache_bytes`` (default 512 MiB, e.g. all of Fashion-MNIST or CIFAR-10 at 32) it is
   resized once at construction and kept as uint8; otherwise (e.g. 224x224) each batch
   is resized when drawn, which bounds memory to a batch. Both give identical pixels.
2. training augmentation (default on for train loaders): random crop of S x S from the
   image zero-padded by ``pad = image_size // 8`` on each side (pixel value 0, black,
   as torchvision's ``RandomCrop(S, padding=pad)``), then horizontal flip with
   probability 1/2; vectorised over the batch as one gather.
3. channels: a 1-channel data set is replicated to 3 channels when the model wants 3;
   a 3-channel data set cannot feed a 1-channel model (DataError).
4. normalisation: x = (pixel / 255 - mean[c]) / std[c], with the per-data-set channel
   constants of `NORMALIZATION` (pixel mean and std of the train split, in units of
   the 0..1 pixel scale); a `Dataset` with another name gets its own mean and std,
   computed from its images.

Determinism and resuming: everything random is derived from (seed, epoch, batch):
the shuffle of epoch e is ``default_rng([seed, e, 0]).permutation(N)`` and the
augmentation of batch b of epoch e comes from ``default_rng([seed, e, 1, b])``.
A train loader keeps its position, the next batch to produce, as (epoch, batch),
readable and settable with `Loader.state` / `Loader.set_state` (plain ints,
np.savez-able) or the `Loader.epoch` property. Iterating it yields the remaining
batches of the current epoch, advancing the position as each batch is produced (an
iteration abandoned half-way leaves the position there, and the next one goes on from
it); after the epoch's last batch is produced the position moves to (epoch + 1, 0).
So a trainer saves ``loader.state()`` with its checkpoint after a step, and after
``set_state`` on a fresh loader built with the same arguments, iteration goes on with
exactly the batches (order and augmentation) the original run would have produced.
A test loader (``train=False``) is stateless: every iteration is the whole split in
stored order (as epoch `Loader.epoch`, which only matters with ``augment=True``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .datasets import (  # noqa: F401  (re-exported: the data sets live there)
    CIFAR10_FILES, DATASETS, DEFAULT_CACHE_BYTES, FASHION_MNIST_DIR, FASHION_MNIST_FILES,
    MAX_CIFAR_BATCH_BYTES, MAX_IDX_DATA_BYTES, MAX_IDX_DIMS, NORMALIZATION, NUM_CLASSES,
    SPLITS, DataError, Dataset, load_cifar10, load_cifar_batch, load_dataset,
    load_fashion_mnist, read_idx, read_idx_header, resize_bilinear, synthetic_dataset,
    write_idx)


# --------------------------------------------------------------------------- loader

def _dataset_stats(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (0..1 scale) of a data set's images, in chunks."""
    c = dataset.images.shape[3]
    total, sq, count = np.zeros(c), np.zeros(c), 0
    for start in range(0, len(dataset), 4096):
        part = dataset.images[start:start + 4096].reshape(-1, c).astype(np.float64) / 255.0
        total += part.sum(0)
        sq += (part * part).sum(0)
        count += part.shape[0]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(sq / max(count, 1) - mean * mean, 0.0))
    return mean, np.where(std > 0, std, 1.0)


def _int_arg(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class Loader:
    """Batches of a `Dataset`, preprocessed for a model input (see the module docstring).

    ``Loader(dataset, batch, image_size, channels=3, *, train, seed=0, augment=None,
    drop_last=None, cache_bytes=512 MiB)``: `augment` and `drop_last` default to
    `train`; train loaders shuffle every epoch, test loaders keep the stored order.
    Attributes: ``pad`` (crop padding, image_size // 8), ``mean``/``std`` (float32 per
    output channel, 0..1 scale), ``cached`` (whether the resized data set is held in
    memory). A train loader is one stream: do not iterate it from two places at once.
    """

    def __init__(self, dataset: Dataset, batch: int, image_size: int, channels: int = 3, *,
                 train: bool, seed: int = 0, augment: bool | None = None,
                 drop_last: bool | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.dataset = dataset
        self.batch = _int_arg("batch", batch, 1)
        self.image_size = _int_arg("image_size", image_size, 1)
        if channels not in (1, 3) or isinstance(channels, bool):
            raise DataError(f"channels must be 1 or 3, got {channels!r}")
        stored = dataset.images.shape[3]
        if stored == 3 and channels == 1:
            raise DataError(f"{dataset.name}: images have 3 channels, the model wants 1")
        self.channels = int(channels)
        self.train = bool(train)
        self.seed = _int_arg("seed", seed, 0)
        self.augment = self.train if augment is None else bool(augment)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.pad = self.image_size // 8
        n = len(dataset)
        if n == 0:
            raise DataError(f"{dataset.name}: the data set has no images")
        if self.drop_last and n < self.batch:
            raise DataError(f"{dataset.name}: batch {self.batch} is larger than its {n} images "
                            f"(with drop_last there would be no batch)")
        if dataset.name in NORMALIZATION:
            mean, std = (np.asarray(v, np.float64) for v in NORMALIZATION[dataset.name])
            if mean.size != stored:
                raise DataError(f"{dataset.name}: normalisation constants are for {mean.size} "
                                f"channels, images have {stored}")
        else:
            mean, std = _dataset_stats(dataset)
        if stored == 1:
            mean, std = np.repeat(mean, self.channels), np.repeat(std, self.channels)
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        # x = pixel * scale + offset  ==  (pixel / 255 - mean) / std
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._offset = (-mean / std).astype(np.float32)
        size = self.image_size
        _, h, w, _ = dataset.images.shape
        if h == size and w == size:
            self._images, self.cached = dataset.images, True
        elif n * size * size * stored <= cache_bytes:
            self._images, self.cached = resize_bilinear(dataset.images, size), True
        else:
            self._images, self.cached = dataset.images, False
        self._epoch = 0
        self._batch = 0
        self._order_epoch: int | None = None
        self._order: np.ndarray | None = None

    # -- position -------------------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.dataset)
        return n // self.batch if self.drop_last else -(-n // self.batch)

    @property
    def epoch(self) -> int:
        """The epoch of the next batch; setting it starts that epoch at its first batch."""
        return self._epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch = _int_arg("epoch", value, 0)
        self._batch = 0

    def state(self) -> dict[str, int]:
        """The position of the next batch, for a checkpoint: plain ints (np.savez-able).

        Keys: epoch, batch (index within the epoch), and for checking on resume seed,
        num_batches and num_samples.
        """
        return {"epoch": self._epoch, "batch": self._batch, "seed": self.seed,
                "num_batches": len(self), "num_samples": len(self.dataset)}

    def set_state(self, state) -> None:
        """Resume at a position returned by `state` (a dict, or an np.load'ed mapping)."""
        try:
            epoch, batch = int(state["epoch"]), int(state["batch"])
        except (KeyError, TypeError, ValueError):
            raise DataError("loader state needs integer 'epoch' and 'batch'") from None
        for key, mine in (("seed", self.seed), ("num_batches", len(self)),
                          ("num_samples", len(self.dataset))):
            if key in state and int(state[key]) != mine:
                raise DataError(f"loader state is for {key} {int(state[key])}, this loader has "
                                f"{mine} (resume with the same data, batch and seed)")
        if epoch < 0 or not 0 <= batch < len(self):
            raise DataError(f"loader state out of range: epoch {epoch}, batch {batch} "
                            f"(0..{len(self) - 1})")
        self._epoch, self._batch = epoch, batch

    # -- batches --------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of `epoch` in the order batches take them."""
        if self._order_epoch != epoch:
            n = len(self.dataset)
            if self.train:
                self._order = np.random.default_rng([self.seed, epoch, 0]).permutation(n)
            else:
                self._order = np.arange(n)
            self._order_epoch = epoch
        return self._order

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Train loaders: the remaining batches of the current epoch, advancing the
        position as each batch is produced. Test loaders: every batch of epoch
        `epoch`, from the first, leaving the position alone."""
        epoch, count = self._epoch, len(self)
        start = self._batch if self.train else 0
        order = self.order(epoch)
        for b in range(start, count):
            idx = order[b * self.batch:(b + 1) * self.batch]
            x, y = self.make_batch(idx, epoch, b)
            if self.train:
                if b + 1 == count:
                    self._epoch, self._batch = epoch + 1, 0
                else:
                    self._batch = b + 1
            yield x, y

    def make_batch(self, idx: np.ndarray, epoch: int = 0, batch: int = 0):
        """The preprocessed batch of samples `idx` (augmented as batch `batch` of `epoch`)."""
        images = self._images[idx]
        if not self.cached:
            images = resize_bilinear(images, self.image_size)
        if self.augment:
            images = self._augment(images, np.random.default_rng([self.seed, epoch, 1, batch]))
        return self._normalise(images), self.dataset.labels[idx].astype(np.int64, copy=True)

    def _augment(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Random crop from the zero-padded image plus random horizontal flip, one gather."""
        b, s, pad = images.shape[0], self.image_size, self.pad
        offsets = rng.integers(0, 2 * pad + 1, size=(2, b))
        flip = rng.random(b) < 0.5
        ar = np.arange(s)
        rows = offsets[0][:, None] - pad + ar  # source row of each output row
        cols = offsets[1][:, None] - pad + ar
        cols = np.where(flip[:, None], cols[:, ::-1], cols)
        valid = ((rows >= 0) & (rows < s))[:, :, None] & ((cols >= 0) & (cols < s))[:, None, :]
        out = images[np.arange(b)[:, None, None], np.clip(rows, 0, s - 1)[:, :, None],
                     np.clip(cols, 0, s - 1)[:, None, :]]
        out *= valid[..., None]
        return out

    def _normalise(self, images: np.ndarray) -> np.ndarray:
        """uint8 [B, S, S, C_stored] -> float32 [B, channels, S, S], normalised."""
        b, s = images.shape[0], self.image_size
        stored = images.shape[3]
        x = np.empty((b, self.channels, s, s), np.float32)
        for c in range(self.channels):
            src = images[..., c if stored == self.channels else 0]
            np.multiply(src, self._scale[c], out=x[:, c], dtype=np.float32)
            x[:, c] += self._offset[c]
        return x
