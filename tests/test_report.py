"""`accelsim report` and `simulator.report`: the plots of a results.csv, their data, bad input."""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.container import BarContainer

import simulator
from simulator import report
from simulator.cli import main
from simulator.config import ConfigError
from simulator.results import summarize

LOOKAHEAD = 2
CONFIG = {
    "architecture": {"tiles": 2, "rows": 4, "lanes": 16,
                     "frontend": {"shape": "T", "lookahead": LOOKAHEAD, "lookaside": 5}},
    "workload": {"network": "simple-cnn", "batch": 1,
                 "sparsity": [0.0, 0.8], "seed": 0},
    "passes": ["forward", "input_grad", "weight_grad"],
}
KINDS = ("layer-speedup", "speedup-vs-sparsity", "dram-traffic", "utilization", "energy")
STEMS = [f"simple-cnn-{k}" for k in KINDS]


def run_main(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A results directory with the tiny run's results.csv, and that CSV as read back."""
    out = tmp_path_factory.mktemp("results")
    simulator.write_results(simulator.run(simulator.parse_config(CONFIG), quiet=True),
                            out / "results.csv")
    return out, pd.read_csv(out / "results.csv")


@pytest.fixture(scope="module")
def written(results) -> tuple[Path, list[Path], str]:
    """`accelsim report` on the tiny run: (results dir, files written, stdout)."""
    out, _ = results
    before = set(out.iterdir())
    rc, stdout, stderr = run_main(["report", out])
    assert (rc, stderr) == (0, ""), stderr
    return out, sorted(set(out.iterdir()) - before), stdout


def small(df: pd.DataFrame) -> pd.DataFrame:
    """The forward rows at one sparsity: the cheapest input that still draws every plot."""
    return df[(df["pass"] == "forward") & (df["sparsity"] == df["sparsity"].max())]


def _layers(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["layer"]))


def _lines(ax, prefix: str):
    return [line for line in ax.get_lines() if line.get_label().startswith(prefix)]


# ---------------------------------------------------------------------------- files

def test_report_writes_png_and_svg_for_every_plot(written):
    out, paths, _ = written
    assert {p.name for p in paths} == {f"{s}.{ext}" for s in STEMS for ext in ("png", "svg")}
    for p in paths:
        assert p.parent == out and p.is_file()
        data = p.read_bytes()
        if p.suffix == ".png":
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
        else:
            assert ET.parse(p).getroot().tag.endswith("svg")


def test_no_temporary_files_left(written):
    out, paths, _ = written
    assert sorted(p.name for p in out.iterdir()) == sorted(["results.csv", "results.csv.sha256", *(p.name for p in paths)])


def test_same_results_give_the_same_files(results, tmp_path):
    _, df = results
    files = []
    for d in (tmp_path / "a", tmp_path / "b"):
        d.mkdir()
        small(df).to_csv(d / "results.csv", index=False)
        files.append({p.name: p.read_bytes() for p in report.write_report(d)})
    assert files[0] == files[1]


# ---------------------------------------------------------------------------- plot data

def test_layer_speedup_bars_are_the_csv_speedups(results):
    _, df = results
    fig = report.layer_speedup(df)
    layers = _layers(df)
    axes = fig.get_axes()
    sparsities = sorted(df["sparsity"].unique())
    assert len(axes) == len(sparsities)
    assert [t.get_text() for t in axes[-1].get_xticklabels()] == layers
    for ax, s in zip(axes, sparsities):
        bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
        assert list(bars) == ["forward", "input_grad", "weight_grad"]
        for p, container in bars.items():
            rows = df[(df["sparsity"] == s) & (df["pass"] == p)]
            assert len(container.patches) == len(rows)  # conv1 has no input_grad bar
            for patch in container.patches:
                layer = layers[int(round(patch.get_x() + patch.get_width() / 2))]
                expected = rows.loc[rows["layer"] == layer, "speedup"].item()
                assert patch.get_height() == pytest.approx(expected, rel=1e-12), (s, p, layer)
        cap, = _lines(ax, "front-end cap")
        assert set(cap.get_ydata()) == {LOOKAHEAD + 1}


