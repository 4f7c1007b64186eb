"""The regression corpus of issue 13: each hostile input reported there, through the command
line, ends in one `accelsim: error:` line and exit code 2, within a time limit, touching
nothing it did not make. (The property-based suite is test_hostile_properties.py; the
cases' details are tested where their code lives: test_safe_yaml, test_hostile_traces,
test_outputs, test_resources, test_sweep_hostile, test_hostile_training.)
"""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from simulator.trace import write_trace
from tests.util import run_main
from workloads.networks import build_network
from workloads.synthetic import synthetic_trace

SMALL = {"architecture": {"tiles": 2, "rows": 4, "lanes": 16},
         "workload": {"network": "simple-cnn", "sparsity": [0.5]}, "passes": ["forward"]}


@pytest.fixture(autouse=True)
def time_limit():
    """A case that hangs fails after 60 s instead of blocking the suite."""
    def expire(*_):
        raise TimeoutError("a hostile input hung for 60 s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def config_text(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return ["run", str(path), "-q", "--out", str(tmp_path / "out")]


def config(tmp_path: Path, edit) -> list[str]:
    data = yaml.safe_load(yaml.safe_dump(SMALL))
    edit(data)
    return config_text(tmp_path, yaml.safe_dump(data))


def trace(tmp_path: Path) -> Path:
    t = synthetic_trace(build_network("simple-cnn", image_size=8), 0.5, batch=1, seed=0)
    return write_trace(t, tmp_path / "trace")


def with_layer_array(tmp_path: Path, **arrays) -> list[str]:
    d = trace(tmp_path)
    name = sorted(d.glob("000_*.npz"))[0]
    with np.load(name) as data:
        kept = {k: data[k] for k in data.files}
    kept.update({k: f(kept[k]) for k, f in arrays.items()})
    np.savez(name, **kept)
    return ["run", "--trace", str(d), "-q", "--out", str(tmp_path / "out")]


def with_manifest(tmp_path: Path, edit) -> list[str]:
    d = trace(tmp_path)
    m = yaml.safe_load((d / "manifest.yaml").read_text())
    edit(m)
    (d / "manifest.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    return ["run", "--trace", str(d), "-q", "--out", str(tmp_path / "out")]


def nan_at(a):
    a = a.copy()
    a.flat[0] = np.nan
    return a


def drop(key):
    def edit(m):
        del m["layers"][0][key]
    return edit


def fifo_npz(tmp_path: Path) -> list[str]:
    d = trace(tmp_path)
    name = sorted(d.glob("000_*.npz"))[0]
    name.unlink()
    os.mkfifo(name)
    return ["run", "--trace", str(d), "-q", "--out", str(tmp_path / "out")]


def fifo_config(tmp_path: Path) -> list[str]:
    os.mkfifo(tmp_path / "c.yaml")
    return ["run", str(tmp_path / "c.yaml"), "-q"]


def set_key(path: str, value):
    def edit(data):
        *head, last = path.split(".")
        node = data
        for k in head:
            node = node.setdefault(k, {})
        node[last] = value
    return edit


def truncated_results(tmp_path: Path) -> list[str]:
    out = tmp_path / "r"
    rc, _, err = run_main(config(tmp_path, set_key("workload.sparsity", [0.0, 0.5]))[:-1] + [str(out)])
    assert rc == 0, err
    data = (out / "results.csv").read_bytes()
    (out / "results.csv").write_bytes(data[: len(data) * 2 // 3])
    return ["report", str(out), "-q"]


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

CASES = {
    # parsing (part 1)
    "deep-nested-list": (lambda t: config_text(t, "workload: " + "[" * 500 + "]" * 500 + "\n"),
                         "nested deeper than 32 levels"),
    "100000-digit-tiles": (lambda t: config_text(t, "architecture:\n  tiles: " + "9" * 100_000 + "\n"),
                           "expected"),
    "10**400-in-a-float-key": (lambda t: config(t, set_key("architecture.frequency_mhz", 10 ** 400)),
                               "integer of 401 digits: expected at most 30"),
    "1e400-float": (lambda t: config_text(t, "architecture:\n  frequency_mhz: 1e400\n"
                                          "workload:\n  network: simple-cnn\n"),
                    "architecture.frequency_mhz: expected a number from 0.001 to 1e+06"),
    "subnormal-buffer": (lambda t: config(t, set_key("memory.buffers_kib.weights", 5e-324)),
                         "memory.buffers_kib.weights: expected a number from 0.000976562"),
    "name-null": (lambda t: config_text(t, yaml.safe_dump(SMALL) + "name: null\n"), "name: expected"),
    "billion-laughs": (lambda t: config_text(t, BILLION_LAUGHS), "alias"),
    "duplicate-keys": (lambda t: config_text(t, "architecture:\n  tiles: 16\n  tiles: 3\n"
                                             "workload:\n  network: simple-cnn\n"), "duplicate key"),
    "fifo-config": (fifo_config, "expected a regular file, found a FIFO"),
    "dev-zero-config": (lambda t: ["run", "/dev/zero", "-q"], "expected a regular file, found a device"),
    "nul-in-output-dir": (lambda t: config(t, set_key("output.dir", "a\x00b")), "control characters"),
    # resources (part 3)
    "quadratic-lanes": (lambda t: config(t, lambda d: d["architecture"].update(
        lanes=100_000, frontend={"shape": "T", "lookahead": 2, "lookaside": 200_000})),
        "architecture.frontend.lookaside: expected an integer <= 64"),
    "lookahead-10**9": (lambda t: config(t, set_key("architecture.frontend", {"lookahead": 10 ** 9})),
                        "lookahead: expected an integer <= 16"),
    "batch-10**9": (lambda t: config(t, set_key("workload.batch", 10 ** 9)), "needs about"),
    "num-classes-10**9": (lambda t: config(t, set_key("workload.num_classes", 10 ** 9)), "needs about"),
    "image-size-4096": (lambda t: config(t, lambda d: d["workload"].update(
        network="resnet50", image_size=4096)) + ["--max-memory", "4"], "needs about"),
    # traces (part 2)
    "float16-trace": (lambda t: with_layer_array(t, weight=lambda a: a.astype(np.float16)),
                      "expected float32 or float64"),
    "longdouble-trace": (lambda t: with_layer_array(t, weight=lambda a: a.astype(np.longdouble)),
                         "expected float32 or float64"),
    "batch-0-trace": (lambda t: with_layer_array(t, input=lambda a: a[:0], input_saved=lambda a: a[:0],
                                                 grad_output=lambda a: a[:0]), "batch"),
    "nan-trace": (lambda t: with_layer_array(t, input=nan_at), "expected finite values"),
    "absolute-file": (lambda t: with_manifest(t, lambda m: m["layers"][0].update(file="/etc/passwd")),
                      "file"),
    "dotdot-file": (lambda t: with_manifest(t, lambda m: m["layers"][0].update(file="../../x.npz")),
                    "file"),
    "format-version-true": (lambda t: with_manifest(t, lambda m: m.update(format_version=True)),
                            "format_version: expected 1"),
    "missing-stride": (lambda t: with_manifest(t, drop("stride")), "missing field 'stride'"),
    "fifo-npz": (fifo_npz, "000_conv1.npz: expected a regular file"),
    # outputs and resume state (parts 4 and 5)
    "out-under-proc": (lambda t: config(t, lambda d: None)[:-1] + ["/proc/accelsim-out"], "cannot write in"),
    "out-300-chars": (lambda t: config(t, lambda d: None)[:-1] + [str(t / ("x" * 300))], "cannot write in"),
    "truncated-results": (truncated_results, "results.csv: "),
    # the trainer and the analytic commands (details: test_hostile_training.py)
    "label-smoothing-5": (lambda t: ["trace-from-training", "simple-cnn", "--dataset", "synthetic",
                                     "--label-smoothing", "5", "--out", str(t / "out")],
                          "--label-smoothing: expected a number in [0, 1)"),
    "epochs-inf": (lambda t: ["trace-from-training", "simple-cnn", "--dataset", "synthetic",
                              "--epochs", "inf", "--out", str(t / "out")], "--epochs"),
    "trace-out-existing-file": (lambda t: (t / "taken").write_text("keep") and [
        "trace-from-training", "simple-cnn", "--dataset", "synthetic", "--iterations", "1",
        "--out", str(t / "taken"), "--run-dir", str(t / "out")], "refusing to replace it"),
    "topk-overhead-batch-10**9": (lambda t: ["topk-overhead", "--measure", "resnet50", "--batch",
                                             str(10 ** 9)], "needs about"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_is_one_line_and_exit_2(tmp_path, case):
    build, fragment = CASES[case]
    argv = build(tmp_path)
    before = {p: os.lstat(p).st_mtime_ns for p in tmp_path.rglob("*")}
    rc, stdout, stderr = run_main(argv)
    assert rc == 2, (rc, stderr)
    assert len(stderr.splitlines()) == 1 and stderr.startswith("accelsim: error: "), stderr
    assert fragment in stderr, stderr
    assert len(stderr) < 600
    assert "Traceback" not in stdout + stderr
    for p, mtime in before.items():  # nothing of the user's was replaced or removed
        assert os.path.lexists(p) and os.lstat(p).st_mtime_ns == mtime, p
    assert not (tmp_path / "out").exists()


def test_write_results_to_dev_null_leaves_the_device():
    import pandas as pd

    from simulator import write_results
    from simulator.outputs import OutputError

    with pytest.raises(OutputError):
        write_results(pd.DataFrame({"a": [1]}), "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_leftovers_of_killed_writes_never_block_the_next_run(tmp_path):
    """A `.NAME.old` of an older writer and a frozen `.results.csv.XXXX` temp file: the next
    trace write and results write succeed (and remove what dead writers of ours left)."""
    (tmp_path / ".trace.old").mkdir()
    (tmp_path / ".trace.old" / "manifest.yaml").write_text("format_version: 1\n")
    out = trace(tmp_path)
    assert (out / "manifest.yaml").is_file()
    argv = config(tmp_path, lambda d: None)
    os.makedirs(tmp_path / "out")
    (tmp_path / "out" / ".results.csv.accelsim-999999999-abcdef.tmp").write_text("partial")
    rc, _, err = run_main(argv)
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.csv", "results.csv.sha256"]
