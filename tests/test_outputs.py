"""Where accelsim writes: atomically, never over what it did not make, probed before work,
and the temporaries of killed writers cleaned up (simulator/outputs.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from simulator import outputs
from simulator.outputs import OutputError, probe_output_dir, remove_stale, write_atomic
from simulator.trace import Trace, TraceError, TraceLayer, read_trace, write_trace
from tests.util import run_main
from workloads.networks import build_network


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temp_name(target: str, pid: int, suffix: str) -> str:
    return f".{target}.{outputs.TAG}-{pid}-abc123{suffix}"


def tiny_trace(value: float = 1.0) -> Trace:
    spec = build_network("simple-cnn").layers[-1]  # an fc layer
    w = np.full(spec.weight_shape, value, dtype=np.float32)
    x = np.ones((1, spec.in_channels), dtype=np.float32)
    g = np.ones((1, spec.out_channels), dtype=np.float32)
    return Trace("simple-cnn", [TraceLayer(spec, w, x, x, g)], method="dense", sparsity=0.0)


# ------------------------------------------------------------------ write_atomic

def test_write_atomic_replaces_a_regular_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("old")
    write_atomic(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink-to-file", "broken-symlink"])
def test_write_atomic_refuses_what_is_not_a_regular_file(tmp_path, kind):
    path = tmp_path / "results.csv"
    other = tmp_path / "other.txt"
    other.write_text("keep")
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink-to-file":
        path.symlink_to(other)
    else:
        path.symlink_to(tmp_path / "nowhere")
    before = os.lstat(path)
    with pytest.raises(OutputError, match=r"results.csv: exists and is a .*refusing to replace it"):
        write_atomic(path, "new")
    after = os.lstat(path)
    assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode) and after.st_ino == before.st_ino
    assert other.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt", "results.csv"]


def test_write_results_never_replaces_dev_null():
    import pandas as pd

    from simulator import write_results

    with pytest.raises(OutputError, match="/dev/null: exists and is a device"):
        write_results(pd.DataFrame({"a": [1]}), "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_stale_temporaries_of_dead_writers_are_removed_and_nothing_else(tmp_path):
    dead, alive = dead_pid(), os.getppid()
    stale_file = tmp_path / temp_name("results.csv", dead, ".tmp")
    stale_dir = tmp_path / temp_name("results.csv", dead, ".old")
    other_target = tmp_path / temp_name("summary.csv", dead, ".tmp")   # another file's
    live = tmp_path / temp_name("results.csv", alive, ".tmp")          # its writer still runs
    foreign = tmp_path / ".results.csv.XYZ123"                          # not our naming
    stale_file.write_text("partial")
    stale_dir.mkdir()
    (stale_dir / "x").write_text("x")
    for p in (other_target, live, foreign):
        p.write_text("keep")
    write_atomic(tmp_path / "results.csv", "rows")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["results.csv", live.name, foreign.name])
    later = tmp_path / temp_name("results.csv", dead, ".tmp")
    later.write_text("x")
    write_atomic(tmp_path / "results.csv", "rows")  # once per directory and process
    assert later.exists()


# ------------------------------------------------------------------ trace directories

def test_write_trace_replaces_a_trace_in_place_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "trace"
    write_trace(tiny_trace(1.0), out)
    write_trace(tiny_trace(2.0), out)
    assert float(read_trace(out).layers[0].weight[0, 0]) == 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["trace"]


def test_exchange_swaps_two_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "from-a").touch()
    (b / "from-b").touch()
    if not outputs._exchange(a, b):
        pytest.skip("this file system has no atomic exchange (the two-rename path is used)")
    assert [p.name for p in a.iterdir()] == ["from-b"] and [p.name for p in b.iterdir()] == ["from-a"]


def test_a_writer_killed_between_two_renames_gets_its_old_trace_back(tmp_path, monkeypatch):
    """Without an atomic exchange a kill between the renames leaves no trace at the target,
    the old one in `.old` and the new one in `.tmp`: the next write puts the old one back,
    removes the new one's leftovers, and then replaces it properly."""
    out = tmp_path / "trace"
    write_trace(tiny_trace(1.0), out)
    dead = dead_pid()
    old = tmp_path / temp_name("trace", dead, ".old")
    os.replace(out, old)
    (tmp_path / temp_name("trace", dead, ".tmp")).mkdir()
    monkeypatch.setattr(outputs, "_CLEANED", set())  # as in a new process
    assert sorted(p.name for p in remove_stale(out)) == [temp_name("trace", dead, ".tmp")]
    assert float(read_trace(out).layers[0].weight[0, 0]) == 1.0  # the old output is back
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)  # the two-rename path
    write_trace(tiny_trace(3.0), out)
    assert float(read_trace(out).layers[0].weight[0, 0]) == 3.0
    assert [p.name for p in tmp_path.iterdir()] == ["trace"]