def test_speedup_vs_sparsity_points_are_ratios_of_sums(results):
    _, df = results
    summary = summarize(df)
    fig = report.speedup_vs_sparsity(df)
    axes = fig.get_axes()
    assert [ax.get_title().split()[0] for ax in axes] == ["forward", "backward", "iteration"]
    for ax in axes:
        phase = ax.get_title().split()[0]
        part = summary[summary["phase"] == phase].sort_values("sparsity")
        # ratios of summed cycles, not means of per-layer speedups
        passes = {"backward": ["input_grad", "weight_grad"]}.get(phase, None)
        rows = df if phase == "iteration" else df[df["pass"].isin(passes or [phase])]
        sums = rows.groupby("sparsity")[["dense_cycles", "cycles"]].sum()
        np.testing.assert_allclose(part["speedup"], sums["dense_cycles"] / sums["cycles"])
        for label, col in (("speedup (memory", "speedup"), ("compute speedup", "compute_speedup")):
            line, = _lines(ax, label)
            np.testing.assert_allclose(line.get_xdata(), part["sparsity"] * 100)
            np.testing.assert_allclose(line.get_ydata(), part[col], rtol=1e-12)
        ideal, = _lines(ax, "work bound 1/(1-s)")  # "ideal" is the array's bound in the tables
        x = np.asarray(ideal.get_xdata()) / 100
        np.testing.assert_allclose(ideal.get_ydata(), 1 / (1 - x))
        assert x[0] == 0 and x[-1] == pytest.approx(df["sparsity"].max())
        cap, = _lines(ax, "front-end cap")
        assert set(cap.get_ydata()) == {LOOKAHEAD + 1}


@pytest.mark.parametrize("frontend, cap", [("T<4,2>", 5), ("L<1,3>", 2), ("none", 1)])
def test_cap_line_at_h_plus_1(results, frontend, cap):
    _, df = results
    df = df.assign(frontend=frontend)
    assert report.frontend_cap(frontend) == cap
    for plot in (report.layer_speedup, report.speedup_vs_sparsity):
        for ax in plot(df).get_axes():
            line, = _lines(ax, "front-end cap")
            assert set(line.get_ydata()) == {cap}
            assert line.get_label() == f"front-end cap h+1 = {cap}x (bounds compute only)"


def test_frontend_cap_rejects_garbage():
    with pytest.raises(ValueError, match="T<2,5>"):
        report.frontend_cap("trident")


def test_dram_traffic_stacks_the_tensor_classes(results):
    _, df = results
    ax, = report.dram_traffic(df).get_axes()[:1]
    keys = [(p, s) for p in ("forward", "input_grad", "weight_grad") for s in sorted(df["sparsity"].unique())]
    sums = df.groupby(["pass", "sparsity"]).sum(numeric_only=True)
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    assert list(bars) == ["weights", "activations", "saved activations", "gradients"]
    bottom = np.zeros(len(keys))
    for (col, _), container in zip(report.CLASSES, bars.values()):
        heights = np.array([b.get_height() for b in container.patches])
        np.testing.assert_allclose(heights * 1e6, [sums.loc[k, col] for k in keys])
        np.testing.assert_allclose([b.get_y() for b in container.patches], bottom)
        bottom += heights
    # the classes add up to reads + writes
    np.testing.assert_allclose(bottom * 1e6, [sums.loc[k, "dram_read_bytes"] + sums.loc[k, "dram_write_bytes"]
                                              for k in keys])
    dense, = _lines(ax, "dense training")
    np.testing.assert_allclose(np.asarray(dense.get_ydata()) * 1e6,
                               [sums.loc[k, "dense_dram_bytes"] for k in keys])


def test_utilization_map_cells(results):
    _, df = results
    fig = report.utilization_map(df)
    axes = [ax for ax in fig.get_axes() if ax.get_images()]  # panels of at most 24 layers
    image = np.ma.hstack([ax.get_images()[0].get_array() for ax in axes])
    layers = _layers(df)
    rows = [(s, p) for s in sorted(df["sparsity"].unique()) for p in ("forward", "input_grad", "weight_grad")]
    assert image.shape == (len(rows), len(layers))
    util = df.set_index(["sparsity", "pass", "layer"])["utilization"]
    for r, (s, p) in enumerate(rows):
        for c, layer in enumerate(layers):
            if (s, p, layer) in util.index:
                assert image[r, c] == pytest.approx(util[(s, p, layer)] * 100)
            else:
                assert np.ma.is_masked(image[r, c])  # conv1 input_grad: not simulated
    assert [t.get_text() for ax in axes for t in ax.get_xticklabels()] == layers


def test_one_network_per_figure(results):
    _, df = results
    two = pd.concat([df, df.assign(network="other")])
    with pytest.raises(ValueError, match="one network"):
        report.layer_speedup(two)
    assert [stem for stem, _ in report.figures(two)] == STEMS + [f"other-{k}" for k in KINDS]


