"""Hostile trace directories (issue 13, part 2): each is one TraceError naming the file and
the field, never a traceback, a hang, or a silently accepted wrong value."""

import os

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
