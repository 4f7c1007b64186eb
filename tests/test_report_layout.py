"""Every plot `accelsim report`, `accelsim run --plots`, `accelsim sweep` and the notebook
draw keeps all of its text inside the figure, at every size they are drawn: titles,
suptitle, axis labels, tick labels (those drawn), legends, annotations, cell labels and
colour-bar labels, checked with each artist's window extent after drawing. Also the
plots' defects of issue 16: outliers cut with their value written, legends outside the
axes, the configuration named once per title, one meaning of "ideal", single-sparsity
runs drawn as bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.axis import Axis
from matplotlib.container import BarContainer
from matplotlib.legend import Legend
from matplotlib.text import Text

import simulator
from simulator import report
from simulator.report import _sweep_summary

CONFIG = {
    "architecture": {"tiles": 2, "rows": 4, "lanes": 16,
                     "frontend": {"shape": "T", "lookahead": 2, "lookaside": 5}},
    "workload": {"network": "simple-cnn", "batch": 1, "sparsity": [0.0, 0.8, 0.9], "seed": 0},
    "passes": ["forward", "input_grad", "weight_grad"],
}


@pytest.fixture(scope="module")
def df(tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("layout") / "results.csv"
    simulator.write_results(simulator.run(simulator.parse_config(CONFIG), quiet=True), out)
    return report.load_results(out)


def outside(fig) -> list[str]:
    """The text artists (and legends) of `fig` that reach outside the figure after drawing,
    as 'text: extent' strings; tick labels only where their tick is in view (drawn)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    hidden = set()
    for axis in fig.findobj(Axis):
        lo, hi = sorted(axis.get_view_interval())
        eps = 1e-9 * max(1.0, abs(hi - lo))
        for tick in axis.get_major_ticks() + axis.get_minor_ticks():
            if not lo - eps <= tick.get_loc() <= hi + eps:
                hidden.update((id(tick.label1), id(tick.label2)))
    bad = []
    for artist in fig.findobj(lambda a: isinstance(a, (Text, Legend))):
        if not artist.get_visible() or id(artist) in hidden:
            continue
        if isinstance(artist, Text) and not artist.get_text().strip():
            continue
        e = artist.get_window_extent(renderer)
        if e.x0 < box.x0 - 1 or e.y0 < box.y0 - 1 or e.x1 > box.x1 + 1 or e.y1 > box.y1 + 1:
            name = artist.get_text() if isinstance(artist, Text) else "legend"
            bad.append(f"{name[:60]!r}: {e.bounds} outside {box.bounds}")
    return bad


def variants(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Inputs of every shape the plots size themselves by: sparsities (3, 2, 1), passes
    (3, 1), layers (8 to 64), name lengths, a bit-serial backend, an outlier."""
    one = df[df["sparsity"] == 0.9]
    many = pd.concat([df.assign(layer=df["layer"] + f".{k}") for k in range(8)], ignore_index=True)
    outlier = df.copy()
    fc = (outlier["layer"] == outlier["layer"].iloc[-1]) & (outlier["sparsity"] == 0.9)
    outlier.loc[fc & (outlier["pass"] == "forward"), "speedup"] = 91.0
    return {
        "three sparsities": df,
        "two sparsities": df[df["sparsity"] > 0],
        "one sparsity": one,
        "one sparsity, forward only": one[one["pass"] == "forward"],
        "64 layers": many,
        "long names": df.assign(network="a-network-with-a-rather-long-name-" * 3,
                                layer=df["layer"] + "-with-a-long-suffix-" * 4),
        "bit-serial": df.assign(backend="tcle-16"),
        "91x outlier": outlier,
        "merged sweep": pd.concat([df.assign(**{"architecture.tiles": t}) for t in (2, 16)]),
    }


@pytest.mark.parametrize("case", ["three sparsities", "two sparsities", "one sparsity",
                                  "one sparsity, forward only", "64 layers", "long names",
                                  "bit-serial", "91x outlier", "merged sweep"])
def test_every_figure_keeps_its_text_inside(df, case):
    figs = report.figures(variants(df)[case])
    assert {stem.rsplit("-", 1)[-1] for stem, _ in figs} >= {"speedup", "sparsity", "traffic",
                                                              "utilization", "energy"}
    for stem, fig in figs:
        assert outside(fig) == [], stem


def _summary(df: pd.DataFrame, xs, ys, sparsities=(0.8, 0.9)) -> tuple[pd.DataFrame, list[str]]:
    keys = ["architecture.frontend.lookahead", "architecture.frontend.lookaside", "workload.sparsity"]
    base = df[df["sparsity"].isin(sparsities)]
    merged = pd.concat([base.assign(**{keys[0]: x, keys[1]: y, keys[2]: base["sparsity"]})
                        for x in xs for y in ys], ignore_index=True)
    return _sweep_summary(merged, keys), keys


@pytest.mark.parametrize("xs, ys, sparsities", [((1, 2), (1, 5), (0.9,)),
                                                ((1, 2, 4), (1, 5), (0.8, 0.9)),
                                                (tuple(range(1, 9)), tuple(range(8)), (0.0, 0.8, 0.9))])
@pytest.mark.parametrize("value", list(report.SWEEP_VALUES))
def test_sweep_maps_keep_their_text_inside(df, xs, ys, sparsities, value):
    summary, keys = _summary(df, xs, ys, sparsities)
    fig = report.sweep_map(summary, keys[0], keys[1], value, keys)
    assert outside(fig) == []
    cells = [t for ax in fig.axes for t in ax.texts]
    assert cells and min(t.get_fontsize() for t in cells) >= 8  # readable cell labels


def test_the_notebooks_figures_keep_their_text_inside(df):
    """reports/speedup.ipynb draws the same plots, and adds SWAT's stars to the speedup
    against sparsity, with the figure's legend redrawn under the panels (cell 9)."""
    for plot in (report.layer_speedup, report.dram_traffic, report.utilization_map):
        assert outside(plot(df)) == []
    fig = report.speedup_vs_sparsity(df)
    for ax in fig.axes:
        ax.plot([80, 90], [3.3, 5.6], linestyle="none", marker="*", label="SWAT Table 11 (ResNet-50)")
    for legend in fig.legends:
        legend.remove()
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3,
               fontsize=8, frameon=False)
    assert outside(fig) == []


