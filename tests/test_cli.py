"""The `accelsim` command line, in-process and as a real subprocess, and the Python API."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import yaml

import simulator
from simulator.cli import main
from tests.util import run_main
from simulator.results import COLUMNS
from workloads.networks import build_network

REPO = Path(__file__).resolve().parents[1]
NETWORK, IMAGE_SIZE, SPARSITIES = "resnet18-cifar", 8, (0.0, 0.8)
LOOKAHEAD = 2


def tiny_config(**overrides) -> dict:
    """A small array and a tiny ResNet-18: a run takes about a second."""
    cfg = {
        "architecture": {"tiles": 2, "rows": 4, "lanes": 16,
                         "frontend": {"shape": "T", "lookahead": LOOKAHEAD, "lookaside": 5}},
        "workload": {"network": NETWORK, "image_size": IMAGE_SIZE, "batch": 1,
                     "sparsity": list(SPARSITIES), "seed": 0},
        "passes": ["forward"],
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section] = {**cfg[section], **values}
        else:
            cfg[section] = values
    return cfg


def write_config(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path




def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or REPO, timeout=120)


def layer_names() -> list[str]:
    return [s.name for s in build_network(NETWORK, image_size=IMAGE_SIZE).layers]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One `accelsim run` of the tiny config: (config path, out dir, stdout, results)."""
    root = tmp_path_factory.mktemp("tiny")
    path = write_config(root / "tiny.yaml", tiny_config())
    out = root / "out"
    rc, stdout, stderr = run_main(["run", path, "--out", out, "-q"])
    assert rc == 0, stderr
    assert stderr == ""
    return path, out, stdout, pd.read_csv(out / "results.csv")


# --- help, version, usage -----------------------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    (["--help"], ["run", "check", "--version"]),
    (["run", "--help"], ["config", "--out", "--quiet", "-q", "--verbose"]),
    (["check", "--help"], ["config", "--quiet", "--verbose"]),
])
def test_help_exits_0_and_lists_options(capsys, argv, expected):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: accelsim")
    for word in expected:
        assert word in out
    if argv[0] == "check":
        assert "--out" not in out  # check writes nothing


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"accelsim {simulator.__version__}"
    # the package metadata (pyproject.toml) and the module agree
    assert metadata.version("accelsim") == simulator.__version__


def test_no_subcommand_is_one_line_naming_the_commands_and_exits_2(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("accelsim: error: expected a command: run, report, check")
    assert len(err.splitlines()) == 1


def test_unknown_subcommand_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["simulate", "x.yaml"])
    assert info.value.code == 2


# --- errors seen from outside -------------------------------------------------------------------

def assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("accelsim: error: "), stderr
    for frag in fragments:
        assert frag in lines[0], f"{frag!r} not in {lines[0]!r}"


def test_bad_config_subprocess(tmp_path):
    path = write_config(tmp_path / "bad.yaml", tiny_config(architecture={"tiles": -3}))
    proc = run_cli("run", path, "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, str(path), "architecture.tiles", "expected an integer >= 1")
    assert proc.stdout == ""
    assert not (tmp_path / "out").exists()


def test_installed_console_script(tmp_path):
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    exe = shutil.which("accelsim", path=path)
    if exe is None:
        pytest.skip("the accelsim console script is not installed")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"accelsim {simulator.__version__}"
    bad = write_config(tmp_path / "bad.yaml",
                       tiny_config(architecture={"frontend": {"shape": "X"}}))
    proc = subprocess.run([exe, "check", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, str(bad), "architecture.frontend.shape", "'X'")
    proc = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("accelsim: error: expected a command")


def test_missing_config_file_subprocess(tmp_path):
    proc = run_cli("check", tmp_path / "nope.yaml")
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, str(tmp_path / "nope.yaml"), "no such file")


def test_unknown_dense_layer(tmp_path, capsys):
    path = write_config(tmp_path / "c.yaml", tiny_config(workload={"dense_layers": ["nonexistent"]}))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "-q"]) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, str(path), "workload.dense_layers", "'nonexistent'")
    assert not (tmp_path / "out").exists()


