"""`accelsim sweep` on hostile input: too many points, point files that are not what we
wrote, workers whose parent was killed, output paths that are not directories. Each bad
input is one `accelsim: error:` line and exit 2, or (a regular point file that is not
finished) a note and a rerun of that point."""

from __future__ import annotations

import io
import operator
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from simulator import executors
from simulator import sweep as sweep_mod
from simulator import sweep_load
from simulator.cli import main
from simulator.sweep import FINISHED, expand, load_sweep, parse_sweep_mapping, read_point_file
from simulator.sweep_store import UNFINISHED, point_file_bytes
from tests.util import one_line_error, run_main

REPO = Path(__file__).resolve().parents[1]
LOOKAHEAD = "architecture.frontend.lookahead"
BASE = {  # two points of a few hundred milliseconds each
    "architecture": {"tiles": 2, "rows": 4, "lanes": 16,
                     "frontend": {"shape": "T", "lookahead": 2, "lookaside": 5}},
    "workload": {"network": "resnet18-cifar", "image_size": 8, "batch": 1, "sparsity": 0.5},
    "passes": ["forward"],
}


def write_sweep(path: Path, sweep: dict, base=None) -> Path:
    path.write_text(yaml.safe_dump({"base": BASE if base is None else base, "sweep": sweep},
                                   sort_keys=False))
    return path


def no_runs(monkeypatch) -> None:
    """Make running any point fail the test."""
    def fail(*args):
        raise AssertionError("a point ran")
    monkeypatch.setattr(sweep_mod, "run_point", fail)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished 2-point sweep: (sweep file, output dir, the two point files in point order)."""
    root = tmp_path_factory.mktemp("hostile")
    path = write_sweep(root / "two.yaml", {LOOKAHEAD: [1, 2]})
    rc, _, err = run_main(["sweep", path, "--out", root / "out", "-q"])
    assert rc == 0, err
    files = [root / "out" / "points" / f"{i}.csv" for i in load_sweep(path).points.ids]
    return path, root / "out", files


@pytest.fixture
def copy(done, tmp_path):
    """A copy of the finished sweep's output directory: (sweep file, dir, point files)."""
    path, out, files = done
    shutil.copytree(out, tmp_path / "out", symlinks=True)
    return path, tmp_path / "out", [tmp_path / "out" / "points" / f.name for f in files]


# --- the number of points ------------------------------------------------------------------------

def test_too_many_points_are_refused_before_any_is_built(tmp_path, monkeypatch, capsys):
    """8 keys x 10 values is 10^8 points: one line, at once, naming the option that allows more."""
    keys = [LOOKAHEAD, "architecture.frontend.lookaside", "architecture.tiles", "architecture.rows",
            "workload.batch", "workload.seed", "workload.sparsity", "memory.dram.latency_ns"]
    path = write_sweep(tmp_path / "huge.yaml", {k: list(range(1, 11)) for k in keys})
    monkeypatch.setattr(sweep_load, "parse_config", None)  # building any point would crash
    start = time.perf_counter()
    rc, out, err = run_main(["sweep", path, "--out", tmp_path / "out"])
    assert rc == 2 and out == ""
    one_line_error(err, f"{path}: sweep: expected at most 10,000 points (the product of the value "
                   "lists' lengths), got 100,000,000 (10 x 10 x 10 x 10 x 10 x 10 x 10 x 10); split "
                   "the sweep, or allow more with --max-points N")
    assert time.perf_counter() - start < 5
    rc, _, err = run_main(["sweep", path, "--max-points", "99999999"])
    one_line_error(err, "expected at most 99,999,999 points", "got 100,000,000")


def test_max_points_allows_more(tmp_path, capsys):
    path = write_sweep(tmp_path / "s.yaml", {LOOKAHEAD: [1, 2, 3], "workload.seed": [0, 1]})
    with pytest.raises(sweep_mod.ConfigError, match="at most 5 points.* got 6 "):
        load_sweep(path, max_points=5)
    assert len(load_sweep(path, max_points=6).points) == 6
    with pytest.raises(SystemExit) as e:
        main(["sweep", str(path), "--max-points", "0"])
    assert e.value.code == 2
    assert "--max-points: expected a positive int, got '0'" in capsys.readouterr().err


def test_points_are_computed_not_stored():
    points = expand({f"k{i}": list(range(10)) for i in range(8)})
    assert len(points) == 10**8
    assert points[12345678].values == (1, 2, 3, 4, 5, 6, 7, 8)
    assert points[-1].indices == (9,) * 8 and points[10**8 - 1] == points[-1]
    assert next(iter(points)).values == (0,) * 8
    with pytest.raises(IndexError):
        points[10**8]


def test_validation_builds_each_workload_once(tmp_path, monkeypatch):
    """Seed, batch and sparsity do not change what the workload check builds."""
    calls = []
    real = sweep_load._check_workload
    monkeypatch.setattr(sweep_load, "_check_workload", lambda c: calls.append(c) or real(c))
    path = write_sweep(tmp_path / "s.yaml", {"workload.seed": list(range(10)),
                                             "workload.batch": list(range(1, 11)),
                                             "workload.sparsity": [0.5, 0.8]})
    sweep = load_sweep(path)
    assert len(sweep.points) == 200 and len(set(sweep.points.ids)) == 200 and len(calls) == 1