@pytest.mark.parametrize("kind", ["file", "dev-null-link", "plain-directory"])
def test_write_trace_refuses_what_it_did_not_make(tmp_path, kind):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("keep")
    elif kind == "dev-null-link":
        out.symlink_to("/dev/null")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("keep")
    with pytest.raises(TraceError, match="refusing to replace it"):
        write_trace(tiny_trace(), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    if kind == "file":
        assert out.read_text() == "keep"


def test_trace_name_too_long_is_refused_before_writing(tmp_path):
    with pytest.raises(TraceError, match="longer than the"):
        write_trace(tiny_trace(), tmp_path / ("x" * 300))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ probing output directories

def test_probe_creates_nothing(tmp_path):
    probe_output_dir(tmp_path / "a" / "b" / "c", "--out", files=("results.csv",))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where, expected", [
    ("file", "exists and is not a directory"),
    ("under-file", "is not a directory"),
    ("long-name", "cannot write in"),
    ("proc", "cannot write in"),
    ("results-is-fifo", "exists and is a FIFO"),
])
def test_probe_refuses_unusable_locations(tmp_path, where, expected):
    target = {"file": tmp_path / "f", "under-file": tmp_path / "f" / "sub",
              "long-name": tmp_path / ("x" * 300), "proc": Path("/proc/accelsim-out"),
              "results-is-fifo": tmp_path / "out"}[where]
    (tmp_path / "f").write_text("keep")
    if where == "results-is-fifo":
        target.mkdir()
        os.mkfifo(target / "results.csv")
    with pytest.raises(OutputError, match=expected):
        probe_output_dir(target, "--out", files=("results.csv",))
    assert (tmp_path / "f").read_text() == "keep"


def test_run_refuses_an_unusable_out_before_any_work(tmp_path):
    """One line, exit 2, the file untouched: no simulation ran (it would take seconds)."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "workload": {"network": "simple-cnn", "sparsity": [0.5]}, "passes": ["forward"]}))
    target = tmp_path / "taken"
    target.write_text("keep")
    for out, expected in ((target, "exists and is not a directory"),
                          ("/proc/accelsim-out", "cannot write in")):
        rc, stdout, stderr = run_main(["run", str(config), "--out", str(out), "-q"])
        assert rc == 2 and stdout == "" and len(stderr.splitlines()) == 1, stderr
        assert stderr.startswith("accelsim: error: --out: ") and expected in stderr
    assert target.read_text() == "keep"


@pytest.mark.parametrize("moment", ["before-rename", "before-swap"])
def test_a_writer_killed_at_the_rename_leaves_the_old_output_and_the_next_write_cleans_up(
        tmp_path, moment, monkeypatch):
    """A process that dies (os._exit: no clean-up runs, as with kill -9) just before its
    rename leaves the old output whole and a temporary of ours; the next write succeeds and
    removes the temporary."""
    target = tmp_path / ("results.csv" if moment == "before-rename" else "trace")
    if moment == "before-rename":
        write_atomic(target, "old")
        code = ("import os; from simulator import outputs\n"
                "os.replace = lambda a, b: os._exit(9)\n"
                f"outputs.write_atomic({str(target)!r}, 'new')\n")
    else:
        write_trace(tiny_trace(1.0), target)
        code = ("import os; from simulator import outputs, trace; from tests.test_outputs import tiny_trace\n"
                "outputs._exchange = lambda a, b: os._exit(9)\n"
                f"trace.write_trace(tiny_trace(2.0), {str(target)!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and left[1] == target.name and left[0].endswith(".tmp")  # ours, stale
    if moment == "before-rename":
        assert target.read_text() == "old"
        monkeypatch.setattr(outputs, "_CLEANED", set())  # as in a new process
        write_atomic(target, "newer")
        assert target.read_text() == "newer"
    else:
        assert float(read_trace(target).layers[0].weight[0, 0]) == 1.0
        monkeypatch.setattr(outputs, "_CLEANED", set())
        write_trace(tiny_trace(3.0), target)
        assert float(read_trace(target).layers[0].weight[0, 0]) == 3.0
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
