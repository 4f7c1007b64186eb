"""Hostile trace directories (issue 13, part 2): each is one TraceError naming the file and
the field, never a traceback, a hang, or a silently accepted wrong value."""

import os
import re

import numpy as np
import pytest
import yaml

from simulator.trace import TraceError, read_trace, write_trace
from workloads.networks import build_network
from workloads.synthetic import synthetic_trace


@pytest.fixture
def trace_dir(tmp_path):
    trace = synthetic_trace(build_network("simple-cnn", image_size=8), 0.8, batch=2, seed=1)
    return write_trace(trace, tmp_path / "t")


def edit_manifest(d, change):
    manifest = yaml.safe_load((d / "manifest.yaml").read_text())
    change(manifest)
    (d / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def rewrite_layer(d, index, **arrays):
    name = yaml.safe_load((d / "manifest.yaml").read_text())["layers"][index]["file"]
    with np.load(d / name) as data:
        kept = {k: data[k] for k in data.files}
    kept.update(arrays)
    np.savez_compressed(d / name, **kept)
    return name


def test_the_fixture_reads(trace_dir):
    assert len(read_trace(trace_dir).layers) == 4


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("tensor", ["weight", "input", "grad_output"])
def test_non_finite_values_are_refused(trace_dir, bad, tensor):
    with np.load(trace_dir / "000_conv1.npz") as data:
        a = data[tensor].copy() if tensor in data.files else None
    if a is None:
        pytest.skip(f"the fixture has no {tensor}")
    a.flat[5] = bad
    rewrite_layer(trace_dir, 0, **{tensor: a})
    with pytest.raises(TraceError, match=rf"000_conv1\.npz: {tensor}: expected finite values, "
                                         rf"found {bad}"):
        read_trace(trace_dir)


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble, np.int32])
def test_unsupported_dtypes_are_refused(trace_dir, dtype):
    with np.load(trace_dir / "000_conv1.npz") as data:
        weight = data["weight"].astype(dtype)
    rewrite_layer(trace_dir, 0, weight=weight)
    with pytest.raises(TraceError, match="weight: expected float32 or float64 values"):
        read_trace(trace_dir)


def test_an_empty_batch_is_refused(trace_dir):
    with np.load(trace_dir / "000_conv1.npz") as data:
        empty = {k: data[k][:0] for k in ("input", "input_saved", "grad_output") if k in data.files}
    rewrite_layer(trace_dir, 0, **empty)
    with pytest.raises(TraceError, match="input: expected a batch of at least 1 sample"):
        read_trace(trace_dir)


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.npz", "sub/../../x.npz", "", 7, None])
def test_layer_files_must_stay_inside_the_directory(trace_dir, name):
    (trace_dir.parent / "outside.npz").write_bytes((trace_dir / "000_conv1.npz").read_bytes())
    edit_manifest(trace_dir, lambda m: m["layers"][0].update(file=name))
    with pytest.raises(TraceError, match=r"layers\[0\]: file: expected"):
        read_trace(trace_dir)


def test_a_symlink_out_of_the_directory_is_refused(trace_dir):
    outside = trace_dir.parent / "elsewhere.npz"
    os.replace(trace_dir / "000_conv1.npz", outside)
    os.symlink(outside, trace_dir / "000_conv1.npz")
    with pytest.raises(TraceError, match="leads out of the trace directory"):
        read_trace(trace_dir)


def test_a_fifo_as_layer_file_is_refused_without_blocking(trace_dir):
    os.remove(trace_dir / "000_conv1.npz")
    os.mkfifo(trace_dir / "000_conv1.npz")
    with pytest.raises(TraceError, match=r"000_conv1\.npz: expected a regular file"):
        read_trace(trace_dir)


@pytest.mark.parametrize("field", ["stride", "groups", "dilation", "padding", "in_hw"])
def test_conv_geometry_is_required_not_defaulted(trace_dir, field):
    edit_manifest(trace_dir, lambda m: m["layers"][0].pop(field))
    with pytest.raises(TraceError, match=rf"layers\[0\]: missing field '{field}'"):
        read_trace(trace_dir)


@pytest.mark.parametrize("version", [True, 1.0, "1"])
def test_format_version_must_be_the_integer(trace_dir, version):
    edit_manifest(trace_dir, lambda m: m.update(format_version=version))
    with pytest.raises(TraceError, match="format_version: expected 1"):
        read_trace(trace_dir)