def test_duplicate_values_are_found_in_linear_time():
    values = list(range(200_000))
    start = time.perf_counter()
    assert parse_sweep_mapping("s.yaml", {"workload.seed": values})["workload.seed"] is values
    assert time.perf_counter() - start < 2  # the pairwise check took minutes here
    for dup, i in (([[1, 2], [2, 1], [1, 2]], 2), ([{"a": 1}, {"a": 1}], 1), ([0.5, 1, 0.5], 2)):
        with pytest.raises(sweep_mod.ConfigError, match=rf"\[{i}\]: expected distinct values"):
            parse_sweep_mapping("s.yaml", {"k": dup})
    assert parse_sweep_mapping("s.yaml", {"k": [1, 1.0, True, "1"]})  # different types differ


# --- point files -------------------------------------------------------------------------------------

def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _drop_end_line(f: Path) -> None:  # truncated at a line boundary: every row parses
    f.write_bytes(f.read_bytes().rsplit(b"\n", 2)[0] + b"\n")


def _corrupt(f: Path) -> None:  # one digit changed in the middle
    data = bytearray(f.read_bytes())
    i = data.index(b"1", len(data) // 2)
    data[i] = ord("7")
    f.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    _truncate, _drop_end_line, _corrupt,
    lambda f: f.write_bytes(b""),
    lambda f: f.write_text("a,b\n1,2\n"),  # someone else's CSV
    lambda f: f.write_bytes(f.with_name("x").read_bytes()),  # the other point's file
], ids=["truncated", "no-end-line", "corrupt", "empty", "foreign", "other-point"])
def test_an_unfinished_point_file_is_rerun_and_replaced(copy, done, damage):
    path, out, files = copy
    shutil.copy(files[1], files[0].with_name("x"))
    damage(files[0])
    rc, stdout, err = run_main(["sweep", path, "--out", out, "-q"])
    assert rc == 0, err
    assert (f"note: points/{files[0].name} is incomplete or not ours; rerunning that point\n"
            "two: 1 of 2 points done, 1 to run in this process") in stdout
    assert files[0].read_bytes() == done[2][0].read_bytes()  # replaced by the point's own rows
    assert read_point_file(files[0], files[0].stem)[0] == FINISHED
    assert (out / "results.csv").read_bytes() == (done[1] / "results.csv").read_bytes()
    assert sorted(os.listdir(out / "points")) == sorted([files[0].name, files[1].name, "x"])


def _forge(f: Path, change) -> None:
    """Rewrite the point file `f` with changed rows and a valid end line (right id, length,
    row count and sha256): only the rows' values tell it from a finished point."""
    body = f.read_bytes()
    rows = pd.read_csv(io.BytesIO(body[:body.rindex(b"# accelsim sweep point")]),
                       keep_default_na=False, na_values=[""], dtype=str)
    f.write_bytes(point_file_bytes(f.stem, change(rows)))


@pytest.mark.parametrize("change", [
    lambda r: r.assign(cycles="nan", speedup="-1"),
    lambda r: r.assign(speedup="-1"),
    lambda r: r.assign(dense_cycles="0"),
    lambda r: r.assign(dram_read_bytes="1e400"),
    lambda r: r.assign(**{"pass": "sideways"}),
    lambda r: r.drop(columns="cycles"),
], ids=["nan-cycles", "negative-speedup", "zero-dense-cycles", "inf-bytes", "unknown-pass",
        "no-cycles-column"])
def test_a_forged_point_with_a_valid_digest_is_rerun(copy, done, change):
    """A point file whose end line and digest are right but whose rows `accelsim run` cannot
    write (results.check_rows) is not finished: rerun with the note, never merged."""
    path, out, files = copy
    _forge(files[0], change)
    assert read_point_file(files[0], files[0].stem)[0] == UNFINISHED
    rc, stdout, err = run_main(["sweep", path, "--out", out, "-q"])
    assert (rc, err) == (0, "")
    assert (f"note: points/{files[0].name} is incomplete or not ours; rerunning that point\n"
            "two: 1 of 2 points done, 1 to run in this process") in stdout
    assert files[0].read_bytes() == done[2][0].read_bytes()
    assert (out / "results.csv").read_bytes() == (done[1] / "results.csv").read_bytes()


def test_a_point_forged_between_scan_and_merge_is_one_line(copy, monkeypatch):
    """Forged after the sweep checked it: the merge refuses it in one line, no TypeError."""
    path, out, files = copy
    real = sweep_mod.merge

    def forge_then_merge(sweep, out_dir):
        _forge(files[0], lambda r: r.assign(cycles="nan", speedup="-1"))
        return real(sweep, out_dir)

    monkeypatch.setattr(sweep_mod, "merge", forge_then_merge)
    rc, stdout, err = run_main(["sweep", path, "--out", out, "-q"])
    assert rc == 2
    one_line_error(err, f"{files[0]}: expected a finished point file, got one that is "
                   "incomplete or not ours")


