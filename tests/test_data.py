"""Data sets (IDX, CIFAR-10 python batches, synthetic) and the preprocessing Loader."""

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from workloads import data, datasets
from workloads.data import (DATASETS, NORMALIZATION, DataError, Dataset, Loader, load_cifar_batch,
                            load_dataset, read_idx, resize_bilinear, write_idx)

FASHION = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- IDX

def idx_bytes(code, dims, payload):
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + payload


@pytest.mark.parametrize("gz", [False, True])
def test_idx_parses_header_and_big_endian_data(tmp_path, gz):
    img = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(0x08, (2, 3, 4), img.tobytes())
    path = tmp_path / ("a.gz" if gz else "a")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    np.testing.assert_array_equal(read_idx(path), img)
    ints = np.array([1, -2, 70000], np.int32)
    (tmp_path / "i").write_bytes(idx_bytes(0x0C, (3,), ints.astype(">i4").tobytes()))
    out = read_idx(tmp_path / "i")
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, ints)
    write_idx(tmp_path / "w.gz", img)  # the writer round-trips
    np.testing.assert_array_equal(read_idx(tmp_path / "w.gz"), img)


def test_idx_bad_files_name_the_file(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(idx_bytes(0x08, (2,), b"\x00\x00").replace(b"\x00\x00\x08", b"\x08\x03\x08", 1))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: not an IDX file \(bad magic"):
        read_idx(bad)
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 20)  # a zip, say
    with pytest.raises(DataError, match="bad magic"):
        read_idx(bad)
    trunc = tmp_path / "t.gz"
    trunc.write_bytes(gzip.compress(idx_bytes(0x08, (10, 28, 28), b"\x00" * 100)))
    with pytest.raises(DataError, match=r"t\.gz: truncated: header says 10x28x28 ubyte = 7840 bytes of data, found 100"):
        read_idx(trunc)
    extra = tmp_path / "e"
    extra.write_bytes(idx_bytes(0x08, (2,), b"\x00" * 3))
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(extra)
    short_header = tmp_path / "h"
    short_header.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(short_header)
    broken_gz = tmp_path / "b.gz"
    broken_gz.write_bytes(gzip.compress(idx_bytes(0x08, (50,), bytes(50)))[:-12])
    with pytest.raises(DataError, match=r"b\.gz: corrupt or truncated gzip"):
        read_idx(broken_gz)


def write_fashion(directory, n_train=6, n_test=4, gz=True, size=28):
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        stem_i, stem_l = data.FASHION_MNIST_FILES[split]
        ext = ".gz" if gz else ""
        write_idx(directory / (stem_i + ext), imgs)
        write_idx(directory / (stem_l + ext), labels)
        arrays[split] = (imgs, labels)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_from_a_directory(tmp_path, gz):
    arrays = write_fashion(tmp_path, gz=gz)
    for split in ("train", "test"):
        ds = load_dataset("fashion-mnist", split, str(tmp_path))
        assert ds.name == "fashion-mnist" and ds.num_classes == 10
        assert ds.images.dtype == np.uint8 and ds.images.shape[1:] == (28, 28, 1)
        np.testing.assert_array_equal(ds.images[..., 0], arrays[split][0])
        assert ds.labels.dtype == np.int64
        np.testing.assert_array_equal(ds.labels, arrays[split][1])


def test_fashion_mnist_missing_and_inconsistent(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", "train")
    msg = str(err.value)
    assert "\n" not in msg and "nowhere" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    write_fashion(tmp_path / "d")
    os.remove(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz")
    load_dataset("fashion-mnist", "train", str(tmp_path / "d"))  # train is complete
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", "test", str(tmp_path / "d"))
    write_idx(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="3 labels for the 4 images"):
        load_dataset("fashion-mnist", "test", str(tmp_path / "d"))
    write_idx(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz", np.zeros((4, 1), np.uint8))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: expected ubyte labels"):
        load_dataset("fashion-mnist", "test", str(tmp_path / "d"))


def test_unknown_dataset_and_split():
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*fashion-mnist, cifar10, synthetic"):
        load_dataset("mnist", "train")
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_dataset("synthetic", "val")
    assert DATASETS == ("fashion-mnist", "cifar10", "synthetic")


@pytest.fixture(scope="module")
def fashion():
    if not FASHION.is_dir():
        pytest.skip(f"no {FASHION}: install dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    return load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")


def test_real_fashion_mnist(fashion):
    train, test = fashion
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert np.array_equal(np.bincount(train.labels), [6000] * 10)
    assert np.array_equal(np.bincount(test.labels), [1000] * 10)
    # the normalisation constants are this data's: normalised pixels have mean 0, std 1
    x, _ = next(iter(Loader(train, 60000, 28, 1, train=False)))
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3


def test_real_fashion_mnist_loader_at_32_with_3_channels(fashion):
    loader = Loader(fashion[1], 500, 32, 3, train=True, seed=1)
    assert loader.cached and len(loader) == 20
    x, y = next(iter(loader))
    assert x.shape == (500, 3, 32, 32) and x.dtype == np.float32 and y.shape == (500,)
    assert np.array_equal(x[:, 0], x[:, 1]) and np.array_equal(x[:, 0], x[:, 2])


# ------------------------------------------------------------------------- CIFAR-10

def cifar_batch(n, seed, keys_bytes=True):
    rng = np.random.default_rng(seed)
    hwc = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    flat = hwc.transpose(0, 3, 1, 2).reshape(n, 3072)  # the stored layout: R plane, G, B
    labels = [int(v) for v in rng.integers(0, 10, n)]
    k = (lambda s: s.encode()) if keys_bytes else (lambda s: s)
    return {k("batch_label"): b"", k("data"): flat, k("labels"): labels,
            k("filenames"): [b"img.png"] * n}, hwc, labels


def write_cifar(directory, n=3, protocol=2, keys_bytes=True):
    directory.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, name in enumerate(data.CIFAR10_FILES["train"] + data.CIFAR10_FILES["test"]):
        d, hwc, labels = cifar_batch(n, i, keys_bytes)
        (directory / name).write_bytes(pickle.dumps(d, protocol=protocol))
        truth[name] = (hwc, labels)
    return truth


@pytest.mark.parametrize("protocol,keys_bytes", [(2, True), (2, False), (5, True)])
def test_cifar_batches_load_with_hwc_order(tmp_path, protocol, keys_bytes):
    root = tmp_path / "cifar-10-batches-py"
    truth = write_cifar(root, protocol=protocol, keys_bytes=keys_bytes)
    for arg in (root, tmp_path):  # the directory itself or its parent
        train = load_dataset("cifar10", "train", str(arg))
        test = load_dataset("cifar10", "test", str(arg))
        assert train.images.shape == (15, 32, 32, 3) and test.images.shape == (3, 32, 32, 3)
        np.testing.assert_array_equal(train.images[3:6], truth["data_batch_2"][0])
        np.testing.assert_array_equal(test.images, truth["test_batch"][0])
        assert test.labels.tolist() == truth["test_batch"][1] and test.labels.dtype == np.int64


def test_cifar_channel_planes_by_hand(tmp_path):
    flat = np.zeros((1, 3072), np.uint8)
    flat[0, 0] = 10            # red (0, 0)
    flat[0, 1024 + 33] = 20    # green (1, 1)
    flat[0, 2048 + 31] = 30    # blue (0, 31)
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": flat, b"labels": [7]}, protocol=2))
    images, labels = load_cifar_batch(path)
    assert images[0, 0, 0].tolist() == [10, 0, 0]
    assert images[0, 1, 1].tolist() == [0, 20, 0]
    assert images[0, 0, 31].tolist() == [0, 0, 30]
    assert images.sum() == 60 and labels.tolist() == [7]


def test_cifar_python2_style_module_names(tmp_path):
    # the real files were written by Python 2 numpy: numpy.core.multiarray._reconstruct
    d, hwc, _ = cifar_batch(2, 0)
    raw = pickle.dumps(d, protocol=2)
    assert b"cnumpy._core.multiarray\n" in raw or b"cnumpy.core.multiarray\n" in raw
    raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    (tmp_path / "b").write_bytes(raw)
    np.testing.assert_array_equal(load_cifar_batch(tmp_path / "b")[0], hwc)


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickles_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(pickle.dumps({b"data": Evil(marker), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1: refusing to unpickle (posix|nt|os)\.system"):
        load_cifar_batch(evil)
    assert not marker.exists()
    evil.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(DataError, match="refusing to unpickle builtins.eval"):
        load_cifar_batch(evil)
    evil.write_bytes(b"c_codecs\nencode\n(Vx\nVrot13\ntR.")
    with pytest.raises(DataError, match="refusing _codecs.encode"):
        load_cifar_batch(evil)
    evil.write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="data_batch_1: not a CIFAR-10 python batch"):
        load_cifar_batch(evil)
    evil.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"expected 'data' as uint8 \[n, 3072\]"):
        load_cifar_batch(evil)
    evil.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}))
    with pytest.raises(DataError, match="expected 'labels' as a list of 2 ints"):
        load_cifar_batch(evil)


def test_cifar_missing_data_messages(tmp_path):
    with pytest.raises(DataError, match="cifar10: no data directory given") as err:
        load_dataset("cifar10", "train")
    assert "cifar-10-python.tar.gz" in str(err.value) and "--data-dir" in str(err.value)
    with pytest.raises(DataError, match="cifar10: no directory"):
        load_dataset("cifar10", "train", str(tmp_path / "nowhere"))
    write_cifar(tmp_path / "c")
    os.remove(tmp_path / "c" / "data_batch_4")
    load_dataset("cifar10", "test", str(tmp_path / "c"))
    with pytest.raises(DataError, match="cifar10: missing data_batch_4 in"):
        load_dataset("cifar10", "train", str(tmp_path / "c"))


# ------------------------------------------------------------------------ synthetic

def test_synthetic_is_deterministic_balanced_and_learnable():
    train = load_dataset("synthetic", "train", synthetic_size=2000, seed=3)
    again = load_dataset("synthetic", "train", synthetic_size=2000, seed=3)
    test = load_dataset("synthetic", "test", synthetic_size=2000, seed=3)
    assert train.images.shape == (2000, 32, 32, 3) and test.images.shape == (500, 32, 32, 3)
    assert np.array_equal(train.images, again.images) and np.array_equal(train.labels, again.labels)
    assert np.array_equal(np.bincount(train.labels), [200] * 10)
    other = load_dataset("synthetic", "train", synthetic_size=2000, seed=4)
    assert not np.array_equal(train.images, other.images)
    # nearest class mean (a linear model) beats chance (10%) by far on the test split
    x = train.images.reshape(2000, -1).astype(np.float64)
    means = np.stack([x[train.labels == k].mean(0) for k in range(10)])
    t = test.images.reshape(500, -1).astype(np.float64)
    dist = (t ** 2).sum(1)[:, None] - 2 * t @ means.T + (means ** 2).sum(1)[None]
    assert (dist.argmin(1) == test.labels).mean() > 0.5
    with pytest.raises(DataError, match="synthetic_size"):
        load_dataset("synthetic", "train", synthetic_size=0)


# --------------------------------------------------------------------------- Loader

def custom(images, labels=None, name="custom", num_classes=None):
    images = np.asarray(images, np.uint8)
    if labels is None:
        labels = np.arange(images.shape[0])
    labels = np.asarray(labels, np.int64)
    return Dataset(name, images, labels, num_classes or max(int(labels.max()) + 1, 1))


def test_resize_bilinear_on_simple_patterns():
    # upsampling 2 -> 4 with half-pixel centres: [a, .75a + .25b, .25a + .75b, b]
    img = np.array([0, 200], np.uint8).reshape(1, 1, 2, 1).repeat(2, axis=1)
    out = resize_bilinear(img, 4)
    assert out.shape == (1, 4, 4, 1)
    assert out[0, :, :, 0].tolist() == [[0, 50, 150, 200]] * 4
    # downsampling 4 -> 2 averages pixel pairs
    img = np.array([[0, 100, 40, 60]], np.uint8).reshape(1, 1, 4, 1).repeat(4, axis=1)
    assert resize_bilinear(img, 2)[0, :, :, 0].tolist() == [[50, 50]] * 2
    # a constant image stays constant; same size is the identity
    const = np.full((3, 28, 28, 3), 77, np.uint8)
    assert (resize_bilinear(const, 32) == 77).all() and resize_bilinear(const, 28) is const
    # a vertical ramp stays a ramp (rows are interpolated, columns untouched)
    ramp = (np.arange(8, dtype=np.uint8) * 30).reshape(1, 8, 1, 1).repeat(8, axis=2)
    big = resize_bilinear(ramp, 16)[0, :, :, 0]
    assert (big == big[:, :1]).all() and (np.diff(big[:, 0].astype(int)) >= 0).all()
    assert big[1:-1, 0].tolist() == [int(np.rint(v)) for v in
                                     (np.arange(1, 15) * 0.5 - 0.25) * 30]


def test_loader_shapes_dtype_and_normalisation():
    imgs = np.full((10, 32, 32, 3), 128, np.uint8)
    ds = custom(imgs, np.arange(10) % 10, name="cifar10")
    loader = Loader(ds, 4, 32, train=False)
    assert len(loader) == 3 and not loader.augment and not loader.drop_last
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(4, 3, 32, 32)] * 2 + [(2, 3, 32, 32)]
    x, y = batches[0]
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.flags.c_contiguous
    mean, std = NORMALIZATION["cifar10"]
    for c in range(3):
        assert np.allclose(x[:, c], (128 / 255 - mean[c]) / std[c], atol=1e-6)
    train = Loader(ds, 4, 32, train=True)
    assert len(train) == 2 and train.augment and train.drop_last and train.pad == 4