def test_bool_is_not_an_integer_in_a_layer(trace_dir):
    edit_manifest(trace_dir, lambda m: m["layers"][0].update(in_channels=True))
    with pytest.raises(TraceError, match="in_channels: expected an integer >= 1, got True"):
        read_trace(trace_dir)


def write_members(path, members: dict) -> None:
    """An archive with exactly these members (name -> bytes), as a hostile npz would be."""
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def npy_bytes(a) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_archive_members_are_checked_from_their_headers_before_reading(trace_dir):
    name = yaml.safe_load((trace_dir / "manifest.yaml").read_text())["layers"][0]["file"]
    with np.load(trace_dir / name) as data:
        kept = {k + ".npy": npy_bytes(data[k]) for k in data.files}
    cases = [
        ({**kept, "extra.npy": npy_bytes(np.zeros(3, np.float32))}, "'extra.npy': expected only the arrays"),
        ({**kept, "weight.npy": b"hello world, not an NPY array"}, "weight: expected an NPY array"),
        ({"weight": kept["weight.npy"], "input.npy": kept["input.npy"]}, "'weight': expected only"),
        ({**kept, "weight.npy": kept["weight.npy"] + b"junk"}, "weight: "),  # size differs
        ({**kept, "input.npy": npy_bytes(np.zeros((2, 1, 8), np.float32))}, "input: expected shape"),
        ({**kept, "weight.npy": npy_bytes(np.array([object()], dtype=object))}, "expected float32 or float64"),
    ]
    for members, fragment in cases:
        write_members(trace_dir / name, members)
        with pytest.raises(TraceError, match=re.escape(fragment)):
            read_trace(trace_dir)


def test_a_zip_bomb_of_the_wrong_shape_is_refused_unread(trace_dir):
    """A few kB that would inflate to 400 MB: refused from the NPY header alone."""
    import tracemalloc

    name = yaml.safe_load((trace_dir / "manifest.yaml").read_text())["layers"][0]["file"]
    with np.load(trace_dir / name) as data:
        kept = {k + ".npy": npy_bytes(data[k]) for k in data.files}
    import zipfile

    with zipfile.ZipFile(trace_dir / name, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in kept.items():
            if k != "weight.npy":
                z.writestr(k, v)
        z.writestr("weight.npy", npy_bytes(np.zeros(100_000_000, np.float32)))
    assert (trace_dir / name).stat().st_size < 2_000_000
    tracemalloc.start()
    with pytest.raises(TraceError, match="weight: expected shape"):
        read_trace(trace_dir)
    assert tracemalloc.get_traced_memory()[1] < 50_000_000
    tracemalloc.stop()


@pytest.mark.parametrize("key, value, fragment", [
    ("network", "/tmp/x/abs", "network: expected a name"),
    ("network", "a\nb", "network: expected a name"),
    ("method", {"a": 1}, "method: expected a name"),
    ("dtype", "int8", "dtype: expected float32 or float64"),
    ("dtype", "float64", "dtype: the manifest says float64"),
    ("image_size", 10 ** 29, "image_size: expected an integer in 1..4,096"),
    ("batch", -5, "batch: expected an integer"),
])
def test_manifest_fields_are_typed(trace_dir, key, value, fragment):
    edit_manifest(trace_dir, lambda m: m.update({key: value}))
    with pytest.raises(TraceError, match=re.escape(fragment)):
        read_trace(trace_dir)


@pytest.mark.parametrize("name", ["a\nb", "\x1b[31mred", "x" * 300])
def test_layer_names_are_printable_and_short(trace_dir, name):
    edit_manifest(trace_dir, lambda m: m["layers"][0].update(name=name))
    with pytest.raises(TraceError, match="name: expected at most 200 printable characters"):
        read_trace(trace_dir)


def test_values_beyond_a_training_runs_range_are_refused(trace_dir):
    with np.load(trace_dir / "000_conv1.npz") as data:
        w = data["weight"].astype(np.float64)
    w.flat[3] = 1e308
    rewrite_layer(trace_dir, 0, weight=w, **{})
    edit_manifest(trace_dir, lambda m: m.pop("dtype", None))
    with pytest.raises(TraceError, match="weight: expected magnitudes up to 1e\\+15"):
        read_trace(trace_dir)


def test_a_nul_or_overlong_file_name_is_one_line(trace_dir):
    for bad in ("000_conv1.npz\x00x", "f" * 5000):
        edit_manifest(trace_dir, lambda m: m["layers"][0].update(file=bad))
        with pytest.raises(TraceError) as info:
            read_trace(trace_dir)
        assert "\n" not in str(info.value) and len(str(info.value)) < 500