def test_merged_sweep_csv_is_split_per_configuration(results, tmp_path):
    _, df = results
    lookahead = "architecture.frontend.lookahead"
    merged = pd.concat([df.assign(**{lookahead: 2, "workload.sparsity": df["sparsity"]}),
                        df.assign(frontend="T<4,5>", **{lookahead: 4, "workload.sparsity": df["sparsity"]})])
    merged.to_csv(tmp_path / "results.csv", index=False)
    merged = report.load_results(tmp_path / "results.csv")
    # the swept lookahead is told by the front-end; workload.sparsity by the sparsity
    assert [(n, label, len(part)) for n, label, part in report.configurations(merged)] == [
        ("simple-cnn", "front-end T<2,5>", len(df)), ("simple-cnn", "front-end T<4,5>", len(df))]
    stems = [stem for stem, _ in report.figures(small(merged))]
    assert stems == [f"simple-cnn-{fe}-{k}" for fe in ("T2-5", "T4-5") for k in KINDS]
    tiles = pd.concat([df.assign(**{"architecture.tiles": t}) for t in (2, 8)])
    assert [label for _, label, _ in report.configurations(tiles)] == [
        "architecture.tiles=2", "architecture.tiles=8"]
    assert [stem for stem, _ in report.figures(small(tiles))][::len(KINDS)] == [
        "simple-cnn-architecture.tiles=2-layer-speedup", "simple-cnn-architecture.tiles=8-layer-speedup"]
    same = merged.drop(columns=lookahead).assign(frontend="T<2,5>")
    same.to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(ConfigError, match=r"one row per \(network, sparsity, layer, pass\)"):
        report.load_results(tmp_path / "results.csv")


# ---------------------------------------------------------------------------- CLI

def test_report_command_lists_the_files(written):
    out, _, stdout = written
    assert stdout.splitlines() == [f"wrote {out / s}.{e}" for s in STEMS for e in ("png", "svg")]


def _bad(tmp_path: Path, text: str | bytes | None) -> Path:
    d = tmp_path / "res"
    d.mkdir()
    if text is not None:
        (d / "results.csv").write_bytes(text.encode() if isinstance(text, str) else text)
    return d


@pytest.mark.parametrize("case, content, expected", [
    ("no results.csv", None,
     "results.csv: expected the results.csv that `accelsim run` writes, but it does not exist"),
    ("empty", "", "but the file is empty"),
    ("garbled", b'\x00\xff,"x\n1,"2', "not a readable CSV"),
    ("other csv", "a,b\n1,2\n", "missing network, layer, pass"),
    ("no rows", None, "expected at least one result row"),
    ("missing column", None, "missing speedup"),
    ("non-numeric", None, "column cycles: expected a number in [1, 10^18], got 'lots' (data row 2)"),
    ("unknown pass", None, "column pass: expected forward, input_grad, weight_grad, got 'sideways'"),
    ("bad frontend", None, "column frontend: expected a front-end like 'T<2,5>'"),
    ("no sparsity", None, "column sparsity: expected a value in every row, data row 3 has none"),
    ("cut at a row", None, "expected the same layer passes at every sparsity, but simple-cnn has"),
])
def test_bad_input_is_one_line_and_exit_2(results, tmp_path, case, content, expected):
    _, df = results
    derived = {"no rows": df.iloc[:0],
               "missing column": df.drop(columns="speedup"),
               "non-numeric": df.astype({"cycles": object}).assign(
                   cycles=lambda d: d["cycles"].where(d.index != 1, "lots")),
               "no sparsity": df.assign(sparsity=df["sparsity"].where(df.index != 2)),
               "unknown pass": df.assign(**{"pass": df["pass"].where(df.index != 0, "sideways")}),
               "bad frontend": df.assign(frontend="trident"),
               "cut at a row": df.iloc[:-1]}
    if case in derived:
        content = derived[case].to_csv(index=False)
    d = _bad(tmp_path, content) if case != "no results.csv" else _bad(tmp_path, None)
    rc, stdout, stderr = run_main(["report", d])
    assert rc == 2 and stdout == ""
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith(f"accelsim: error: {d / 'results.csv'}: ")
    assert expected in stderr
    assert sorted(p.name for p in d.iterdir()) == ([] if content is None else ["results.csv"])