def test_unknown_network(tmp_path, capsys):
    path = write_config(tmp_path / "c.yaml", tiny_config(workload={"network": "nonexistent"}))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "-q"]) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, str(path), "workload.network", "nonexistent")
    assert not (tmp_path / "out").exists()


def test_unknown_network_in_check(tmp_path, capsys):
    path = write_config(tmp_path / "c.yaml", tiny_config(workload={"network": "nonexistent"}))
    assert main(["check", str(path), "-q"]) == 2
    assert_one_line_error(capsys.readouterr().err, "workload.network")


# --- run ----------------------------------------------------------------------------------------

def test_run_writes_one_row_per_layer_and_sparsity(tiny):
    _, out, _, df = tiny
    assert list(df.columns) == COLUMNS
    names = layer_names()
    assert len(df) == len(SPARSITIES) * len(names)
    assert (df["network"] == NETWORK).all() and (df["pass"] == "forward").all()
    assert (df["frontend"] == f"T<{LOOKAHEAD},5>").all()
    assert sorted(df["sparsity"].unique()) == list(SPARSITIES)
    for s in SPARSITIES:
        assert df.loc[df["sparsity"] == s, "layer"].tolist() == names
    assert not df.duplicated(["sparsity", "layer", "pass"]).any()


def test_run_rows_obey_cycle_bounds(tiny):
    df = tiny[3]
    assert (df["compute_cycles"] > 0).all()
    assert (df["ideal_cycles"] <= df["compute_cycles"]).all()
    assert (df["compute_cycles"] <= df["dense_compute_cycles"]).all()
    assert (df["cycles"] == df["compute_cycles"] + df["stall_cycles"]).all()
    assert (df["stall_cycles"] >= 0).all() and (df["dense_cycles"] >= df["dense_compute_cycles"]).all()
    assert df["speedup"].to_numpy() == pytest.approx((df["dense_cycles"] / df["cycles"]).to_numpy())
    assert df["compute_speedup"].to_numpy() == pytest.approx(
        (df["dense_compute_cycles"] / df["compute_cycles"]).to_numpy())
    assert (df["compute_speedup"] >= 1).all()
    # the window advances at most lookahead + 1 steps per cycle
    assert (df["compute_speedup"] <= LOOKAHEAD + 1 + 1e-12).all()
    assert (df["dense_compute_cycles"] <= (LOOKAHEAD + 1) * df["compute_cycles"]).all()
    # the first conv stays dense: its weight sparsity is 0 at every target sparsity
    first = df[df["layer"] == build_network(NETWORK, image_size=IMAGE_SIZE).first_conv]
    assert (first["weight_sparsity"] == 0).all()
    # other layers are sparsified to the target
    rest = df[(df["sparsity"] == 0.8) & (df["layer"] != first["layer"].iloc[0])]
    assert rest["weight_sparsity"].to_numpy() == pytest.approx(0.8, abs=0.01)


def test_run_verbose_adds_a_line_per_layer_and_pass(tmp_path, tiny):
    path, _, quiet_stdout, df = tiny
    rc, stdout, _ = run_main(["run", path, "--out", tmp_path / "v", "-q", "-v"])
    assert rc == 0
    for s in SPARSITIES:
        assert f"{NETWORK} at {s:.0%}, per layer and pass:" in stdout
    sub = df[df["sparsity"] == SPARSITIES[-1]].iloc[-1]
    line = [ln for ln in stdout.splitlines() if ln.split()[:2] == [sub["layer"], sub["pass"]]][-1]
    assert line.split()[2] == str(sub["cycles"]) and line.split()[3] == str(sub["stall_cycles"])
    summary = quiet_stdout.split("\n", 1)[1].rsplit("\nwrote", 1)[0]
    assert summary in stdout  # the summary follows unchanged


