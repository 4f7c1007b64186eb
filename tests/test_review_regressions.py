"""Regressions for problems an internal review found: bad traces, silently ignored keys,
empty runs, partial summaries, zero-insert bounds."""

import re
import subprocess
import sys

import pytest
import yaml

import simulator
from simulator.results import summarize
from simulator.trace import LayerSpec, TraceError, read_trace, write_trace
from workloads.networks import build_network
from workloads.synthetic import synthetic_trace


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory):
    net = build_network("resnet18-cifar", image_size=8)
    return write_trace(synthetic_trace(net, 0.5, seed=1), tmp_path_factory.mktemp("t") / "t")


def _edit(src, dst, edit):
    import shutil

    shutil.copytree(src, dst)
    m = yaml.safe_load((dst / "manifest.yaml").read_text())
    edit(m)
    (dst / "manifest.yaml").write_text(yaml.safe_dump(m))
    return dst


@pytest.mark.parametrize("field,value,expected", [
    ("stride", 0, "stride: expected an integer >= 1"),
    ("groups", 0, "groups: expected an integer >= 1"),
    ("kernel", "3", "kernel: expected an integer >= 1"),
    ("in_hw", None, "in_hw: expected [height, width]"),
    ("in_hw", "57", "in_hw: expected [height, width]"),
    ("bias", "no", "bias: expected true or false"),
    ("padding", -1, "padding: expected an integer >= 0"),
])
def test_bad_layer_fields_are_trace_errors(tmp_path, trace_dir, field, value, expected):
    d = _edit(trace_dir, tmp_path / "bad", lambda m: m["layers"][1].__setitem__(field, value))
    with pytest.raises(TraceError, match=re.escape(expected)):
        read_trace(d)


def test_bad_manifest_and_archives_are_trace_errors(tmp_path, trace_dir):
    d = _edit(trace_dir, tmp_path / "s", lambda m: m.__setitem__("sparsity", "high"))
    with pytest.raises(TraceError, match="sparsity: expected a number"):
        read_trace(d)
    d = _edit(trace_dir, tmp_path / "dup", lambda m: m["layers"][2].__setitem__("name", m["layers"][1]["name"]))
    with pytest.raises(TraceError, match="unique layer name"):
        read_trace(d)
    d = _edit(trace_dir, tmp_path / "trunc", lambda m: None)
    npz = d / yaml.safe_load((d / "manifest.yaml").read_text())["layers"][0]["file"]
    npz.write_bytes(npz.read_bytes()[:100])
    with pytest.raises(TraceError, match="cannot read as an npz archive"):
        read_trace(d)


def test_fc_spec_with_spatial_size_is_rejected():
    with pytest.raises(ValueError, match="fc layers are 1x1"):
        LayerSpec("fc", "fc", 4, 4, in_hw=(2, 2), out_hw=(2, 2))
    with pytest.raises(ValueError, match="at least as large as the dilated kernel"):
        LayerSpec("c", "conv", 2, 2, kernel=6, in_hw=(5, 5), out_hw=(0, 0))


def test_bad_trace_from_the_cli_is_one_line_exit_2(tmp_path, trace_dir):
    d = _edit(trace_dir, tmp_path / "bad", lambda m: m["layers"][0].__setitem__("stride", 0))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"workload": {"trace": str(d)}}))
    proc = subprocess.run([sys.executable, "-m", "simulator.cli", "run", str(cfg), "-q",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "stride" in proc.stderr


@pytest.mark.parametrize("key,value", [("sparsity", [0.5, 0.9]), ("batch", 8), ("seed", 3)])
def test_trace_workloads_reject_synthetic_keys(key, value):
    with pytest.raises(simulator.ConfigError, match=f"workload.{key}: expected no value"):
        simulator.parse_config({"workload": {"trace": "somewhere", key: value}})


@pytest.mark.parametrize("section,key,value,expected", [
    ("architecture", "frequency_mhz", float("inf"), r"a number from 0.001 to 1e\+06"),
    (None, "name", "../../x", "letters, digits"),
    ("workload", "image_size", 100_000_000, "<= 4096"),
])
def test_more_impossible_values(section, key, value, expected):
    data = {"workload": {"network": "resnet18-cifar"}}
    if section:
        data.setdefault(section, {})[key] = value
    else:
        data[key] = value
    with pytest.raises(simulator.ConfigError, match=expected):
        simulator.parse_config(data)


def test_a_run_with_no_layer_passes_is_an_input_error(tmp_path):
    net = build_network("resnet18-cifar", image_size=8)
    t = synthetic_trace(net, 0.5)
    t.layers = t.layers[:1]
    write_trace(t, tmp_path / "one")
    cfg = simulator.parse_config({"workload": {"trace": str(tmp_path / "one")}, "passes": ["input_grad"]})
    with pytest.raises(simulator.ConfigError, match="at least one layer pass"):
        simulator.run(cfg)


def test_partial_pass_lists_get_no_iteration_column():
    cfg = simulator.parse_config({"architecture": {"tiles": 2, "rows": 4},
                                  "workload": {"network": "resnet18-cifar", "image_size": 8},
                                  "passes": ["forward", "weight_grad"]})
    phases = set(summarize(simulator.run(cfg))["phase"])
    assert phases == {"forward", "weight_grad"}


def test_zero_insert_scheduling_dy_keeps_ideal_below_cycles():
    cfg = simulator.parse_config({
        "architecture": {"tiles": 2, "rows": 2, "lanes": 2, "columns": 7,
                         "frontend": {"shape": "T", "lookahead": 4, "lookaside": 0}},
        "workload": {"network": "resnet18-cifar", "image_size": 8},
        "passes": ["input_grad"],
        "lowering": {"input_grad_lowering": "zero-insert",
                     "scheduled_operand": {"input_grad": "activations"}}})
    df = simulator.run(cfg)
    assert (df["ideal_cycles"] <= df["cycles"]).all()
