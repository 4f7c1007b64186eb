"""Where the energy goes: the `energy` plot of `accelsim report` (file `<network>-energy`).

Whole-network energy per pass (and the whole iteration, when all three passes ran) and
sparsity in mJ (10^9 pJ), stacked by event class (MACs,
on-chip buffers, DRAM; `energy_events.py`), for the simulated array (solid) and the dense
baseline beside it (hatched: the bit-parallel array of the same peak, dense values, dense
training's traffic); the efficiency dense / ours is written over each pair. Drawn only
from results that carry energy columns (accelsim 0.x runs since issue 15).
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .results import PASSES

SPLIT = (("mac", "MACs", "tab:blue"), ("sram", "on-chip buffers", "tab:orange"), ("dram", "DRAM", "tab:green"))
COLUMNS = [f"{prefix}energy_{kind}_pj" for prefix in ("", "dense_") for kind, _, _ in SPLIT]


def grouped_positions(groups: list, members: list, gap: float) -> tuple[np.ndarray, list, list]:
    """x positions of bars in `groups` of `members` each, `gap` bar widths apart: (the
    positions, the (group, member) of each, each group's centre)."""
    xs, keys, centers = [], [], []
    for i, g in enumerate(groups):
        start = i * (len(members) + gap)
        xs += [start + j for j in range(len(members))]
        keys += [(g, m) for m in members]
        centers.append(start + (len(members) - 1) / 2)
    return np.array(xs, dtype=float), keys, centers


def label_groups(ax, xs, ticks: list, centers: list, groups: list, xlabel: str) -> None:
    """Tick each bar with `ticks`, name each group on a second axis below them, and put
    `xlabel` under the group names (the axis label reads last, under everything it names)."""
    ax.set_xticks(xs, ticks, fontsize=8)
    sec = ax.secondary_xaxis("bottom")
    sec.set_xticks(centers, groups)
    sec.tick_params(length=0, pad=16)
    sec.spines["bottom"].set_visible(False)
    sec.set_xlabel(xlabel)


def has_energy(df: pd.DataFrame) -> bool:
    """Whether `df` holds the energy columns (and a value in each)."""
    return all(c in df.columns for c in COLUMNS) and bool(df[COLUMNS].notna().all().all())


def energy_split(df: pd.DataFrame, figure, title: str = "", config: str = "") -> Figure:
    """Stacked energy per (pass, sparsity), ours and the dense baseline's; `figure(w, h)`
    makes the (constrained-layout) figure. Each (event class, array) forms one labelled
    `BarContainer`, bars ordered pass-major then by sparsity. `config` names the
    configuration in the title (a merged sweep's label, or the front-end)."""
    network = str(df["network"].iloc[0])
    sparsities = sorted(df["sparsity"].unique())
    passes = [p for p in PASSES if p in set(df["pass"])]
    sums = df.groupby(["pass", "sparsity"])[COLUMNS].sum() / 1e9
    if len(passes) == len(PASSES):  # and the whole iteration
        whole = df.groupby("sparsity")[COLUMNS].sum() / 1e9
        whole.index = pd.MultiIndex.from_product([["iteration"], whole.index], names=["pass", "sparsity"])
        sums = pd.concat([sums, whole])
        passes = passes + ["iteration"]
    fig = figure(max(6.5, 2.2 + 1.1 * len(passes) * len(sparsities)), 4.8)
    ax = fig.subplots()
    width = 0.4
    xs, keys, centers = grouped_positions(passes, sparsities, 0.7)
    totals = {}
    for prefix, shift, hatch, who in (("", -width / 2, None, "ours"), ("dense_", width / 2, "//", "dense")):
        bottom = np.zeros(len(keys))
        for kind, name, color in SPLIT:
            values = np.array([sums.loc[k, f"{prefix}energy_{kind}_pj"] for k in keys])
            ax.bar(xs + shift, values, width, bottom=bottom, color=color, hatch=hatch,
                   edgecolor="white" if hatch else None, alpha=0.55 if hatch else 1.0,
                   label=f"{name} ({who})")
            bottom += values
        totals[who] = bottom
    for x, ours, dense in zip(xs, totals["ours"], totals["dense"]):
        if ours > 0:
            ax.annotate(f"{dense / ours:.2f}x", (x, max(ours, dense)), textcoords="offset points",
                        xytext=(0, 4), ha="center", fontsize=7)
    label_groups(ax, xs, [f"{s:.0%}" for _, s in keys], centers, passes,
                 "Top-K sparsity, per pass (left bar: simulated array, right: dense baseline)")
    ax.set_ylabel("energy (mJ)")
    ax.set_ylim(0, float(max(totals["ours"].max(initial=0), totals["dense"].max(initial=0), 1e-9)) * 1.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    title = title or (f"{network}{', ' + config if config else ''}: where the energy goes "
                      "(dense baseline / ours above each pair)")
    chars = max(20, int((fig.get_figwidth() - 0.3) * 72 / (0.62 * 11)))  # DejaVu Sans: <= 0.62 em
    fig.suptitle(textwrap.fill(title, chars, break_long_words=True), fontsize=11)
    return fig
