"""The trace format: bit-exact round trip, the reader's errors, simulating a trace on disk."""

import numpy as np
import pandas as pd
import pytest
import yaml

import simulator
from simulator.trace import FORMAT_VERSION, LayerSpec, TraceError, TraceLayer, read_trace, write_trace
from workloads.networks import build_network
from workloads.synthetic import synthetic_trace


@pytest.fixture
def trace():
    return synthetic_trace(build_network("resnet18-cifar", image_size=8), 0.8, batch=2, seed=4)


def test_round_trip_is_bit_exact(tmp_path, trace):
    trace.layers[2].grad_output = np.ones(trace.layers[2].spec.output_shape(2), dtype=np.float32)
    write_trace(trace, tmp_path / "t")
    back = read_trace(tmp_path / "t")
    assert back.network == trace.network and back.sparsity == 0.8 and back.method == trace.method
    for a, b in zip(trace.layers, back.layers):
        assert a.spec == b.spec
        assert a.weight.dtype == b.weight.dtype and np.array_equal(a.weight, b.weight)
        assert np.array_equal(a.input, b.input)
        assert (a.grad_output is None) == (b.grad_output is None)
    assert np.array_equal(back.layers[2].grad_output, trace.layers[2].grad_output)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    import os
    import stat
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "t").st_mode) == 0o777 & ~umask


def test_reader_rejects_other_versions_and_bad_files(tmp_path, trace):
    d = write_trace(trace, tmp_path / "t")
    manifest = yaml.safe_load((d / "manifest.yaml").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (d / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(TraceError, match="format_version"):
        read_trace(d)
    with pytest.raises(TraceError, match="no such file"):
        read_trace(tmp_path / "missing")
    manifest["format_version"] = FORMAT_VERSION
    manifest["layers"][0]["kernel"] = 5  # shape no longer matches the stored weight
    (d / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(TraceError, match=r"layers\[0\]|shape"):
        read_trace(d)


def test_layer_tensors_must_match_their_spec():
    spec = LayerSpec("fc", "fc", 4, 3)
    with pytest.raises(TraceError, match="weight"):
        TraceLayer(spec, weight=np.zeros((4, 3), np.float32), input=np.zeros((1, 4), np.float32))
    with pytest.raises(TraceError, match="grad_output"):
        TraceLayer(spec, weight=np.zeros((3, 4), np.float32), input=np.zeros((1, 4), np.float32),
                   grad_output=np.zeros((2, 3), np.float32))


def test_simulating_a_trace_on_disk_equals_the_synthetic_run(tmp_path, trace):
    write_trace(trace, tmp_path / "t")
    base = {"architecture": {"tiles": 2, "rows": 4, "lanes": 16}}
    synth = simulator.parse_config({**base, "workload": {"network": "resnet18-cifar", "image_size": 8,
                                                         "batch": 2, "seed": 4, "sparsity": [0.8]}})
    disk = simulator.parse_config({**base, "workload": {"trace": str(tmp_path / "t")}})
    pd.testing.assert_frame_equal(simulator.run(synth), simulator.run(disk))


def test_backward_passes_need_grad_output_in_the_trace(tmp_path, trace):
    for layer in trace.layers:
        layer.grad_output = None
    write_trace(trace, tmp_path / "t")
    cfg = simulator.parse_config({"workload": {"trace": str(tmp_path / "t")}}, source="c.yaml")
    with pytest.raises(simulator.ConfigError, match=r"^c\.yaml: passes: the input_grad pass needs grad_output"):
        simulator.run(cfg)
    fwd = simulator.parse_config({"workload": {"trace": str(tmp_path / "t")}, "passes": ["forward"]})
    assert set(simulator.run(fwd)["pass"]) == {"forward"}


def test_write_trace_replaces_only_a_trace(tmp_path):
    trace = synthetic_trace(build_network("simple-cnn", 12, 10), 0.5, seed=0)
    target = tmp_path / "t"
    write_trace(trace, target)
    (tmp_path / ".t.old").mkdir()  # left by a write killed between its two renames
    (tmp_path / ".t.old" / "junk").write_text("x")
    write_trace(trace, target)  # a trace is replaced, the stale directory is no obstacle
    assert read_trace(target).network == "simple-cnn"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(TraceError, match="not a directory; refusing"):
        write_trace(trace, a_file)
    assert a_file.read_text() == "keep me"
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_text("x")
    with pytest.raises(TraceError, match="not a trace directory"):
        write_trace(trace, other)
    assert sorted(p.name for p in other.iterdir()) == ["a.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".t.old", "notes.txt", "photos", "t"]