def test_loader_resize_and_channel_replication():
    img = np.array([0, 200], np.uint8).reshape(1, 1, 2, 1).repeat(2, axis=1)
    ds = custom(np.concatenate([img, img]), [0, 1])
    x, _ = next(iter(Loader(ds, 2, 4, 3, train=False)))
    assert x.shape == (2, 3, 4, 4)
    pixels = x * ds_std(ds) + ds_mean(ds)
    expected = np.array([0, 50, 150, 200]) / 255
    for c in range(3):
        np.testing.assert_allclose(pixels[0, c], np.tile(expected, (4, 1)), atol=1e-6)
    one = Loader(ds, 2, 4, 1, train=False)
    assert next(iter(one))[0].shape == (2, 1, 4, 4)
    with pytest.raises(DataError, match="3 channels, the model wants 1"):
        Loader(custom(np.zeros((2, 4, 4, 3))), 2, 4, 1, train=False)


def ds_mean(ds):
    return float(np.asarray(ds.images, np.float64).mean() / 255)


def ds_std(ds):
    return float(np.asarray(ds.images, np.float64).std() / 255)


def test_cached_and_per_batch_resize_agree():
    ds = load_dataset("synthetic", "test", synthetic_size=64)
    a = Loader(ds, 8, 40, train=True, seed=5)
    b = Loader(ds, 8, 40, train=True, seed=5, cache_bytes=0)
    assert a.cached and not b.cached
    for (xa, ya), (xb, yb) in zip(a, b):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)