@pytest.mark.parametrize("make", ["missing", "file"])
def test_bad_results_dir(tmp_path, make):
    target = tmp_path / "out"
    if make == "file":
        target.write_text("x")
    rc, stdout, stderr = run_main(["report", target])
    assert rc == 2 and stdout == ""
    assert stderr == (f"accelsim: error: {target}: expected a results directory with the results.csv "
                      f"that `accelsim run` writes, but it "
                      f"{'does not exist' if make == 'missing' else 'is not a directory'}\n")


def test_unwritable_plot_is_a_clean_error_and_leaves_no_temp_file(results, tmp_path):
    _, df = results
    small(df).to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "simple-cnn-dram-traffic.png").mkdir()  # os.replace onto a directory fails
    rc, stdout, stderr = run_main(["report", tmp_path, "-q"])
    assert rc == 2 and len(stderr.splitlines()) == 1
    assert (f"{tmp_path / 'simple-cnn-dram-traffic.png'}: exists and is a directory, not a "
            "regular file; refusing to replace it") in stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_run_with_plots(tmp_path):
    cfg = dict(CONFIG, passes=["forward"], workload=dict(CONFIG["workload"], sparsity=[0.8]))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    rc, stdout, stderr = run_main(["run", path, "--out", out, "-q", "--plots"])
    assert rc == 0, stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["results.csv", "results.csv.sha256", *(f"{s}.{e}" for s in STEMS for e in ("png", "svg"))])
    assert "wrote" not in stdout.split("results.csv")[-1]  # -q: plots not listed
    rc, stdout, stderr = run_main(["run", path, "--out", out, "--plots"])
    assert rc == 0, stderr
    assert stdout.splitlines()[-2 * len(STEMS):] == [f"wrote {out / s}.{e}" for s in STEMS for e in ("png", "svg")]


def test_help_mentions_report_and_plots():
    for argv, needle in ((["report", "--help"], "RESULTS_DIR"), (["run", "--help"], "--plots")):
        with pytest.raises(SystemExit) as e, contextlib.redirect_stdout(io.StringIO()) as out:
            main(argv)
        assert e.value.code == 0 and needle in out.getvalue()


# ---------------------------------------------------------------------------- hostile results.csv

def _one_line(rc: int, stdout: str, stderr: str, path: Path, *fragments: str) -> None:
    assert rc == 2 and stdout == "" and "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith(f"accelsim: error: {path}: "), stderr
    for f in fragments:
        assert f in stderr, (f, stderr)


def _with_cell(df: pd.DataFrame, col: str, row: int, value: str) -> str:
    """`df` as CSV text with the cell (data row `row`, 1-based, `col`) set to `value` as is."""
    return df.astype({col: object}).assign(
        **{col: lambda d: d[col].where(np.arange(len(d)) != row - 1, value)}).to_csv(index=False)


@pytest.mark.parametrize("col, row, value, expected", [
    ("cycles", 2, "", "expected a number in [1, 10^18], got an empty cell (or NaN)"),
    ("cycles", 3, "nan", "got an empty cell (or NaN)"),
    ("cycles", 1, "inf", "got inf"),
    ("cycles", 4, "1e400", "got inf"),
    ("cycles", 2, "-5", "got -5"),
    ("cycles", 2, "0", "expected a number in [1, 10^18], got 0"),
    ("cycles", 5, "9" * 400, "got an integer of 400 digits"),
    ("cycles", 5, "9" * 20, "got 99999999999999999999"),
    ("dense_cycles", 2, "0", "got 0"),
    ("stall_cycles", 2, "-1", "expected a number in [0, 10^18], got -1"),
    ("ideal_cycles", 3, "", "got an empty cell (or NaN)"),
    ("speedup", 2, "-1", "got -1"),
    ("speedup", 2, "inf", "got inf"),
    ("speedup", 1, "nan", "got an empty cell (or NaN)"),
    ("compute_speedup", 2, "", "empty exactly where compute_cycles is 0"),
    ("utilization", 2, "-0.5", "got -0.5"),
    ("dram_read_bytes", 2, "-1e308", "got -1e+308"),
    ("weight_bytes", 2, "inf", "got inf"),
    ("dense_dram_bytes", 2, "nan", "got an empty cell (or NaN)"),
    ("activation_memory_bytes", 2, "nan", "got an empty cell (or NaN)"),
    ("macs", 2, "lots", "got 'lots'"),
    ("refetch", 2, "-2", "got -2"),
    ("weight_sparsity", 2, "1.5", "expected a fraction in [0, 1], got 1.5"),
    ("sparsity", 2, "1", "expected a fraction in [0, 1), got 1"),
])
def test_a_value_run_cannot_write_is_one_line_naming_column_and_row(results, tmp_path, col, row,
                                                                     value, expected):
    _, df = results
    d = _bad(tmp_path, _with_cell(df, col, row, value))
    _one_line(*run_main(["report", d]), d / "results.csv", f"column {col}: expected",
              expected, f"(data row {row})")
    assert [p.name for p in d.iterdir()] == ["results.csv"]


