"""Memory refused before the work (simulator/resources.py, simulator/footprint.py) and the
config's per-field limits that keep validation cheap."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from simulator.config import ConfigError, Lowering, parse_config
from simulator.footprint import largest_pass_elements, pass_operand_elements, streamed_run
from simulator.simulate import PassPlan
from simulator.frontend import _place, max_lookaside
from simulator.resources import GIB, MemoryLimitError, check_memory, memory_limit_bytes
from simulator.cli import main
from tests.util import run_main
from workloads.networks import build_network

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp_path, **workload) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "architecture": {"tiles": 2, "rows": 4, "lanes": 16},
        "workload": {"network": "resnet18-cifar", "image_size": 8, "sparsity": [0.5], **workload},
        "passes": ["forward"]}))
    return path


def test_operand_elements_by_hand():
    """A 3x3/2 conv, 20 -> 8 channels, 9x9 -> 5x5 (padding 1), batch 2, 16 lanes."""
    spec = build_network("resnet18-cifar", image_size=8).layers[1]
    spec = type(spec)(name="c", kind="conv", in_channels=20, out_channels=8, kernel=3, stride=2,
                      padding=1, dilation=1, groups=1, in_hw=(9, 9), out_hw=(5, 5), bias=False)
    assert pass_operand_elements(spec, "forward", 2, 16) == (8 + 2 * 25) * 9 * 32
    assert pass_operand_elements(spec, "input_grad", 2, 16) == (20 + 2 * 81) * 4 * 16  # ceil(3/2)^2 taps
    assert pass_operand_elements(spec, "input_grad", 2, 16, "zero-insert") == (20 + 2 * 81) * 9 * 16
    assert pass_operand_elements(spec, "weight_grad", 2, 16) == (8 + 20 * 9) * 64  # 50 positions -> 64


def test_first_layer_input_grad_and_space_to_depth_follow_the_lowering():
    net = build_network("resnet50", image_size=224)
    conv1 = net.layers[0]
    plain = largest_pass_elements([conv1], 1, 16, ("forward", "input_grad"),
                                  Lowering(first_layer="pad", first_layer_input_grad=True))
    s2d = largest_pass_elements([conv1], 1, 16, ("forward", "input_grad"),
                                Lowering(first_layer="space-to-depth"))
    assert plain == pass_operand_elements(conv1, "input_grad", 1, 16)  # 112x112 outputs x 16 taps
    assert s2d == pass_operand_elements(conv1, "forward", 1, 16, space_to_depth=True) < plain


def test_estimate_is_above_the_measured_peak(tmp_path):
    """The peak resident memory of a real run (in its own process) stays under the estimate.
    (VmHWM, not ru_maxrss: after fork and exec, ru_maxrss keeps the forking pytest's peak.)"""
    code = (
        "import simulator\n"
        "from simulator.config import parse_config\n"
        "cfg = parse_config({'architecture': {'tiles': 4, 'rows': 8, 'lanes': 16}, 'workload': "
        "{'network': 'resnet18-cifar', 'image_size': 32, 'batch': 8, 'sparsity': [0.8]}}, 'x')\n"
        "simulator.run(cfg, workers=2)\n"
        "print([int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=300, check=True)
    peak = int(out.stdout.split()[-1])
    cfg = parse_config({"architecture": {"lanes": 16}, "workload": {
        "network": "resnet18-cifar", "image_size": 32, "batch": 8, "sparsity": [0.8]}}, "x")
    specs = build_network("resnet18-cifar", image_size=32).layers
    estimate = streamed_run(specs, 8, cfg.architecture, PassPlan(cfg.passes, cfg.lowering), workers=2)[0]
    assert peak < estimate, (peak, estimate)


def test_limit_sources(monkeypatch):
    monkeypatch.setenv("ACCELSIM_MAX_MEMORY", "2.5")
    assert memory_limit_bytes() == (int(2.5 * GIB), "ACCELSIM_MAX_MEMORY")
    assert memory_limit_bytes(1.0) == (GIB, "--max-memory")
    monkeypatch.setenv("ACCELSIM_MAX_MEMORY", "lots")
    with pytest.raises(MemoryLimitError, match="ACCELSIM_MAX_MEMORY: expected a memory limit"):
        memory_limit_bytes()
    monkeypatch.delenv("ACCELSIM_MAX_MEMORY")
    with pytest.raises(MemoryLimitError, match=r"x: needs about 2.0 GiB .* more than the 1.0 GiB "
                                               r"allowed \(--max-memory\); lower workload.batch"):
        check_memory(2 * GIB, "x", "workload.batch", 1.0)
    check_memory(GIB // 2, "x", "workload.batch", 1.0)


def test_ulimit_lowers_the_limit():
    """Under `ulimit -v` the limit is the address space less what numba and BLAS reserve."""
    code = "from simulator.resources import memory_limit_bytes; print(*memory_limit_bytes(), sep='|')"
    limit = 3 * GIB
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={k: v for k, v in os.environ.items() if k != "ACCELSIM_MAX_MEMORY"},
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
                         timeout=60, check=True)
    value, source = out.stdout.strip().split("|")
    assert int(value) == limit - (768 << 20) and source.startswith("ulimit -v")


def test_run_and_check_refuse_before_the_work(tmp_path, monkeypatch):
    config = write_config(tmp_path, batch=10 ** 8)
    for command in ("run", "check"):
        t = time.monotonic()
        rc, stdout, stderr = run_main([command, str(config), "-q", "--out", str(tmp_path / "o")]
                                      if command == "run" else [command, str(config), "-q"])
        assert rc == 2 and len(stderr.splitlines()) == 1, stderr
        assert stderr.startswith(f"accelsim: error: {config}: resnet18-cifar at image_size 8, "
                                 "batch 100000000, 16 lanes (largest "
                                 f"{'chunk' if command == 'run' else 'pass'}: ")
        assert "of streams): needs about " in stderr and "--max-memory" in stderr
        assert "lower workload.batch, workload.image_size or workload.num_classes" in stderr
        assert time.monotonic() - t < 30
    assert not (tmp_path / "o").exists()
    small = write_config(tmp_path)
    monkeypatch.setenv("ACCELSIM_MAX_MEMORY", "0.01")
    rc, _, stderr = run_main(["run", str(small), "-q", "--out", str(tmp_path / "o")])
    assert rc == 2 and "(ACCELSIM_MAX_MEMORY)" in stderr
    rc, _, stderr = run_main(["run", str(small), "-q", "--out", str(tmp_path / "o"), "--max-memory", "64"])
    assert rc == 0, stderr


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "lots"])
def test_max_memory_option_is_checked(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", str(write_config(tmp_path)), "--max-memory", bad])
    assert info.value.code == 2
    assert "--max-memory: expected a memory limit in GiB" in capsys.readouterr().err


# ------------------------------------------------------------------ per-field limits

@pytest.mark.parametrize("section, key, value, expected", [
    ("architecture", "lanes", 100_000, "architecture.lanes: expected an integer <= 1,024"),
    ("architecture", "tiles", 10 ** 9, "architecture.tiles: expected an integer <= 1,024"),
    ("frontend", "lookahead", 10 ** 9, "architecture.frontend.lookahead: expected an integer <= 16"),
    ("frontend", "lookaside", 200_000, "architecture.frontend.lookaside: expected an integer <= 64"),
])
def test_field_limits_are_one_fast_line(section, key, value, expected):
    arch = {"frontend": {"shape": "T", "lookahead": 2, "lookaside": 5}}
    (arch["frontend"] if section == "frontend" else arch)[key] = value
    t = time.monotonic()
    with pytest.raises(ConfigError, match=expected):
        parse_config({"architecture": arch, "workload": {"network": "simple-cnn"}}, "x.yaml")
    assert time.monotonic() - t < 2


def test_too_many_custom_offsets():
    offsets = [[1, i] for i in range(1, 100)]
    with pytest.raises(ConfigError, match="offsets: expected at most 64 lateral connections"):
        parse_config({"architecture": {"frontend": {"lookahead": 1, "offsets": offsets}},
                      "workload": {"network": "simple-cnn"}}, "x.yaml")


def test_max_lookaside_search_equals_trying_every_value():
    def linear(shape, h, lanes, pattern):
        d = 0
        while _place(shape, h, d + 1, lanes, pattern) is not None:
            d += 1
        return d

    for shape in "TL":
        for pattern in ("spread", "dnnsim"):
            for h in (1, 2, 3, 5):
                for lanes in (1, 2, 3, 4, 7, 8, 16, 32):
                    assert max_lookaside(shape, h, lanes, pattern) == linear(shape, h, lanes, pattern)


def test_largest_lookaside_error_is_fast():
    """The error names the largest lookaside that fits (found by the binary search)."""
    t = time.monotonic()
    with pytest.raises(ConfigError, match=r"expected lookaside <= 31"):
        parse_config({"architecture": {"lanes": 32, "frontend": {
            "shape": "L", "lookahead": 1, "lookaside": 40}}, "workload": {"network": "simple-cnn"}}, "x")
    assert time.monotonic() - t < 2


@pytest.mark.parametrize("key, value", [("architecture.frequency_mhz", 1e308),
                                        ("memory.dram.latency_ns", 1e308),
                                        ("memory.dram.bandwidth_gbps", 2.2250738585072014e-308),
                                        ("memory.buffers_kib.activations", 1e308)])
def test_timing_quantities_are_bounded(key, value):
    section, *rest = key.split(".")
    data = {"workload": {"network": "simple-cnn"}}
    node = data.setdefault(section, {})
    for k in rest[:-1]:
        node = node.setdefault(k, {})
    node[rest[-1]] = value
    with pytest.raises(ConfigError, match=re.escape(key) + ": expected a number from"):
        parse_config(data, "x.yaml")


def test_too_many_sparsities():
    with pytest.raises(ConfigError, match="workload.sparsity: expected at most 1,000 values"):
        parse_config({"workload": {"network": "simple-cnn",
                                   "sparsity": [i / 100_000 for i in range(99_999)]}}, "x.yaml")