def crops_of(image, pad, flip):
    """All pad-cropped (and optionally flipped) versions of one HWC image."""
    s = image.shape[0]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            crop = padded[oy:oy + s, ox:ox + s]
            yield crop[:, ::-1] if flip else crop


def test_augmentation_changes_train_batches_only_and_is_crop_plus_flip():
    ds = load_dataset("synthetic", "train", synthetic_size=64, seed=1)
    plain = Loader(ds, 16, 32, train=True, seed=2, augment=False)
    aug = Loader(ds, 16, 32, train=True, seed=2)
    test = Loader(ds, 16, 32, train=False)
    flips = 0
    for (xp, yp), (xa, ya) in zip(plain, aug):
        assert np.array_equal(yp, ya)  # same order: augmentation does not change the shuffle
        assert not np.array_equal(xp, xa)
        # every augmented image is a zero-padded crop of its image, maybe flipped
        for i in range(4):
            orig = np.rint((xp[i] * aug.std[:, None, None] + aug.mean[:, None, None]) * 255)
            got = np.rint((xa[i] * aug.std[:, None, None] + aug.mean[:, None, None]) * 255)
            orig, got = orig.transpose(1, 2, 0), got.transpose(1, 2, 0)
            match = [f for f in (False, True) if any(np.array_equal(got, c)
                                                     for c in crops_of(orig, 4, f))]
            assert match, "augmented image is not a crop/flip of the original"
            flips += match[0]
    assert flips > 0  # some flips happened (16 images, 1/2 each)
    x, y = next(iter(test))
    np.testing.assert_array_equal(y, ds.labels[:16])  # test: stored order, no augmentation
    expected = (ds.images[:16].transpose(0, 3, 1, 2) / 255 - test.mean[:, None, None]) \
        / test.std[:, None, None]
    np.testing.assert_allclose(x, expected, atol=1e-5)
    # a test loader is stateless: the partial iteration above changed nothing
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(test, test))
    assert len(list(test)) == len(test) == 4 and test.state()["batch"] == 0