def test_the_check_catches_clipped_text(df):
    fig = report.dram_traffic(df)
    fig.suptitle("x" * 400)
    assert outside(fig)
    fig = report.layer_speedup(df)  # a legend wider than the figure: clipped on both sides
    fig.legends[0].remove()
    lines = [fig.axes[0].plot([], [], label=f"a long legend entry number {k}")[0] for k in range(12)]
    fig.legend(handles=lines, loc="outside lower center", ncols=12)
    assert any(problem.startswith("'legend'") for problem in outside(fig))


# ---------------------------------------------------------------------------- defects

def test_an_outlier_is_cut_with_its_value_written(df):
    outlier = variants(df)["91x outlier"]
    fig = report.layer_speedup(outlier)
    top = fig.axes[0].get_ylim()[1]
    assert top < 20  # the other bars are not flattened
    heights = [p.get_height() for ax in fig.axes for c in ax.containers if isinstance(c, BarContainer)
               for p in c.patches]
    assert max(heights) == 91.0  # the bar keeps its value, the axis cuts it
    assert "91x" in [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "axis cut" in fig.axes[-1].get_title(loc="left")
    assert "axis cut" not in fig.axes[0].get_title(loc="left")  # only where bars are cut
    plain = report.layer_speedup(df)  # nothing cut without outliers
    assert plain.axes[0].get_ylim()[1] == pytest.approx(1.08 * max(3, df["speedup"].max(),
                                                                   df["compute_speedup"].max()))
    assert not [ax for ax in plain.axes if "axis cut" in ax.get_title(loc="left")]


@pytest.mark.parametrize("plot", [report.layer_speedup, report.speedup_vs_sparsity])
def test_legends_are_outside_the_axes(df, plot):
    fig = plot(df)
    assert fig.legends and not [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(r)
    for ax in fig.axes:
        assert not legend.overlaps(ax.get_window_extent(r))


def test_cap_is_labelled_with_what_it_bounds(df):
    for frame, expected in ((df, "(bounds compute only)"),
                            (df.assign(backend="tclp-16"), "(value skipping alone; bit-serial also skips bits)")):
        for plot in (report.layer_speedup, report.speedup_vs_sparsity):
            labels = [line.get_label() for ax in plot(frame).axes for line in ax.get_lines()]
            assert f"front-end cap h+1 = 3x {expected}" in labels


def test_ideal_means_one_thing(df):
    """'ideal' is the array's bound (ideal_cycles) in the tables; the plot's 1/(1-s) curve
    is the work bound."""
    for frame in (df, df[df["sparsity"] == 0.9]):
        labels = [t for ax in report.speedup_vs_sparsity(frame).axes
                  for t in ax.get_legend_handles_labels()[1]]
        assert any(t.startswith("work bound 1/(1-s)") for t in labels)
        assert not any("ideal" in t for t in labels)


def test_configuration_is_named_once_per_title(df):
    merged = pd.concat([df, df.assign(frontend="T<4,5>")])
    for stem, fig in report.figures(merged):
        title = fig.get_suptitle().replace("\n", " ")
        assert title.count("front-end") == 1, (stem, title)
    for stem, fig in report.figures(pd.concat([df.assign(**{"architecture.tiles": t}) for t in (2, 16)])):
        title = fig.get_suptitle().replace("\n", " ")
        assert title.count("front-end") == 1 and "architecture.tiles=" in title, (stem, title)


def test_one_sparsity_draws_bars_per_phase(df):
    one = df[df["sparsity"] == 0.9]
    fig = report.speedup_vs_sparsity(one)
    ax, = fig.axes
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    assert list(bars) == ["speedup (memory included)", "compute speedup (array only)"]
    summary = simulator.results.summarize(one).set_index("phase")
    np.testing.assert_allclose([p.get_height() for p in bars["speedup (memory included)"].patches],
                               summary.loc[["forward", "backward", "iteration"], "speedup"])
    assert [t.get_text().split()[0] for t in ax.get_xticklabels()] == ["forward", "backward", "iteration"]
