"""`accelsim sweep`: expansion, validation before running, merged results, resumability, and
the three execution backends (this process, worker processes, a Dask cluster) agreeing."""

from __future__ import annotations

import io
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import simulator
from simulator import sweep as sweep_mod
from simulator.cli import main
from tests.util import run_main
from simulator.report import sweep_map
from simulator.sweep import Point, apply, expand, load_sweep, point_id, set_key

REPO = Path(__file__).resolve().parents[1]
LOOKAHEAD = "architecture.frontend.lookahead"
SPARSITY = "workload.sparsity"
BASE = {
    "architecture": {"tiles": 2, "rows": 4, "lanes": 16,
                     "frontend": {"shape": "T", "lookahead": 2, "lookaside": 5}},
    "workload": {"network": "resnet18-cifar", "image_size": 16, "batch": 1, "sparsity": 0.5},
}
SWEEP = {LOOKAHEAD: [1, 2], SPARSITY: [0.8, 0.9]}


def write_sweep(path: Path, sweep=None, base=None, **extra) -> Path:
    data = {"base": BASE if base is None else base, "sweep": SWEEP if sweep is None else sweep, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path




def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def roundtrip(df: pd.DataFrame) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(df.to_csv(index=False)), keep_default_na=False, na_values=[""])


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The 2x2 sweep run once in this process: (sweep file, output dir, stdout)."""
    root = tmp_path_factory.mktemp("sweep")
    path = write_sweep(root / "tiny.yaml")
    rc, out, err = run_main(["sweep", path, "--out", root / "out", "-q"])
    assert rc == 0, err
    return path, root / "out", out


# --- expansion -------------------------------------------------------------------------------------

def test_expand_is_the_cartesian_product_last_key_fastest():
    points = expand({"a.b": [1, 2], "c": ["x", "y", "z"]})
    assert [p.values for p in points] == [(1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")]
    assert [p.indices for p in points][:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert all(p.keys == ("a.b", "c") for p in points)
    assert points[4].label() == "b=2 c=y"


def test_apply_sets_nested_keys_without_touching_the_base():
    base = {"architecture": {"tiles": 2, "frontend": {"shape": "T"}}, "workload": None}
    point = Point(("architecture.frontend.lookahead", "workload.network", "memory.dram.latency_ns"),
                  (3, "vgg16", 10.0), (0, 0, 0))
    cfg = apply(base, point)
    assert cfg == {"architecture": {"tiles": 2, "frontend": {"shape": "T", "lookahead": 3}},
                   "workload": {"network": "vgg16"}, "memory": {"dram": {"latency_ns": 10.0}}}
    assert base == {"architecture": {"tiles": 2, "frontend": {"shape": "T"}}, "workload": None}
    with pytest.raises(TypeError):
        set_key({"passes": ["forward"]}, "passes.forward", 1)


def test_point_id_is_the_resolved_config():
    def pid(data, name="a"):
        return point_id(simulator.parse_config(data, "x.yaml", name=name))

    cfg = {"workload": {"network": "resnet18-cifar", "sparsity": 0.8}}
    explicit = {"workload": {"network": "resnet18-cifar", "sparsity": [0.8], "batch": 1},
                "architecture": {"frontend": {"lookahead": 2}}, "output": {"dir": "elsewhere"}}
    assert pid(cfg) == pid(cfg) == pid(explicit, name="b")  # defaults, name and output don't count
    assert pid(cfg) != pid({"workload": {"network": "resnet18-cifar", "sparsity": 0.9}})
    assert len(pid(cfg)) == 16


def test_shipped_sweep_expands_to_the_64x2_frontends_on_tactical():
    sweep = load_sweep(REPO / "configs" / "sweep.yaml")
    assert sweep.keys == (LOOKAHEAD, "architecture.frontend.lookaside", SPARSITY)
    assert len(sweep.points) == 128 and not sweep.skipped
    assert len({p.id for p in sweep.points}) == 128
    first, last = sweep.points[0].config, sweep.points[-1].config
    assert str(first.architecture.frontend) == "T<1,0>" and first.workload.sparsity == (0.8,)
    assert str(last.architecture.frontend) == "T<8,7>" and last.workload.sparsity == (0.9,)
    assert first.workload.network == "resnet50" and first.workload.image_size == 224
    assert first.passes == ("forward", "input_grad", "weight_grad")


# --- results -------------------------------------------------------------------------------------

def test_merged_csv_is_the_concatenation_of_individual_runs(serial):
    path, out, stdout = serial
    merged = read(out / "results.csv")
    assert list(merged.columns[:2]) == [LOOKAHEAD, SPARSITY]
    expected = []
    for h in SWEEP[LOOKAHEAD]:
        for s in SWEEP[SPARSITY]:
            data = {**BASE, "architecture": {**BASE["architecture"],
                                             "frontend": {**BASE["architecture"]["frontend"], "lookahead": h}},
                    "workload": {**BASE["workload"], "sparsity": s}}
            rows = simulator.run(simulator.parse_config(data, "x.yaml"))
            rows.insert(0, SPARSITY, s)
            rows.insert(0, LOOKAHEAD, h)
            expected.append(rows)
    pd.testing.assert_frame_equal(merged, roundtrip(pd.concat(expected, ignore_index=True)))
    assert set(merged["frontend"]) == {"T<1,5>", "T<2,5>"}
    summary = read(out / "summary.csv")
    assert len(summary) == 4 * 5  # 4 points x (3 passes, backward, iteration)
    assert set(summary["phase"]) == {"forward", "input_grad", "weight_grad", "backward", "iteration"}
    assert "0 of 4 points done, 4 to run" in stdout
    assert f"wrote {out / 'results.csv'} ({len(merged)} rows from 4 points)" in stdout


def test_rerun_runs_nothing_and_a_deleted_point_runs_again(serial, tmp_path, monkeypatch):
    path, done, _ = serial
    out = tmp_path / "out"
    shutil.copytree(done, out)
    calls = []
    real = sweep_mod.run_point
    monkeypatch.setattr(sweep_mod, "run_point", lambda *a: calls.append(a) or real(*a))
    rc, stdout, err = run_main(["sweep", path, "--out", out, "-q"])
    assert rc == 0, err
    assert calls == [] and "4 of 4 points done, 0 to run" in stdout
    assert (out / "results.csv").read_bytes() == (done / "results.csv").read_bytes()

    victim = sorted((out / "points").iterdir())[1]
    victim.unlink()
    (out / "results.csv").unlink()
    rc, stdout, err = run_main(["sweep", path, "--out", out, "-q"])
    assert rc == 0, err
    assert len(calls) == 1 and "3 of 4 points done, 1 to run" in stdout
    assert victim.is_file()
    assert (out / "results.csv").read_bytes() == (done / "results.csv").read_bytes()


def test_interrupt_keeps_finished_points(serial, tmp_path, monkeypatch):
    path, done, _ = serial
    out = tmp_path / "out"
    real = sweep_mod.run_point
    calls = []

    def interrupted(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(sweep_mod, "run_point", interrupted)
    rc, _, err = run_main(["sweep", path, "--out", out, "-q"])
    assert rc == 130
    assert "interrupted: 2 of 4 points done" in err and "resumes" in err
    assert len(list((out / "points").iterdir())) == 2 and not (out / "results.csv").exists()
    monkeypatch.setattr(sweep_mod, "run_point", real)
    rc, stdout, err = run_main(["sweep", path, "--out", out, "-q"])
    assert rc == 0 and "2 of 4 points done, 2 to run" in stdout
    assert (out / "results.csv").read_bytes() == (done / "results.csv").read_bytes()


def test_two_worker_processes_equal_one(serial, tmp_path):
    path, done, _ = serial
    rc, stdout, err = run_main(["sweep", path, "--out", tmp_path / "out", "--workers", "2", "-q"])
    assert rc == 0, err
    assert "4 to run in 2 worker processes" in stdout
    pd.testing.assert_frame_equal(read(tmp_path / "out" / "results.csv"), read(done / "results.csv"))
    assert (tmp_path / "out" / "results.csv").read_bytes() == (done / "results.csv").read_bytes()


def test_dask_local_cluster_equals_the_local_run(serial, tmp_path):
    distributed = pytest.importorskip("distributed")
    path, done, _ = serial
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp://", dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        rc, stdout, err = run_main(["sweep", path, "--out", tmp_path / "out", "-q",
                                    "--dask-scheduler", address])
    assert rc == 0, err
    assert f"4 to run on {address}" in stdout
    pd.testing.assert_frame_equal(read(tmp_path / "out" / "results.csv"), read(done / "results.csv"))
    assert (tmp_path / "out" / "results.csv").read_bytes() == (done / "results.csv").read_bytes()


def test_dask_missing_is_one_line(serial, tmp_path, monkeypatch, capsys):
    path, _, _ = serial
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    rc = main(["sweep", str(path), "--out", str(tmp_path / "o"), "--dask-scheduler", "tcp://127.0.0.1:8786"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines() == [
        "accelsim: error: --dask-scheduler: needs dask.distributed, which is not installed; "
        "pip install 'accelsim[distributed]'"]


# --- bad input: one line, exit 2, nothing run ----------------------------------------------------

@pytest.mark.parametrize("sweep, base, expected", [
    ({LOOKAHEAD: [1, 2, 3, -1]}, None,
     "sweep.architecture.frontend.lookahead[3]: expected an integer >= 0, got -1"),
    ({"architecture.frontend.lookahed": [1, 2]}, None,
     "sweep.architecture.frontend.lookahed: expected one of the known keys (shape, lookahead, "
     "lookaside, pattern, offsets, scheduler); unknown key"),
    ({SPARSITY: [0.8, 1.5]}, None, "sweep.workload.sparsity[1]: expected a number in [0, 1), got 1.5"),
    ({"workload.network": ["resnet18-cifar", "resnet51"]}, None,
     "sweep.workload.network[1]: expected a network the zoo can build (unknown network 'resnet51'"),
    ({"workload.image_size": [16, 4]}, None, "sweep.workload.image_size[1]: expected an integer >= 8, got 4"),
    ({LOOKAHEAD: 3}, None, "sweep.architecture.frontend.lookahead: expected a non-empty list of values, got 3"),
    ({LOOKAHEAD: [1, 1]}, None, "sweep.architecture.frontend.lookahead[1]: expected distinct values, got 1 twice"),
    ({"architecture.frontend": [{}], LOOKAHEAD: [1]}, None,
     "sweep.architecture.frontend.lookahead: expected a key outside the other swept keys"),
    ({"workload.network.x": [1]}, None,
     "sweep.workload.network.x: expected a key through mappings of the base config, but "
     "workload.network is not a mapping there"),
    ({}, None, "sweep: expected a non-empty mapping of dotted config keys to lists of values, got {}"),
    ({LOOKAHEAD: [1]}, {**BASE, "architecture": {"tiles": -3}},
     "base.architecture.tiles: expected an integer >= 1, got -3"),
    ({"architecture.frontend.lookaside": [9, 8]},
     {**BASE, "architecture": {"lanes": 16, "frontend": {"lookahead": 1}}},
     "sweep.architecture.frontend.lookaside[0]: expected a value that some point of the sweep can "
     "build, got 9: every point with it fails (architecture.frontend.lookaside: T<1,9> cannot place"),
])
def test_bad_sweeps_fail_at_once_with_one_line(tmp_path, capsys, sweep, base, expected):
    path = write_sweep(tmp_path / "bad.yaml", sweep=sweep, base=base)
    rc = main(["sweep", str(path), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith(f"accelsim: error: {path}: {expected}"), lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "out").exists()  # validated before anything ran


def test_base_file_errors_name_the_base_file(tmp_path, capsys):
    (tmp_path / "configs").mkdir()
    base = tmp_path / "configs" / "b.yaml"
    base.write_text(yaml.safe_dump({**BASE, "architecture": {"rows": 0}}))
    path = write_sweep(tmp_path / "configs" / "s.yaml", base="b.yaml")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == \
        f"accelsim: error: {base}: architecture.rows: expected an integer >= 1, got 0"
    path = write_sweep(tmp_path / "configs" / "s.yaml", base="missing.yaml")
    assert main(["sweep", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"accelsim: error: {path}: base: expected a config file (relative to the sweep file), got "
        f"'missing.yaml': no such file '{tmp_path / 'configs' / 'missing.yaml'}'")


def test_base_file_is_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "b.yaml").write_text(yaml.safe_dump(BASE))
    path = write_sweep(tmp_path / "configs" / "s.yaml", base="b.yaml", name="named")
    sweep = load_sweep(path)
    assert sweep.name == "named" and sweep.default_output_dir() == Path("reports/named")
    assert [str(p.config.architecture.frontend) for p in sweep.points] == ["T<1,5>"] * 2 + ["T<2,5>"] * 2


def test_invalid_frontend_combinations_are_skipped_with_a_note(tmp_path, capsys):
    base = {**BASE, "passes": ["forward"]}
    path = write_sweep(tmp_path / "s.yaml", base=base,
                       sweep={LOOKAHEAD: [1, 2], "architecture.frontend.lookaside": [8, 9]})
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "-q"]) == 0
    out = capsys.readouterr().out
    assert ("note: skipped lookahead=1 lookaside=9: architecture.frontend.lookaside: T<1,9> cannot "
            "place 9 lateral connections on 16 lanes; expected lookaside <= 8") in out
    assert "0 of 3 points done, 3 to run in this process (1 invalid combination skipped)" in out
    merged = read(tmp_path / "out" / "results.csv")
    assert list(dict.fromkeys(merged["frontend"])) == ["T<1,8>", "T<2,8>", "T<2,9>"]
    # two swept front-end keys: heat maps over lookahead x lookaside, the skipped cell grey
    maps = sorted(p.name for p in (tmp_path / "out").glob("sweep-*"))
    assert maps == [f"sweep-lookahead-lookaside-{v}.{f}" for v in ("compute-speedup", "speedup")
                    for f in ("png", "svg")]
    summary = read(tmp_path / "out" / "summary.csv")
    fig = sweep_map(summary, LOOKAHEAD, "architecture.frontend.lookaside", "compute_speedup",
                    keys=(LOOKAHEAD, "architecture.frontend.lookaside"))
    (ax,) = [a for a in fig.axes if a.get_title().startswith("forward")]
    cells = ax.images[0].get_array()  # rows lookaside 8, 9; columns lookahead 1, 2
    fwd = summary[summary["phase"] == "forward"].set_index([LOOKAHEAD, "architecture.frontend.lookaside"])
    assert cells.mask.tolist() == [[False, False], [True, False]]
    assert cells[0, 0] == pytest.approx(fwd.loc[(1, 8), "compute_speedup"])
    assert cells[1, 1] == pytest.approx(fwd.loc[(2, 9), "compute_speedup"])


def test_back_end_combinations_that_do_not_fit_are_skipped(tmp_path, capsys):
    """A sweep over the back-end and the columns: bit-serial needs columns a multiple of
    bits (16), so (tclp, 1) is skipped; the other three points run."""
    base = {**BASE, "passes": ["forward"], "workload": {**BASE["workload"], "network": "simple-cnn"}}
    path = write_sweep(tmp_path / "s.yaml", base=base,
                       sweep={"architecture.backend": ["bit-parallel", "tclp"], "architecture.columns": [1, 16]})
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "-q"]) == 0
    out = capsys.readouterr().out
    assert ("note: skipped backend=tclp columns=1: architecture.columns: expected a multiple of bits (16) "
            "for backend tclp") in out
    assert "(1 invalid combination skipped)" in out
    merged = read(tmp_path / "out" / "results.csv")
    assert sorted(set(merged["backend"])) == ["bit-parallel", "tclp-16"]
    serial = merged[merged["backend"] == "tclp-16"]
    assert (serial["compute_cycles"] <= serial["serial_bound_cycles"]).all()


def test_a_sweep_over_one_key_draws_no_map(serial):
    _, out, _ = serial
    assert not list(out.glob("sweep-*"))  # lookahead x sparsity: sparsity gets panels, not an axis


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--workers N" in text and "--dask-scheduler" in text and "SWEEP_CONFIG" in text


def test_list_values_sweep_and_become_json_columns(tmp_path, capsys):
    base = {**BASE, "workload": {**BASE["workload"], "image_size": 8}}
    path = write_sweep(tmp_path / "s.yaml", base=base,
                       sweep={"passes": [["forward"], ["weight_grad"]], SPARSITY: [[0.0, 0.8]]})
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "-q"]) == 0
    out = capsys.readouterr().out
    assert re.search(r'\["forward"\] +\[0\.0,0\.8\] ', out) and "workload.sparsity" in out
    merged = read(tmp_path / "out" / "results.csv")
    assert list(dict.fromkeys(merged["passes"])) == ['["forward"]', '["weight_grad"]']
    assert set(merged[SPARSITY]) == {"[0.0, 0.8]"} and set(merged["sparsity"]) == {0.0, 0.8}
    assert set(merged.loc[merged["passes"] == '["forward"]', "pass"]) == {"forward"}


def test_report_of_a_large_sweep_draws_its_maps_unless_all(tmp_path):
    base = {**BASE, "passes": ["forward"]}
    path = write_sweep(tmp_path / "s.yaml", base=base,
                       sweep={LOOKAHEAD: [1, 2, 3], "architecture.frontend.lookaside": [0, 1, 2]})
    out = tmp_path / "out"
    assert run_main(["sweep", path, "--out", out, "-q"])[0] == 0
    for f in out.glob("sweep-*"):
        f.unlink()
    rc, stdout, _ = run_main(["report", out])  # 9 configurations > 8: the maps only
    assert rc == 0
    assert sorted(p.name for p in out.glob("*.png")) == [
        "sweep-lookahead-lookaside-compute-speedup.png", "sweep-lookahead-lookaside-speedup.png"]
    rc, stdout, _ = run_main(["report", out, "--all", "-q"])
    assert rc == 0 and stdout == ""
    assert len(list(out.glob("resnet18-cifar-*-layer-speedup.png"))) == 9