def test_determinism_from_seed():
    ds = load_dataset("synthetic", "train", synthetic_size=64)
    a = [b for b in Loader(ds, 8, 32, train=True, seed=7)]
    b = [b for b in Loader(ds, 8, 32, train=True, seed=7)]
    c = [b for b in Loader(ds, 8, 32, train=True, seed=8)]
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(a, c))


def sample_ids(x):
    """Recover the sample index from images whose pixel (0, 0) encodes it."""
    return np.rint(x[:, 0, 0, 0] * 1000).astype(int)


def test_every_sample_once_per_epoch_and_epochs_differ():
    n = 23
    imgs = np.zeros((n, 8, 8, 1), np.uint8)
    ds = custom(imgs, np.arange(n), num_classes=n)
    loader = Loader(ds, 5, 8, 1, train=True, drop_last=False, augment=False)
    assert len(loader) == 5
    epochs = []
    for e in range(3):
        assert loader.epoch == e
        ys = np.concatenate([y for _, y in loader])
        assert sorted(ys.tolist()) == list(range(n))
        epochs.append(ys.tolist())
    assert epochs[0] != epochs[1] != epochs[2]
    dropping = Loader(ds, 5, 8, 1, train=True)
    ys = np.concatenate([y for _, y in dropping])
    assert len(dropping) == 4 and ys.size == 20 and np.unique(ys).size == 20
    with pytest.raises(DataError, match="batch 30 is larger than its 23 images"):
        Loader(ds, 30, 8, 1, train=True)