@pytest.mark.parametrize("make, kind", [
    (lambda f: f.mkdir(), "a directory"),
    (lambda f: os.mkfifo(f), "a FIFO"),
    (lambda f: f.symlink_to("/dev/zero"), "a symlink"),
    (lambda f: f.symlink_to(f.with_name("x")), "a symlink"),  # even to a finished point file
])
def test_a_point_entry_that_is_not_a_regular_file_is_one_line(copy, monkeypatch, make, kind):
    path, out, files = copy
    shutil.copy(files[0], files[0].with_name("x"))
    files[0].unlink()
    make(files[0])
    mode = os.lstat(files[0]).st_mode
    no_runs(monkeypatch)
    rc, stdout, err = run_main(["sweep", path, "--out", out, "-q"])
    assert rc == 2 and stdout == ""
    one_line_error(err, f"{files[0]}: expected a point file (a regular file) or nothing, got {kind}; "
                   "it is not ours to replace")
    assert os.lstat(files[0]).st_mode == mode  # left as it was


def test_points_that_is_not_a_directory_is_one_line(copy, monkeypatch):
    path, out, _ = copy
    shutil.rmtree(out / "points")
    (out / "points").write_text("not a directory\n")
    no_runs(monkeypatch)
    rc, stdout, err = run_main(["sweep", path, "--out", out, "-q"])
    assert rc == 2 and stdout == ""
    one_line_error(err, f"{out / 'points'}: expected a directory of finished sweep points (or "
                   "nothing), got a regular file")


@pytest.mark.parametrize("target", ["file", "symlink", "device"])
def test_an_output_path_that_is_not_a_directory_is_one_line(done, tmp_path, monkeypatch, target):
    path = done[0]
    out = {"file": tmp_path / "f", "symlink": tmp_path / "l", "device": Path("/dev/null")}[target]
    (tmp_path / "f").write_text("x\n")
    (tmp_path / "l").symlink_to(tmp_path / "f")
    no_runs(monkeypatch)
    rc, stdout, err = run_main(["sweep", path, "--out", out, "-q"])
    assert rc == 2 and stdout == ""
    one_line_error(err, "--out", str(out))
    assert (tmp_path / "f").read_text() == "x\n"


# --- executors: bounded hand-out, workers exit with their parent ------------------------------------

class CountingTasks:
    """Tasks (i, (i,)) that record, at each hand-out, how many were out but not yet yielded."""

    def __init__(self, n: int):
        self.n, self.taken, self.yielded, self.most = n, 0, 0, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.taken += 1
        self.most = max(self.most, self.taken - self.yielded)
        return str(i), (i,)


def collect(executor, tasks: CountingTasks) -> dict:
    out = {}
    for i, result in executor.map_unordered(operator.neg, tasks):
        tasks.yielded += 1
        out[i] = result
    return out


def test_process_workers_are_handed_a_bounded_number_of_tasks():
    tasks = CountingTasks(12)
    assert collect(executors.ProcessExecutor(2), tasks) == {i: -i for i in range(12)}
    assert tasks.most <= executors.TASKS_PER_WORKER * 2 + 1


def test_dask_is_handed_a_bounded_number_of_tasks(monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(executors, "DASK_WINDOW", 2)
    tasks = CountingTasks(6)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp://", dashboard_address=None) as cluster:
        result = collect(executors.DaskExecutor(cluster.scheduler_address), tasks)
    assert result == {i: -i for i in range(6)} and tasks.most <= 3


def _children(pid: int) -> set[int]:
    """The child processes of `pid` (Linux /proc)."""
    out = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    """SIGKILL gives the parent no chance to stop its workers: they notice and exit."""
    path = write_sweep(tmp_path / "many.yaml", {LOOKAHEAD: list(range(1, 9)),
                                                "architecture.frontend.lookaside": [0, 1, 2]})
    parent = subprocess.Popen([sys.executable, "-m", "simulator.cli", "sweep", str(path), "--out",
                               str(tmp_path / "out"), "--workers", "2", "-q"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "out" / "points").glob("*.csv")):  # the workers are running
            assert parent.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        workers = _children(parent.pid)
        assert len(workers) >= 2
        parent.send_signal(signal.SIGKILL)
        assert parent.wait() == -signal.SIGKILL  # killed mid-sweep, not finished
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)]
    finally:
        parent.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


@pytest.mark.parametrize("address", ["tls://127.0.0.1:1", "inproc://x", "tcp://host", "tcp://" + "x" * 5000 + ":1",
                                     "tcp://a b:1"])
def test_dask_addresses_other_than_tcp_host_port_are_one_line(address):
    from simulator.config import ConfigError
    from simulator.executors import check_dask_address

    with pytest.raises(ConfigError, match="expected a scheduler address tcp://HOST:PORT") as info:
        check_dask_address(address)
    assert len(str(info.value)) < 200
    assert check_dask_address("tcp://127.0.0.1:8786") == "tcp://127.0.0.1:8786"
    assert check_dask_address("tcp://[::1]:8786") == "tcp://[::1]:8786"