def test_run_summary_matches_csv(tiny):
    _, out, stdout, df = tiny
    assert NETWORK in stdout and "forward" in stdout
    assert "front-end T<2,5>" in stdout
    for s in SPARSITIES:
        sub = df[df["sparsity"] == s]
        m = re.search(rf"^\s*{s:.0%}\s+([\d,]+)\s*$", stdout, re.MULTILINE)
        assert m, f"no cycles line for {s:.0%} in:\n{stdout}"
        cycles = int(m.group(1).replace(",", ""))
        m = re.search(rf"^\s*{s:.0%}\s+([\d.]+)x / ", stdout, re.MULTILINE)
        assert m, f"no speedup line for {s:.0%} in:\n{stdout}"
        speedup = float(m.group(1))
        assert cycles == sub["cycles"].sum()
        # whole-network speedup is a ratio of sums, not a mean of per-layer speedups
        assert speedup == pytest.approx(sub["dense_cycles"].sum() / sub["cycles"].sum(), abs=0.005)
    total = {s: df.loc[df["sparsity"] == s, "cycles"].sum() for s in SPARSITIES}
    assert total[0.8] < total[0.0]  # 80% zeros to skip must save cycles
    m = re.search(r"wrote (.+) \((\d+) rows\)", stdout)
    assert m and Path(m.group(1)) == out / "results.csv" and int(m.group(2)) == len(df)


def test_run_leaves_no_temporary_files(tiny):
    out = tiny[1]
    assert sorted(os.listdir(out)) == ["results.csv", "results.csv.sha256"]


def test_default_output_dir_is_reports_name(tmp_path, monkeypatch, capsys):
    path = write_config(tmp_path / "configs" / "tiny-default.yaml",
                        tiny_config(workload={"sparsity": [0.8]}))
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path), "-q"]) == 0
    csv = tmp_path / "reports" / "tiny-default" / "results.csv"
    assert csv.is_file()
    assert sorted(os.listdir(csv.parent)) == ["results.csv", "results.csv.sha256"]
    assert len(pd.read_csv(csv)) == len(layer_names())
    assert str(Path("reports") / "tiny-default" / "results.csv") in capsys.readouterr().out


def test_output_dir_from_config_and_out_override(tmp_path, monkeypatch):
    path = write_config(tmp_path / "c.yaml", tiny_config(workload={"sparsity": [0.8]},
                                                         output={"dir": "custom/place"}))
    monkeypatch.chdir(tmp_path)
    rc, _, _ = run_main(["run", path, "-q"])
    assert rc == 0
    assert (tmp_path / "custom" / "place" / "results.csv").is_file()
    assert not (tmp_path / "reports").exists()
    rc, _, _ = run_main(["run", path, "-q", "--out", tmp_path / "override"])
    assert rc == 0
    assert (tmp_path / "override" / "results.csv").is_file()
    assert not (tmp_path / "reports").exists()
    # the earlier result was not touched by the overridden run
    assert sorted(os.listdir(tmp_path / "custom" / "place")) == ["results.csv", "results.csv.sha256"]


def test_no_frontend_is_the_dense_array(tmp_path, tiny):
    path = write_config(tmp_path / "none.yaml",
                        tiny_config(architecture={"frontend": {"shape": "none"}}))
    rc, stdout, _ = run_main(["run", path, "--out", tmp_path / "out", "-q"])
    assert rc == 0
    df = pd.read_csv(tmp_path / "out" / "results.csv", keep_default_na=False)
    assert len(df) == len(SPARSITIES) * len(layer_names())
    assert (df["frontend"] == "none").all()
    assert (df["compute_cycles"] == df["dense_compute_cycles"]).all()
    assert (df["compute_speedup"] == 1.0).all()
    assert "front-end none" in stdout
    # the dense array's cycle count does not depend on the workload's sparsity or front-end
    t = tiny[3]
    assert df["dense_cycles"].tolist() == t["dense_cycles"].tolist()
    assert df["ideal_cycles"].tolist() == t["ideal_cycles"].tolist()


