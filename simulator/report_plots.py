"""The plots of `simulator.report`: pure functions from a DataFrame of one network's rows
(or a sweep's summary) to a `matplotlib.figure.Figure` on the Agg canvas (no pyplot, no
global state). What each one draws is described in `simulator.report`'s docstring.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .energy_plot import grouped_positions, label_groups
from .report_data import PASSES, PHASES, frontend_cap
from .results import summarize

CLASSES = (("weight_bytes", "weights"), ("activation_bytes", "activations"),
           ("saved_activation_bytes", "saved activations"), ("gradient_bytes", "gradients"))
PASS_COLORS = {"forward": "tab:blue", "input_grad": "tab:orange", "weight_grad": "tab:green"}
CLASS_COLORS = ("tab:blue", "tab:orange", "tab:purple", "tab:green")


# ---------------------------------------------------------------------------- helpers

def _pct(s: float) -> str:
    return f"{s * 100:.4g}%"


def _one_network(df: pd.DataFrame) -> str:
    nets = list(dict.fromkeys(df["network"]))
    if len(nets) != 1:
        raise ValueError(f"expected the rows of one network, got {len(nets)}: {', '.join(map(str, nets))}")
    return str(nets[0])


def _cap(df: pd.DataFrame) -> int:
    return max(frontend_cap(f) for f in dict.fromkeys(df["frontend"]))


def _frontends(df: pd.DataFrame) -> str:
    return "/".join(dict.fromkeys(df["frontend"].astype(str)))


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _label_height(labels: list[str]) -> float:
    """Inches that vertical tick labels of these strings need (about 7 pt type)."""
    return 0.3 + 0.07 * max((len(t) for t in labels), default=0)


def _wrap(text: str, inches: float, points: float) -> str:
    """`text` broken into lines that fit `inches` at `points` type (a character is at most
    about 0.62 em wide in DejaVu Sans), so that no title runs off the figure."""
    return textwrap.fill(text, max(20, int(inches * 72 / (0.62 * points))), break_long_words=True)


def _title(fig: Figure, df: pd.DataFrame, what: str, title: str, config: str, size: float = 11) -> None:
    """The figure's suptitle: `title`, else '<network>, <config>: <what>' where `config` is
    the configuration's label (a merged sweep's) or else the front-end, named once;
    wrapped to the figure's width."""
    if not title:
        title = f"{_one_network(df)}, {config or 'front-end ' + _frontends(df)}: {what}"
    fig.suptitle(_wrap(title, fig.get_figwidth() - 0.3, size), fontsize=size)


def _bit_serial(df: pd.DataFrame) -> bool:
    """Whether the rows come from a bit-serial array (TCLp/TCLe), which also skips bits: its
    compute-only speedup may pass the front-end's cap."""
    return "backend" in df and bool(df["backend"].astype(str).str.startswith("tcl").any())


def cap_label(df: pd.DataFrame, cap: int) -> str:
    """The legend entry of the front-end cap line: what it bounds and what it does not."""
    if _bit_serial(df):
        return f"front-end cap h+1 = {cap}x (value skipping alone; bit-serial also skips bits)"
    return f"front-end cap h+1 = {cap}x (bounds compute only)"