def test_resume_reproduces_the_same_batches():
    ds = load_dataset("synthetic", "train", synthetic_size=40)
    a = Loader(ds, 8, 32, train=True, seed=11)
    stream, states = [], []
    for _ in range(3):  # 3 epochs of 5 batches
        for x, y in a:
            stream.append((x, y))
            states.append(a.state())
    assert states[4] == {"epoch": 1, "batch": 0, "seed": 11, "num_batches": 5, "num_samples": 40}
    assert states[6]["epoch"] == 1 and states[6]["batch"] == 2
    b = Loader(ds, 8, 32, train=True, seed=11)
    b.set_state({k: np.int64(v) for k, v in states[6].items()})  # as np.load gives them back
    resumed = []
    while len(resumed) < len(stream) - 7:
        resumed.extend(b)
    for (xa, ya), (xb, yb) in zip(stream[7:], resumed):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    b.epoch = 2  # setting the epoch starts it at its first batch
    assert np.array_equal(next(iter(b))[0], stream[10][0])
    with pytest.raises(DataError, match="num_batches 5, this loader has 10"):
        Loader(ds, 4, 32, train=True, seed=11).set_state(states[6])
    with pytest.raises(DataError, match="seed 11"):
        Loader(ds, 8, 32, train=True, seed=12).set_state(states[6])
    with pytest.raises(DataError, match="out of range"):
        b.set_state({"epoch": 0, "batch": 5})


def test_dataset_validation():
    with pytest.raises(DataError, match="uint8"):
        Dataset("x", np.zeros((2, 4, 4, 3), np.float32), np.zeros(2, np.int64), 10)
    with pytest.raises(DataError, match="labels must be in 0..9"):
        Dataset("x", np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 10]), 10)