def test_check_rows_allows_what_run_writes():
    """An empty compute or ideal speedup where its divisor is 0 is what `result_row` writes."""
    from simulator.results import check_rows
    rows = pd.DataFrame({"cycles": [5, 3], "compute_cycles": [0, 3], "compute_speedup": [np.nan, 1.0],
                         "ideal_cycles": [0, 0], "ideal_speedup": [np.nan, np.nan]})
    check_rows(rows)
    with pytest.raises(ValueError, match=r"column compute_speedup: .* got 2.0 \(data row 1\)"):
        check_rows(rows.assign(compute_speedup=[2.0, 1.0]))  # a ratio over 0 cycles


@pytest.mark.parametrize("case, expected", [
    ("frontend huge h", "column frontend: expected a front-end like 'T<2,5>'"),
    ("frontend 400 nines", "column frontend: expected at most 200 characters, got 405 (data row 1)"),
    ("network NUL", "column network: expected a name without control characters, got 'a\\x00b'"),
    ("layer 300 chars", "column layer: expected at most 200 characters, got 300 (data row 1)"),
    ("1001 layers", "expected at most 1,000 layers per network, got 1,001 for 'simple-cnn'"),
    ("51 sparsities", "expected at most 50 sparsities per network, got 51 for 'simple-cnn'"),
    ("7000 rows", "expected at most 6,000 rows (layer passes x sparsities) per network and "
                  "configuration, got 7,000 for 'simple-cnn'"),
    ("15000 rows", "holds 15,000 rows in 3 configurations, more than the 12,000 drawn in about "
                   "a minute; expected --all"),
    ("3000 networks", "holds 3,000 configurations (more than 8) and no two numeric swept keys to "
                      "map; expected --all"),
])
def test_what_cannot_be_drawn_is_one_line(results, tmp_path, case, expected):
    _, df = results
    one = df.iloc[:1]
    table = {
        "frontend huge h": lambda: df.assign(frontend="T<" + "9" * 30 + ",5>"),
        "frontend 400 nines": lambda: df.assign(frontend="T<" + "9" * 400 + ",5>"),
        "network NUL": lambda: df.assign(network="a\x00b"),
        "layer 300 chars": lambda: df.assign(layer="l" * 300),
        "1001 layers": lambda: pd.concat([one] * 1001).assign(layer=[f"l{i}" for i in range(1001)]),
        "51 sparsities": lambda: pd.concat([one] * 51).assign(sparsity=np.arange(51) / 100),
        "7000 rows": lambda: pd.concat([one] * 7000).assign(
            layer=[f"l{i % 1000}" for i in range(7000)], sparsity=[i // 1000 / 10 for i in range(7000)]),
        "15000 rows": lambda: pd.concat([one] * 15000).assign(
            network=[f"n{i % 3}" for i in range(15000)], layer=[f"l{i // 3 % 1000}" for i in range(15000)],
            sparsity=[i // 3000 / 10 for i in range(15000)]),
        "3000 networks": lambda: pd.concat([one] * 3000).assign(network=[f"n{i}" for i in range(3000)]),
    }
    d = _bad(tmp_path, table[case]().to_csv(index=False))
    start = time.perf_counter()
    _one_line(*run_main(["report", d]), d / "results.csv", expected)
    assert time.perf_counter() - start < 10
    assert [p.name for p in d.iterdir()] == ["results.csv"]


@pytest.mark.parametrize("target", ["/proc/kmsg", "/proc/self/status"])
def test_a_results_csv_that_says_it_is_empty_is_not_read(tmp_path, target):
    """A symlink to a procfs file (regular, size 0; /proc/kmsg blocks a read forever)."""
    if not os.path.exists(target):
        pytest.skip(f"no {target}")
    d = tmp_path / "res"
    d.mkdir()
    (d / "results.csv").symlink_to(target)
    rc, stdout, stderr = run_main(["report", d])
    _one_line(rc, stdout, stderr, d / "results.csv")
    assert "but the file is empty" in stderr or "cannot be read" in stderr


@pytest.mark.parametrize("name", ["r" * 5000, "re\ns", "r" * 200 + "/" + "r" * 200])
def test_a_bad_results_dir_path_is_one_line(tmp_path, name):
    """ENAMETOOLONG from the stat, a newline in the name: one line, the path cut to 200."""
    d = tmp_path / name
    with pytest.raises(ConfigError) as e:
        report.write_report(d)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400
    assert "expected a results directory" in str(e.value)
    if "\n" not in name:  # the command line may refuse a newline before we see it
        rc, stdout, stderr = run_main(["report", d])
        assert rc == 2 and stdout == "" and len(stderr.splitlines()) == 1, stderr
        assert stderr.startswith("accelsim: error: ") and len(stderr) < 400


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("network, stem", [
    ("../x", "x-"),
    ("../../../x/rep", "x-rep-"),
    ("ABS", "tmp-"),  # an absolute path under tmp_path, filled in below
    ("a\x00b", None),  # refused: control characters
    (".hidden", "hidden-"),
    ("a b/c", "a-b-c-"),
    ("n" * 150, "n" * 91 + "-"),  # safe but too long
])
def test_plot_files_stay_in_the_results_dir_with_safe_names(results, tmp_path, network, stem):
    _, df = results
    outside = tmp_path / "outside"
    outside.mkdir()
    if network == "ABS":
        network = str(outside / "abs")
    d = _bad(tmp_path, small(df).assign(network=network).to_csv(index=False))
    before = _tree(tmp_path)
    rc, stdout, stderr = run_main(["report", d, "-q"])
    new = _tree(tmp_path) - before
    assert all(n.startswith("res/") for n in new), new  # nothing outside DIR
    assert not list(outside.iterdir())
    if stem is None:
        _one_line(rc, stdout, stderr, d / "results.csv", "control characters")
        return
    assert (rc, stderr) == (0, ""), stderr
    names = sorted(n.removeprefix("res/") for n in new)
    assert len(names) == 2 * len(KINDS)
    for n in names:
        assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", n) and len(n) < 130, n
        assert n.startswith(stem if not stem.startswith("tmp-") else stem), n
        assert re.search(r"-[0-9a-f]{8}-(layer-speedup|speedup-vs-sparsity|dram-traffic|utilization|energy)"
                         r"\.(png|svg)$", n), n


def test_file_stems_are_safe_and_distinct():
    names = ["resnet50", "a/b", "a-b", "a?b", "a b", "..", ".", "/", "x" * 100, "x" * 101,
             "é", "-x", "resnet.v1"]
    stems = [report.file_stem(n) for n in names]
    assert stems[0] == "resnet50" and stems[2] == "a-b" and stems[-2:] == ["-x", "resnet.v1"]
    assert stems[8] == "x" * 100  # safe and at most 100 characters: unchanged
    assert len(set(stems)) == len(stems)
    for s in stems:
        assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", s) and len(s) <= 100, s


def test_configurations_whose_stems_collide_get_distinct_files(results):
    _, df = results
    two = pd.concat([small(df).assign(network="a?b"), small(df).assign(network="a*b"),
                     small(df).assign(network="A"), small(df).assign(network="a")])
    stems = [stem for stem, _ in report.figures(two)]
    assert len({s.lower() for s in stems}) == len(stems) == 4 * len(KINDS)
    assert "A-layer-speedup" in stems


def test_a_file_cut_at_a_row_boundary_is_caught_by_its_digest(results, tmp_path):
    """`write_results` records the SHA-256 beside results.csv: a file cut between two
    sparsities (which looks like a complete run of fewer) or edited is refused; without
    the record the file is plotted as it is."""
    from simulator.results import digest_path, write_results

    _, df = results
    rows = df[df["pass"] == "forward"]
    path = write_results(rows, tmp_path / "results.csv")
    assert digest_path(path).read_text().split()[1] == "results.csv"
    kept = rows[rows["sparsity"] == rows["sparsity"].iloc[0]]
    path.write_text(kept.to_csv(index=False))  # a whole sparsity cut off
    rc, _, stderr = run_main(["report", tmp_path, "-q"])
    assert rc == 2 and len(stderr.splitlines()) == 1
    assert "results.csv: does not match results.csv.sha256" in stderr
    digest_path(path).unlink()
    rc, _, stderr = run_main(["report", tmp_path, "-q"])
    assert rc == 0, stderr