def _legend(fig: Figure, ax, ncols: int) -> None:
    """The legend of `ax`'s artists under the panels, outside every axes: it covers no data.
    (Above them it would overlap the suptitle: constrained layout does not stack the two.)"""
    handles, labels = ax.get_legend_handles_labels()
    entry = 0.5 + max((len(label) for label in labels), default=0) * 0.62 * 8 / 72  # inches at 8 pt
    ncols = max(1, min(ncols, int((fig.get_figwidth() - 0.2) // entry)))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False)


def layer_order(df: pd.DataFrame) -> list[str]:
    """Layers in network order: the order in which they first appear."""
    return list(dict.fromkeys(df["layer"].astype(str)))


def axis_top(values, cap: float) -> tuple[float, bool]:
    """The top of a speedup axis and whether it cuts outliers: 8% above the largest value,
    unless that is more than three times the 95th percentile (and the cap): then 12% above
    the largest value short of that, and bars above it are cut at the top with their value
    written (one fc speedup of 91x would otherwise flatten every other bar)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    top = max(float(cap), float(v.max(initial=1.0)))
    usual = max(float(cap), float(np.percentile(v, 95)) if v.size else 1.0)
    if top > 3 * usual:
        return 1.12 * max(float(cap), float(v[v <= 3 * usual].max(initial=1.0))), True
    return top * 1.08, False


# ---------------------------------------------------------------------------- plots

def layer_speedup(df: pd.DataFrame, title: str = "", config: str = "") -> Figure:
    """Per-layer speedup over the dense array (memory included) per pass: grouped bars,
    one panel per sparsity, layers in network order, with the front-end cap h+1 (drawn
    over the bars: it bounds the compute-only ticks). Each pass's bars form one
    `BarContainer` labelled with the pass; bars above an outlier-cut axis (`axis_top`)
    keep their height and have it written at the top. `config` names the configuration
    in the title (default: the front-end)."""
    _one_network(df)
    layers = layer_order(df)
    sparsities = sorted(df["sparsity"].unique())
    passes = [p for p in PASSES if p in set(df["pass"])]
    cap = _cap(df)
    n = len(layers)
    fig_width = max(8.0, 1.6 + 0.12 * n * len(passes))
    fig = _figure(fig_width, 1.1 + 2.4 * len(sparsities) + _label_height(layers))
    axes = fig.subplots(len(sparsities), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    x = np.arange(n)
    width = 0.8 / len(passes)
    top, cut_axis = axis_top(df[["speedup", "compute_speedup"]].to_numpy(dtype=float).ravel(), cap)
    for ax, s in zip(axes, sparsities):
        rows = df[df["sparsity"] == s].set_index(["layer", "pass"])[["speedup", "compute_speedup"]]
        cut_here = False
        for i, p in enumerate(passes):
            values = np.array([[*rows.loc[(layer, p)]] if (layer, p) in rows.index else [np.nan] * 2
                               for layer in layers], dtype=float).reshape(-1, 2)
            ok = np.isfinite(values[:, 0])
            at = x[ok] + (i - (len(passes) - 1) / 2) * width
            ax.bar(at, values[ok, 0], width, color=PASS_COLORS[p], label=p)
            ax.plot(at, values[ok, 1], linestyle="none", marker="_", color="black",
                    markersize=(fig_width - 1.6) * 72 / max(n, 1) * width, markeredgewidth=1.2,
                    label="compute only (array)" if i == 0 else None, zorder=4)
            for xi, v in zip(at, values[ok]):
                if cut_axis and np.nanmax(v) > top:
                    cut_here = True
                    ax.annotate(f"{np.nanmax(v):.3g}x", (xi, top), xytext=(0, -3),
                                textcoords="offset points", ha="center", va="top", rotation=90,
                                fontsize=7, zorder=5,
                                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none"})
        ax.axhline(cap, color="tab:red", linestyle="--", linewidth=1, zorder=3, label=cap_label(df, cap))
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_ylabel("speedup (x)")
        ax.set_title(f"{_pct(s)} sparsity" + (f" (axis cut at {top:.3g}x: taller bars' values written)"
                                              if cut_here else ""), fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlim(-0.6, n - 0.4)
    axes[0].set_ylim(0, top)
    _legend(fig, axes[0], len(passes) + 2)
    axes[-1].set_xticks(x, layers, rotation=90, fontsize=7 if n > 30 else 8)
    axes[-1].set_xlabel("layer (network order)")
    _title(fig, df, "per-layer speedup over the dense array (memory included)", title, config)
    return fig


WORK_BOUND = "work bound 1/(1-s)"  # not "ideal": the tables' ideal is the array's bound


def speedup_vs_sparsity(df: pd.DataFrame, title: str = "", config: str = "") -> Figure:
    """Network speedup (ratio of summed cycles) against sparsity for forward, backward
    and iteration (those whose passes were simulated): `speedup` (memory included) and
    `compute_speedup` from `summarize`, the work bound 1/(1-s) (work proportional to
    density) and the front-end cap h+1. Lines are labelled 'speedup (memory included)',
    'compute speedup (array only)', 'work bound 1/(1-s)' and 'front-end cap h+1 ...'.
    With one sparsity there is no curve to draw: `speedup_bars` instead."""
    _one_network(df)
    summary = summarize(df)
    if summary["sparsity"].nunique() == 1:
        return speedup_bars(df, summary, title, config)
    phases = [p for p in PHASES if p in set(summary["phase"])] or list(dict.fromkeys(summary["phase"]))
    cap = _cap(df)
    fig = _figure(4.2 * len(phases) + 0.6, 4.8)
    axes = fig.subplots(1, len(phases), sharey=True, squeeze=False)[0]
    s_max = float(summary["sparsity"].max())
    curve_s = np.linspace(0.0, s_max, 200)
    bound = 1.0 / (1.0 - curve_s)
    shown = summary[["speedup", "compute_speedup"]].to_numpy(dtype=float)
    top = max(cap, float(bound[-1]), float(np.max(shown[np.isfinite(shown)], initial=0.0)))
    for ax, phase in zip(axes, phases):
        part = summary[summary["phase"] == phase].sort_values("sparsity")
        ax.plot(curve_s * 100, bound, color="grey", linestyle=":", label=WORK_BOUND)
        ax.axhline(cap, color="tab:red", linestyle="--", linewidth=1, label=cap_label(df, cap))
        ax.plot(part["sparsity"] * 100, part["speedup"], marker="o", color="tab:blue",
                label="speedup (memory included)")
        ax.plot(part["sparsity"] * 100, part["compute_speedup"], marker="s", linestyle="--",
                color="tab:orange", label="compute speedup (array only)")
        for s, v, c in zip(part["sparsity"], part["speedup"], part["compute_speedup"]):
            if not np.isfinite(v):
                continue
            below = c > v  # keep the label off the compute-speedup marker
            ax.annotate(f"{v:.2f}x", (s * 100, v), textcoords="offset points",
                        xytext=(0, -8 if below else 7), ha="center",
                        va="top" if below else "bottom", fontsize=7.5, color="tab:blue")
        ax.set_title(phase + (" (input + weight gradient)" if phase == "backward" else
                              " (all passes)" if phase == "iteration" else ""), fontsize=10)
        ax.set_xlabel("Top-K sparsity (%)")
        ax.set_xticks(sorted(set(part["sparsity"] * 100)))
        ax.set_xlim(-4, max(s_max * 100, 10) + 5)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speedup over the dense array (x)")
    axes[0].set_ylim(0, top * 1.1)
    _legend(fig, axes[0], 2)
    _title(fig, df, "network speedup vs sparsity (ratio of summed cycles)", title, config)
    return fig


def speedup_bars(df: pd.DataFrame, summary: pd.DataFrame | None = None, title: str = "",
                 config: str = "") -> Figure:
    """A run at one sparsity: network speedup per phase as bars, memory included and
    array only side by side (each labelled), with the work bound 1/(1-s) and the
    front-end cap h+1 as lines: what `speedup_vs_sparsity` would plot at that one point."""
    summary = summarize(df) if summary is None else summary
    phases = [p for p in PHASES if p in set(summary["phase"])] or list(dict.fromkeys(summary["phase"]))
    s = float(summary["sparsity"].iloc[0])
    cap = _cap(df)
    fig = _figure(max(6.5, 2.4 + 1.5 * len(phases)), 4.8)
    ax = fig.subplots()
    by_phase = summary.set_index("phase")
    x = np.arange(len(phases))
    top = float(cap)
    for shift, col, color, label in ((-0.2, "speedup", "tab:blue", "speedup (memory included)"),
                                     (0.2, "compute_speedup", "tab:orange", "compute speedup (array only)")):
        values = np.array([by_phase.loc[p, col] for p in phases], dtype=float)
        ax.bar(x + shift, values, 0.4, color=color, label=label)
        for xi, v in zip(x + shift, values):
            if np.isfinite(v):
                ax.annotate(f"{v:.2f}x", (xi, v), textcoords="offset points", xytext=(0, 3),
                            ha="center", va="bottom", fontsize=8)
                top = max(top, v)
    if s < 1:
        ax.axhline(1 / (1 - s), color="grey", linestyle=":", label=f"{WORK_BOUND} = {1 / (1 - s):.3g}x")
        top = max(top, 1 / (1 - s))
    ax.axhline(cap, color="tab:red", linestyle="--", linewidth=1, zorder=3, label=cap_label(df, cap))
    ax.set_xticks(x, [p + (" (input + weight gradient)" if p == "backward" else
                           " (all passes)" if p == "iteration" else "") for p in phases], fontsize=9)
    ax.set_xlabel(f"phase, at {_pct(s)} Top-K sparsity (the only sparsity simulated)")
    ax.set_ylabel("speedup over the dense array (x)")
    ax.set_ylim(0, top * 1.15)
    ax.grid(axis="y", alpha=0.3)
    _legend(fig, ax, 2)
    _title(fig, df, f"network speedup at {_pct(s)} sparsity (ratio of summed cycles)", title, config)
    return fig


def dram_traffic(df: pd.DataFrame, title: str = "", config: str = "") -> Figure:
    """Whole-network DRAM traffic (MB) per pass and sparsity, stacked by tensor class,
    with dense training's traffic as a marker. Each class's bars form one `BarContainer`
    labelled with the class, bars ordered pass-major then by sparsity."""
    _one_network(df)
    sparsities = sorted(df["sparsity"].unique())
    passes = [p for p in PASSES if p in set(df["pass"])]
    sums = df.groupby(["pass", "sparsity"])[[c for c, _ in CLASSES] + ["dense_dram_bytes"]].sum()
    fig = _figure(max(6.5, 1.8 + 0.75 * len(passes) * len(sparsities)), 4.8)
    ax = fig.subplots()
    xs, keys, centers = grouped_positions(passes, sparsities, 0.6)
    bottom = np.zeros(len(keys))
    for (col, name), color in zip(CLASSES, CLASS_COLORS):
        values = np.array([sums.loc[k, col] if k in sums.index else 0.0 for k in keys]) / 1e6
        ax.bar(xs, values, 0.75, bottom=bottom, color=color, label=name)
        bottom += values
    dense = np.array([sums.loc[k, "dense_dram_bytes"] if k in sums.index else np.nan for k in keys]) / 1e6
    ax.plot(xs, dense, linestyle="none", marker="_", markersize=22, markeredgewidth=2.5,
            color="black", label="dense training")
    for x, ours, d in zip(xs, bottom, dense):
        if ours > 0 and np.isfinite(d):
            ax.annotate(f"{d / ours:.2f}x", (x, max(ours, d)), textcoords="offset points",
                        xytext=(0, 4), ha="center", fontsize=7)
    label_groups(ax, xs, [_pct(s) for _, s in keys], centers, passes, "Top-K sparsity, per pass")
    ax.set_ylabel("DRAM traffic, reads + writes (MB)")
    ax.set_ylim(0, float(np.nanmax(np.r_[bottom, dense], initial=1e-6)) * 1.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _title(fig, df, "DRAM traffic per tensor class (dense training / ours above each bar)",
           title, config)
    return fig


MAP_LAYERS = 24  # layers per heat-map panel: a panel stays ~13 in wide, readable inline in a notebook
MAX_LABELLED_CELLS = 1500  # beyond this, cells are not labelled and the map is one panel


def utilization_map(df: pd.DataFrame, title: str = "", config: str = "") -> Figure:
    """Heat map of utilization (percent of peak MACs doing effectual work) per layer
    (columns, network order) and (sparsity, pass) (rows); each image's data is
    utilization x 100, NaN (grey) where a layer has no such pass. Cells are 0.45 x 0.34
    inches with 8-pt labels; the layers are wrapped into panels of at most MAP_LAYERS,
    one under the other, so that the figure is never wider than ~13 in and its labels
    stay readable when a notebook scales it to its width."""
    _one_network(df)
    layers = layer_order(df)
    sparsities = sorted(df["sparsity"].unique())
    passes = [p for p in PASSES if p in set(df["pass"])]
    util = df.set_index(["sparsity", "pass", "layer"])["utilization"]
    rows = [(s, p) for s in sparsities for p in passes]
    data = np.array([[util.get((s, p, layer), np.nan) for layer in layers] for s, p in rows],
                    dtype=float) * 100
    n = len(layers)
    labelled = data.size <= MAX_LABELLED_CELLS
    panels = -(-n // MAP_LAYERS) if labelled else 1
    per = -(-n // panels)  # balanced: 70 layers -> 24, 24, 22
    chunks = [np.arange(n)[k:k + per] for k in range(0, n, per)]
    height = 0.55 + 0.34 * len(rows) + _label_height([layers[i] for i in chunks[0]])
    fig = _figure(max(7.0, 2.8 + 0.45 * per), 1.0 + height * len(chunks))
    axes = fig.subplots(len(chunks), 1, squeeze=False)[:, 0]
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    vmax = float(min(100.0, max(10.0, np.ceil(np.nanmax(data, initial=0.0) / 10) * 10)))
    for ax, cols in zip(axes, chunks):
        part = data[:, cols]
        im = ax.imshow(np.ma.masked_invalid(part), aspect="auto", cmap=cmap, vmin=0, vmax=vmax,
                       interpolation="nearest")
        if labelled:
            for (r, c), v in np.ndenumerate(part):
                if np.isfinite(v):
                    ax.text(c, r, f"{v:.1f}" if v < 9.95 else f"{v:.0f}", ha="center", va="center",
                            fontsize=8, color="black" if v > 0.6 * vmax else "white")
        for k in range(1, len(sparsities)):
            ax.axhline(k * len(passes) - 0.5, color="white", linewidth=2)
        ax.set_xlim(-0.5, per - 0.5)  # every panel's cells the same width
        ax.set_xticks(np.arange(len(cols)), [layers[i] for i in cols], rotation=90,
                      fontsize=8 if labelled else 7)
        ax.set_yticks(np.arange(len(rows)), [f"{_pct(s)} {p}" for s, p in rows], fontsize=8)
        ax.set_ylabel("sparsity, pass")
    axes[-1].set_xlabel("layer (network order" + (", continued panel by panel)" if len(chunks) > 1 else ")"))
    label = _wrap(f"utilization (%, scale 0-{vmax:.0f})", fig.get_figheight() - 0.6, 10)
    fig.colorbar(im, ax=axes, label=label, fraction=0.04 / len(chunks) ** 0.5, pad=0.01)
    _title(fig, df, "utilization = effectual MACs / (cycles x peak MACs per cycle), %", title, config)
    return fig


# ---------------------------------------------------------------------------- sweeps

SWEEP_VALUES = {"compute_speedup": "compute-only speedup (the array alone)",
                "speedup": "speedup with memory"}


def sweep_axes(summary: pd.DataFrame, keys) -> tuple[str, str] | None:
    """The two swept keys a sweep map spreads over (x, y): the first two numeric keys with
    more than one value, sparsity and network aside (they get a panel each); None if the
    sweep has fewer than two."""
    grid = [k for k in keys if k not in ("workload.sparsity", "workload.network")
            and k in summary and summary[k].nunique() > 1
            and pd.api.types.is_numeric_dtype(summary[k])]
    return (grid[0], grid[1]) if len(grid) >= 2 else None


def sweep_map(summary: pd.DataFrame, x: str, y: str, value: str = "compute_speedup",
              keys=()) -> Figure:
    """Heat map of a sweep's `summary.csv`: `value` (x, a ratio of summed cycles) of the
    forward, backward and iteration phases (panel columns) per network, sparsity and any
    other swept value (panel rows), over the grid of swept keys `x` (cell columns) and `y`
    (cell rows); each cell labelled, grey where the point was skipped. `keys`: all the
    swept keys (columns of `summary`)."""
    phases = [p for p in PHASES if p in set(summary["phase"])]
    others = [k for k in keys if k not in (x, y, "workload.sparsity", "workload.network")]
    panel_keys = ["network", "sparsity", *others]
    panels = list(summary.groupby(panel_keys, sort=False, dropna=False))
    xs, ys = sorted(summary[x].unique()), sorted(summary[y].unique())
    vmax = float(np.ceil(summary.loc[summary["phase"].isin(phases), value].max()))
    width = max(6.0, 1.6 + len(phases) * (1.0 + 0.6 * len(xs)))
    fig = _figure(width, 1.6 + len(panels) * (0.75 + 0.42 * len(ys)))
    axes = np.atleast_2d(fig.subplots(len(panels), len(phases), squeeze=False))
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    for r, (panel, rows) in enumerate(panels):
        panel = panel if isinstance(panel, tuple) else (panel,)
        for c, phase in enumerate(phases):
            ax = axes[r, c]
            cells = rows[rows["phase"] == phase].pivot_table(index=y, columns=x, values=value)
            data = cells.reindex(index=ys, columns=xs).to_numpy(dtype=float)
            im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=1.0, vmax=max(vmax, 1.01),
                           origin="lower", aspect="auto", interpolation="nearest")
            for (i, j), v in np.ndenumerate(data):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                            color="black" if v > 1 + 0.6 * (vmax - 1) else "white")
            ax.set_xticks(np.arange(len(xs)), [f"{v:g}" for v in xs], fontsize=8)
            ax.set_yticks(np.arange(len(ys)), [f"{v:g}" for v in ys], fontsize=8)
            ax.set_xlabel(x.rsplit(".", 1)[-1], fontsize=9)
            if c == 0:
                ax.set_ylabel(y.rsplit(".", 1)[-1], fontsize=9)
            extra = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(others, panel[2:]))
            panel_width = fig.get_figwidth() / len(phases) - 0.3
            ax.set_title(_wrap(f"{phase}: {panel[0]} at {_pct(panel[1])}" + (f", {extra}" if extra else ""),
                               panel_width, 9), fontsize=9)
    what = SWEEP_VALUES.get(value, value)
    fig.colorbar(im, ax=axes, location="bottom", fraction=0.05, pad=0.02, aspect=40,
                 label=_wrap(f"{what} over the dense array (x)", fig.get_figwidth() - 0.6, 10))
    fig.suptitle(_wrap(f"sweep: {what} over the dense array, {x.rsplit('.', 1)[-1]} x "
                       f"{y.rsplit('.', 1)[-1]} ({x} x {y}; ratio of summed cycles)",
                       fig.get_figwidth() - 0.3, 11), fontsize=11)
    return fig