# --- progress output ----------------------------------------------------------------------------

def test_run_not_a_tty_writes_nothing_to_stderr(tmp_path):
    path = write_config(tmp_path / "c.yaml", tiny_config(workload={"sparsity": [0.8]}))
    proc = run_cli("run", path, "--out", tmp_path / "out")  # no -q: stderr is a pipe
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert (tmp_path / "out" / "results.csv").is_file()


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_quiet_suppresses_progress_on_a_tty(tmp_path, monkeypatch, capsys, quiet):
    path = write_config(tmp_path / "c.yaml", tiny_config(workload={"sparsity": [0.8]}))
    fake = FakeTTY()
    monkeypatch.setattr(sys, "stderr", fake)
    argv = ["run", str(path), "--out", str(tmp_path / "out")] + (["-q"] if quiet else [])
    assert main(argv) == 0
    if quiet:
        assert fake.getvalue() == ""
    else:  # the control: on a terminal the progress bar does appear
        assert f"{NETWORK} 80%" in fake.getvalue()


# --- check --------------------------------------------------------------------------------------

def test_check_passes(tiny, capsys):
    path = tiny[0]
    assert main(["check", str(path), "-q"]) == 0
    captured = capsys.readouterr()
    n = len(SPARSITIES) * len(layer_names())
    m = re.search(r"(\d+) of (\d+) layer passes match", captured.out)
    assert m and int(m.group(1)) == int(m.group(2)) == n
    assert "FAIL" not in captured.out + captured.err


# --- the Python API -----------------------------------------------------------------------------

def test_api_run_equals_cli_csv(tiny):
    path, out, _, csv = tiny
    df = simulator.run(simulator.load_config(path))
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == COLUMNS
    pd.testing.assert_frame_equal(df.reset_index(drop=True), csv, check_dtype=False)


def test_api_summarize_agrees_with_csv(tiny):
    df = tiny[3]
    summary = simulator.summarize(df)
    assert len(summary) == len(SPARSITIES)
    for r in summary.itertuples(index=False):
        sub = df[df["sparsity"] == r.sparsity]
        assert r.cycles == sub["cycles"].sum()
        assert r.speedup == pytest.approx(sub["dense_cycles"].sum() / sub["cycles"].sum())
    zero = summary.loc[summary["sparsity"] == 0.0, "speedup_vs_0"].item()
    assert zero == pytest.approx(1.0)


# --- regressions: bugs found by these tests and fixed ------------------------------------------

def test_results_csv_has_normal_permissions(tiny):
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE(os.stat(tiny[1] / "results.csv").st_mode)
    assert mode == 0o666 & ~umask


def test_unwritable_out_is_a_one_line_error(tmp_path, tiny):
    (tmp_path / "afile").write_text("")
    proc = run_cli("run", tiny[0], "-q", "--out", tmp_path / "afile" / "sub")
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "afile")


@pytest.mark.parametrize("argv, fragment", [
    (["sweep", "s.yaml", "--workers", "-1"], "accelsim: error: sweep: --workers: expected a positive int"),
    (["run", "--bogus"], "accelsim: error: run: --bogus: expected the command's options, got an unknown option"),
    (["trace-from-training", "resnet51"], "accelsim: error: trace-from-training: NETWORK: expected one of "),
])
def test_argument_errors_are_one_line(capsys, argv, fragment):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(fragment) and len(err.splitlines()) == 1 and "usage:" not in err


@pytest.mark.parametrize("argv", [["run", "a\nb.yaml"], ["run", "configs/tactical.yaml", "--out", ""],
                                  ["sweep", "s.yaml", "--out", "o\x1b[2J"], ["report", ""],
                                  ["trace-from-training", "simple-cnn", "--run-dir", "r\nx"],
                                  ["trace-from-training", "simple-cnn", "--out", ""]])
def test_paths_with_control_characters_or_empty_are_refused(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert "expected a non-empty path without control characters" in err
