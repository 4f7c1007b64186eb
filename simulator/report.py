"""Plots of a `results.csv`: what `accelsim report RESULTS_DIR` and `accelsim run --plots` draw.

Every plot is drawn per network (and per configuration, when a merged sweep CSV holds
several front-ends or swept keys) from the rows `accelsim run` writes, one row per
(network, sparsity, layer, pass); layers are in network order, the order in which they
first appear in the CSV. Whole-network figures are ratios of summed cycles or bytes
(`simulator.results.summarize`), never averages of per-layer ratios.

- `layer_speedup` (file `<network>-layer-speedup`): per-layer speedup over the dense
  array, memory included (`speedup` = dense_cycles / cycles, unit x), grouped bars, one
  bar per training pass, one panel per sparsity. A black tick on each bar is the array's
  compute-only speedup (`compute_speedup`). A dashed line marks the front-end's cap h+1
  (what skipping alone can reach on any layer; the memory-included speedup can pass it
  when dense training's traffic stalls the dense array), a grey line 1x. A layer
  without a pass (the first conv's input gradient) has no bar.
- `speedup_vs_sparsity` (`<network>-speedup-vs-sparsity`): network speedup against
  Top-K sparsity for forward, backward (input + weight gradient) and the whole
  iteration: `speedup` (memory included) and `compute_speedup` (the array alone), both
  ratios of summed cycles, with the ideal 1/(1-s) (work scales with density) and the
  front-end cap h+1. Unit x; sparsity in percent.
- `dram_traffic` (`<network>-dram-traffic`): DRAM traffic of the whole network per pass
  and sparsity in MB (10^6 bytes), stacked by tensor class (weights, activations, saved
  activations, gradients; reads plus writes, metadata included), with dense training's
  traffic (`dense_dram_bytes`) as a black marker and its ratio to ours over each bar.
- `utilization_map` (`<network>-utilization`): heat map of the array's utilization,
  effectual MACs / (cycles x peak MACs per cycle) in percent, per layer (columns) and
  (sparsity, pass) (rows), each cell labelled; the colour scale runs from 0 to the
  largest value rounded up to 10%; grey where a layer has no such pass.
- `energy_split` (`<network>-energy`, energy_plot.py; results with energy columns only):
  energy per pass and sparsity stacked by MACs, on-chip buffers and DRAM, ours beside the
  dense baseline's, with the efficiency over each pair.

The plotting functions are pure: they take a DataFrame of one network's rows and return
a `matplotlib.figure.Figure` on the Agg canvas (no pyplot, no global state).
`write_report(results_dir)` reads and checks `results_dir/results.csv` and writes each
figure as PNG and SVG next to it, each atomically (temporary file, then rename), under a
safe file name (`file_stem`: a network named `../x` or `/abs` writes nothing outside it).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .config import ConfigError
from .energy_plot import energy_split, grouped_positions, has_energy, label_groups
from .results import COLUMNS, check_digest, check_rows, numbers, summarize
from .outputs import OutputError, write_atomic
from .safe_yaml import cut

PASSES = ("forward", "input_grad", "weight_grad")
PHASES = ("forward", "backward", "iteration")
CLASSES = (("weight_bytes", "weights"), ("activation_bytes", "activations"),
           ("saved_activation_bytes", "saved activations"), ("gradient_bytes", "gradients"))
PASS_COLORS = {"forward": "tab:blue", "input_grad": "tab:orange", "weight_grad": "tab:green"}
CLASS_COLORS = ("tab:blue", "tab:orange", "tab:purple", "tab:green")
NUMERIC = ["sparsity", "cycles", "compute_cycles", "stall_cycles", "dense_cycles",
           "dense_compute_cycles", "ideal_cycles", "speedup", "compute_speedup", "utilization",
           "dram_read_bytes", "dram_write_bytes", "weight_bytes", "activation_bytes",
           "saved_activation_bytes", "gradient_bytes", "dense_dram_bytes",
           "activation_memory_bytes", "dense_activation_memory_bytes"]
REQUIRED = ["network", "layer", "pass", "frontend", *NUMERIC]
FRONTEND = re.compile(r"^\s*([A-Za-z]+)\s*<\s*(\d{1,4})\s*,\s*(\d{1,4})\s*>(\s*\S.*)?$")  # T<2,5> [detail]


# ---------------------------------------------------------------------------- input

MAX_RESULTS_BYTES = 1 << 30  # a results.csv larger than this is not ours (a 10^4-point sweep: ~100 MB)
MAX_LAYERS = 1_000  # per network; real networks have at most a few hundred
MAX_SPARSITIES = 50  # per network: one plot panel (or heat-map row) each
MAX_ROWS = 6_000  # per configuration (layer passes x sparsities): a minute of drawing
MAX_NAME = 200  # characters of a network, layer or front-end name (tick labels, titles)


def _q(path) -> str:
    """A path as messages quote it: on one line, at most 200 characters."""
    return cut(str(path), 200)


def _read_exactly(path: Path, what: str) -> bytes:
    """The bytes of the regular file at `path` (a symlink is followed), reading exactly its
    size and never to EOF: a file that says it is empty is empty (/proc/kmsg says so, and a
    read would block forever). ConfigError (one line) for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"{_q(path)}: expected {what}, but it does not exist") from None
    except (OSError, ValueError) as e:  # ENAMETOOLONG, EACCES, ELOOP, a NUL in the path
        raise ConfigError(f"{_q(path)}: expected {what}, but it cannot be read "
                          f"({getattr(e, 'strerror', None) or e})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{_q(path)}: expected {what}, but it is a directory")
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block the reader forever
            raise ConfigError(f"{_q(path)}: expected {what}, but it is not a regular file")
        if st.st_size > MAX_RESULTS_BYTES:
            raise ConfigError(f"{_q(path)}: expected {what} of at most {MAX_RESULTS_BYTES >> 30} "
                              f"GiB, got {st.st_size / (1 << 30):,.1f} GiB")
        if st.st_size == 0:
            raise ConfigError(f"{_q(path)}: expected {what}, but the file is empty")
        chunks, left = [], st.st_size
        while left:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                raise ConfigError(f"{_q(path)}: expected {what}, but it shrank while being read")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError as e:  # EAGAIN from a special file that claims to be regular, EIO
        raise ConfigError(f"{_q(path)}: expected {what}, but it cannot be read "
                          f"({e.strerror or e})") from None
    finally:
        os.close(fd)


def _name(values) -> str:
    text = " ".join(str(values).split())
    return repr(text if len(text) <= 60 else text[:57] + "...")


def load_results(path: str | Path) -> pd.DataFrame:
    """Read and check a results.csv; raises `ConfigError` (one line naming the file and
    what was expected) if it is missing, not a CSV, lacks the columns the plots use, holds
    a value `accelsim run` cannot write (see `simulator.results.check_rows`), or more than
    MAX_LAYERS layers or MAX_SPARSITIES sparsities per network or MAX_ROWS rows per
    configuration (plots that would take minutes to draw)."""
    path = Path(path)
    what = "the results.csv that `accelsim run` writes"
    data = _read_exactly(path, what)
    try:
        check_digest(path, data)
    except ValueError as e:
        raise ConfigError(f"{_q(path)}: {e}") from None
    try:
        df = pd.read_csv(io.BytesIO(data))
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{_q(path)}: expected {what}, but the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OverflowError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{_q(path)}: expected {what}, but it is not a readable CSV "
                          f"({cut(first, 200)})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ConfigError(f"{_q(path)}: expected the columns of `accelsim run`'s results.csv; missing "
                          f"{', '.join(missing)}")
    if df.empty:
        raise ConfigError(f"{_q(path)}: expected at least one result row, got none")
    for col in ("network", "sparsity", "layer", "pass", "frontend"):
        if df[col].isna().any():
            i = int(np.flatnonzero(df[col].isna().to_numpy())[0])
            raise ConfigError(f"{_q(path)}: column {col}: expected a value in every row, "
                              f"data row {i + 1} has none")
        if col != "sparsity":
            df[col] = df[col].astype(str)
            long = df[col].str.len() > MAX_NAME
            if long.any():
                i = int(np.flatnonzero(long.to_numpy())[0])
                raise ConfigError(f"{_q(path)}: column {col}: expected at most {MAX_NAME} "
                                  f"characters, got {len(df[col].iloc[i]):,} (data row {i + 1})")
            control = df[col].str.contains(r"[\x00-\x1f\x7f]", regex=True)
            if control.any():
                i = int(np.flatnonzero(control.to_numpy())[0])
                raise ConfigError(f"{_q(path)}: column {col}: expected a name without control "
                                  f"characters, got {df[col].iloc[i]!r} (data row {i + 1})")
    try:
        check_rows(df)
    except ValueError as e:
        raise ConfigError(f"{_q(path)}: {e}") from None
    for col in NUMERIC:  # checked: finite numbers
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            df[col] = numbers(df[col])[0]
    unknown = sorted(set(df["pass"]) - set(PASSES))
    if unknown:
        raise ConfigError(f"{_q(path)}: column pass: expected {', '.join(PASSES)}, got {_name(unknown[0])}")
    for fe in dict.fromkeys(df["frontend"]):
        try:
            frontend_cap(fe)
        except ValueError as e:
            raise ConfigError(f"{_q(path)}: column frontend: {cut(str(e), 300)}") from None
    for col, limit, unit in (("layer", MAX_LAYERS, "layers"), ("sparsity", MAX_SPARSITIES, "sparsities")):
        counts = df.groupby("network", sort=False)[col].nunique()
        if counts.max() > limit:
            network = counts.idxmax()
            raise ConfigError(f"{_q(path)}: expected at most {limit:,} {unit} per network, got "
                              f"{counts.max():,} for {_name(network)}")
    try:
        _check_configurations(df)
    except ValueError as e:
        raise ConfigError(f"{_q(path)}: {e}") from None
    if not data.endswith(b"\n"):  # to_csv ends every row with a newline
        raise ConfigError(f"{_q(path)}: expected complete rows, but the last row ends without a "
                          "newline (a truncated file? run `accelsim run` again)")
    return df


def _check_configurations(df: pd.DataFrame) -> None:
    """ValueError unless each configuration (`configurations`) has one row per (sparsity,
    layer, pass), at most MAX_ROWS rows, and the same (layer, pass) rows at every sparsity,
    as `accelsim run` writes them: a file cut at a row boundary fails this. Vectorized: a
    file of thousands of configurations is checked in well under a second."""
    keys = _config_keys(df)
    by = ["network", *keys]
    dup = df.duplicated([*by, "sparsity", "layer", "pass"])
    if dup.any():
        r = df[dup].iloc[0]
        label = _label(keys, [r[k] for k in keys])
        raise ValueError(f"expected one row per (network, sparsity, layer, pass), got "
                         f"several for ({cut(r['network'], 60)}, {r['sparsity']:g}, "
                         f"{cut(r['layer'], 60)}, {r['pass']})"
                         f"{' in ' + cut(label, 100) if label else ''}")
    cid = df.groupby(by, sort=False, dropna=False).ngroup().to_numpy()
    sizes = np.bincount(cid)
    if sizes.max() > MAX_ROWS:
        r = df.iloc[int(np.flatnonzero(cid == int(sizes.argmax()))[0])]
        label = _label(keys, [r[k] for k in keys])
        raise ValueError(f"expected at most {MAX_ROWS:,} rows (layer passes x sparsities) per "
                         f"network and configuration, got {sizes.max():,} for {_name(r['network'])}"
                         f"{' (' + cut(label, 100) + ')' if label else ''}")
    rows = pd.DataFrame({"cid": cid, "sparsity": df["sparsity"].to_numpy(),
                         "layer": df["layer"].to_numpy(), "pass": df["pass"].to_numpy()})
    pairs = np.bincount(rows.drop_duplicates(["cid", "layer", "pass"])["cid"], minlength=len(sizes))
    per_sparsity = rows.groupby(["cid", "sparsity"], sort=False).size()
    short = per_sparsity.to_numpy() != pairs[per_sparsity.index.get_level_values("cid")]
    if short.any():  # the message names the sparsity with the most rows, as before
        bad = int(per_sparsity.index.get_level_values("cid")[np.flatnonzero(short)[0]])
        part = df[cid == bad]
        r = part.iloc[0]
        label = _label(keys, [r[k] for k in keys])
        have = {s: set(zip(g["layer"], g["pass"])) for s, g in part.groupby("sparsity", sort=False)}
        most = max(have, key=lambda s: len(have[s]))
        s = next(s for s in have if have[s] != have[most])
        raise ValueError(f"expected the same layer passes at every sparsity, but "
                         f"{cut(r['network'], 60)}{' (' + cut(label, 100) + ')' if label else ''} has "
                         f"{len(have[s])} at {s:g} and {len(have[most])} at {most:g} "
                         "(a truncated file? run `accelsim run` again)")


def frontend_cap(frontend: str) -> int:
    """The most skipping alone can speed up a layer: h+1 for `T<h,d>` / `L<h,d>`, 1 for `none`."""
    text = str(frontend).strip()
    if text == "none":
        return 1
    m = FRONTEND.match(text)
    if not m:
        raise ValueError(f"expected a front-end like 'T<2,5>', 'L<1,3>' or 'none', got {text!r}")
    return int(m.group(2)) + 1


def configurations(df: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """Split rows into (network, configuration label, rows) with one row per (sparsity,
    layer, pass) each. A plain run has one configuration per network (label ""). A merged
    sweep is split by its front-end, when that varies, and by every extra column (one not
    in `COLUMNS`, e.g. a swept key) that still varies within a (network, sparsity, front-end):
    a swept lookahead is told by the front-end, a swept tile count by its own column."""
    return [(network, _label(keys, values), part) for network, keys, values, part in _split(df)]


def _config_keys(df: pd.DataFrame) -> list[str]:
    """The columns besides `network` that tell configurations apart (see `configurations`)."""
    keys = ["frontend"] if df["frontend"].nunique() > 1 else []
    for c in (c for c in df.columns if c not in COLUMNS):
        groups = df.groupby(["network", "sparsity", *keys], sort=False, dropna=False)
        if groups[c].nunique(dropna=False).max() > 1:
            keys.append(c)
    return keys


def _count(df: pd.DataFrame) -> int:
    """How many configurations `df` holds."""
    return df.groupby(["network", *_config_keys(df)], sort=False, dropna=False).ngroups


def _split(df: pd.DataFrame):
    """(network, keys, values, rows) per configuration, networks in order of first
    appearance and each network's configurations likewise; ValueError if a configuration
    has two rows for one (sparsity, layer, pass)."""
    keys = _config_keys(df)
    dup = df.duplicated(["network", *keys, "sparsity", "layer", "pass"])
    if dup.any():
        _check_configurations(df)  # raises the message
    order = {n: i for i, n in enumerate(dict.fromkeys(df["network"]))}
    out = [(values[0], values[1:], part)
           for values, part in df.groupby(["network", *keys], sort=False, dropna=False)]
    out.sort(key=lambda t: order.get(t[0], len(order)))  # stable: within a network, as they come
    return [(str(network), keys, values, part) for network, values, part in out]


def _label(keys, values) -> str:
    return ", ".join(f"front-end {v}" if k == "frontend" else f"{k}={v}" for k, v in zip(keys, values))


def _slug(keys, values) -> str:
    """File-name part of a configuration: T<2,5> -> T2-5, architecture.tiles=8 -> as is."""
    parts = [re.sub(r"[<>]", "", str(v)).replace(",", "-") if k == "frontend" else f"{k}={v}"
             for k, v in zip(keys, values)]
    return "_".join(re.sub(r"[^A-Za-z0-9.+=-]+", "-", p).strip("-") for p in parts)


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


def layer_order(df: pd.DataFrame) -> list[str]:
    """Layers in network order: the order in which they first appear."""
    return list(dict.fromkeys(df["layer"].astype(str)))


# ---------------------------------------------------------------------------- plots

def layer_speedup(df: pd.DataFrame, title: str = "") -> Figure:
    """Per-layer speedup over the dense array (memory included) per pass: grouped bars,
    one panel per sparsity, layers in network order, with the front-end cap h+1.
    Each pass's bars form one `BarContainer` labelled with the pass."""
    network = _one_network(df)
    layers = layer_order(df)
    sparsities = sorted(df["sparsity"].unique())
    passes = [p for p in PASSES if p in set(df["pass"])]
    cap = _cap(df)
    n = len(layers)
    fig_width = max(8.0, 1.6 + 0.12 * n * len(passes))
    fig = _figure(fig_width, 0.6 + 2.4 * len(sparsities) + _label_height(layers))
    axes = fig.subplots(len(sparsities), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    x = np.arange(n)
    width = 0.8 / len(passes)
    top = max(cap, float(np.nanmax(df["speedup"].to_numpy(dtype=float), initial=1.0)))
    for ax, s in zip(axes, sparsities):
        rows = df[df["sparsity"] == s].set_index(["layer", "pass"])[["speedup", "compute_speedup"]]
        for i, p in enumerate(passes):
            values = np.array([[*rows.loc[(layer, p)]] if (layer, p) in rows.index else [np.nan] * 2
                               for layer in layers], dtype=float).reshape(-1, 2)
            ok = np.isfinite(values[:, 0])
            at = x[ok] + (i - (len(passes) - 1) / 2) * width
            ax.bar(at, values[ok, 0], width, color=PASS_COLORS[p], label=p)
            ax.plot(at, values[ok, 1], linestyle="none", marker="_", color="black",
                    markersize=(fig_width - 1.6) * 72 / max(n, 1) * width, markeredgewidth=1.2,
                    label="compute only (array)" if i == 0 else None)
        ax.axhline(cap, color="tab:red", linestyle="--", linewidth=1,
                   label=f"front-end cap h+1 = {cap}x")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_ylabel("speedup (x)")
        ax.set_title(f"{_pct(s)} sparsity", fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlim(-0.6, n - 0.4)
    axes[0].set_ylim(0, top * 1.08)
    axes[0].legend(ncols=len(passes) + 1, fontsize=8, loc="upper right")
    axes[-1].set_xticks(x, layers, rotation=90, fontsize=7 if n > 30 else 8)
    axes[-1].set_xlabel("layer (network order)")
    fig.suptitle(title or f"{network}, front-end {_frontends(df)}: per-layer speedup over the "
                 "dense array (memory included)")
    return fig


def speedup_vs_sparsity(df: pd.DataFrame, title: str = "") -> Figure:
    """Network speedup (ratio of summed cycles) against sparsity for forward, backward
    and iteration (those whose passes were simulated): `speedup` (memory included) and
    `compute_speedup` from `summarize`, the ideal 1/(1-s) and the front-end cap h+1.
    Lines are labelled 'speedup (memory included)', 'compute speedup (array only)',
    'ideal 1/(1-s)' and 'front-end cap h+1'."""
    network = _one_network(df)
    summary = summarize(df)
    phases = [p for p in PHASES if p in set(summary["phase"])] or list(dict.fromkeys(summary["phase"]))
    cap = _cap(df)
    fig = _figure(4.2 * len(phases) + 0.6, 4.2)
    axes = fig.subplots(1, len(phases), sharey=True, squeeze=False)[0]
    s_max = float(summary["sparsity"].max())
    curve_s = np.linspace(0.0, s_max, 200)
    ideal = 1.0 / (1.0 - curve_s)
    shown = summary[["speedup", "compute_speedup"]].to_numpy(dtype=float)
    top = max(cap, float(ideal[-1]), float(np.max(shown[np.isfinite(shown)], initial=0.0)))
    for ax, phase in zip(axes, phases):
        part = summary[summary["phase"] == phase].sort_values("sparsity")
        ax.plot(curve_s * 100, ideal, color="grey", linestyle=":", label="ideal 1/(1-s)")
        ax.axhline(cap, color="tab:red", linestyle="--", linewidth=1, label=f"front-end cap h+1 = {cap}x")
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
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(title or f"{network}, front-end {_frontends(df)}: network speedup vs sparsity "
                 "(ratio of summed cycles)")
    return fig


def dram_traffic(df: pd.DataFrame, title: str = "") -> Figure:
    """Whole-network DRAM traffic (MB) per pass and sparsity, stacked by tensor class,
    with dense training's traffic as a marker. Each class's bars form one `BarContainer`
    labelled with the class, bars ordered pass-major then by sparsity."""
    network = _one_network(df)
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
    fig.suptitle(title or f"{network}: DRAM traffic per tensor class (dense training / ours above "
                 "each bar)", fontsize=11)
    return fig


def utilization_map(df: pd.DataFrame, title: str = "") -> Figure:
    """Heat map of utilization (percent of peak MACs doing effectual work) per layer
    (columns, network order) and (sparsity, pass) (rows); the image's data is
    utilization x 100, NaN (grey) where a layer has no such pass."""
    network = _one_network(df)
    layers = layer_order(df)
    sparsities = sorted(df["sparsity"].unique())
    passes = [p for p in PASSES if p in set(df["pass"])]
    util = df.set_index(["sparsity", "pass", "layer"])["utilization"]
    rows = [(s, p) for s in sparsities for p in passes]
    data = np.array([[util.get((s, p, layer), np.nan) for layer in layers] for s, p in rows],
                    dtype=float) * 100
    n = len(layers)
    fig = _figure(max(7.0, 2.4 + 0.3 * n), 1.2 + 0.32 * len(rows) + _label_height(layers))
    ax = fig.subplots()
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    vmax = float(min(100.0, max(10.0, np.ceil(np.nanmax(data, initial=0.0) / 10) * 10)))
    im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap=cmap, vmin=0, vmax=vmax,
                   interpolation="nearest")
    if data.size <= 1500:
        for (r, c), v in np.ndenumerate(data):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.1f}" if v < 9.95 else f"{v:.0f}", ha="center", va="center",
                        fontsize=6 if n > 30 else 7, color="black" if v > 0.6 * vmax else "white")
    for k in range(1, len(sparsities)):
        ax.axhline(k * len(passes) - 0.5, color="white", linewidth=2)
    ax.set_xticks(np.arange(n), layers, rotation=90, fontsize=7 if n > 30 else 8)
    ax.set_yticks(np.arange(len(rows)), [f"{_pct(s)} {p}" for s, p in rows], fontsize=8)
    ax.set_xlabel("layer (network order)")
    ax.set_ylabel("sparsity, pass")
    fig.colorbar(im, ax=ax, label=f"utilization (%, scale 0-{vmax:.0f})", fraction=0.04, pad=0.01)
    fig.suptitle(title or f"{network}, front-end {_frontends(df)}: utilization = effectual MACs / "
                 "(cycles x peak MACs per cycle), %", fontsize=11)
    return fig


MAX_CONFIGURATIONS = 8  # beyond this, `write_report` draws a sweep's maps, not its configurations
MAX_DRAWN_ROWS = 2 * MAX_ROWS  # beyond this, `write_report` draws only with `draw_all`
MAX_MAP_PANELS = 64  # (network, sparsity, other swept values) panels of a sweep map
PLOTS = {"layer-speedup": layer_speedup, "speedup-vs-sparsity": speedup_vs_sparsity,
         "dram-traffic": dram_traffic, "utilization": utilization_map}


MAX_STEM = 100  # characters of a plot's file stem before `-<kind>.<format>`
_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DASHES = re.compile(r"[.-]*-[.-]*")  # ../../ -> one '-'


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def file_stem(network: str, slug: str = "") -> str:
    """The file-name part of a network's plots (plus its configuration's `_slug`): the
    network as is when it is a safe name (letters, digits, '-', '_', '.', not starting with
    '.') of at most MAX_STEM characters; else with every run of other characters (and of
    '.' and '-' around them) replaced by one '-', no leading or trailing '.' or '-', cut to
    MAX_STEM characters with a short hash of the name: no network names a path outside the
    results directory, and distinct networks keep distinct files."""
    stem = network
    if not _SAFE.fullmatch(network) or len(network) > MAX_STEM:
        stem = _DASHES.sub("-", _UNSAFE.sub("-", network)).strip(".-")[:MAX_STEM - 9]
        stem = f"{stem}-{_short_hash(network)}" if stem else _short_hash(network)
    if slug and len(stem) + 1 + len(slug) > MAX_STEM:  # `_slug` made it safe: [A-Za-z0-9.+=-]
        slug = f"{slug[:max(0, MAX_STEM - len(stem) - 10)]}-{_short_hash(slug)}".lstrip("-")
    return stem + (f"-{slug}" if slug else "")


def figures(df: pd.DataFrame) -> list[tuple[str, Figure]]:
    """Every plot for every network (and configuration) in `df`, as (file stem, figure);
    stems are safe file names (`file_stem`), distinct for distinct configurations (also
    on a case-insensitive file system)."""
    out, used = [], set()
    for network, keys, values, part in _split(df):
        label, slug = _label(keys, values), _slug(keys, values)
        stem = file_stem(network, slug)
        while stem.lower() in used:  # two names made equal by the replacing
            stem = f"{stem[:MAX_STEM - 9]}-{_short_hash(stem + network + label)}"
        used.add(stem.lower())
        plots = dict(PLOTS)
        if has_energy(part):
            plots["energy"] = lambda rows: energy_split(rows, _figure)
        for kind, plot in plots.items():
            fig = plot(part)
            if label:
                fig.suptitle(f"{fig.get_suptitle()} [{label}]", fontsize=10)
            out.append((f"{stem}-{kind}", fig))
    return out


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
    fig = _figure(1.2 + len(phases) * (0.9 + 0.55 * len(xs)), 0.9 + len(panels) * (0.6 + 0.4 * len(ys)))
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
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if v > 1 + 0.6 * (vmax - 1) else "white")
            ax.set_xticks(np.arange(len(xs)), [f"{v:g}" for v in xs], fontsize=8)
            ax.set_yticks(np.arange(len(ys)), [f"{v:g}" for v in ys], fontsize=8)
            ax.set_xlabel(x.rsplit(".", 1)[-1], fontsize=9)
            if c == 0:
                ax.set_ylabel(y.rsplit(".", 1)[-1], fontsize=9)
            extra = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(others, panel[2:]))
            ax.set_title(f"{phase}: {panel[0]} at {_pct(panel[1])}" + (f", {extra}" if extra else ""),
                         fontsize=9)
    fig.colorbar(im, ax=axes, label=f"{SWEEP_VALUES.get(value, value)} (x)", fraction=0.03, pad=0.01)
    fig.suptitle(f"sweep: {SWEEP_VALUES.get(value, value)} over the dense array, "
                 f"{x} x {y} (ratio of summed cycles)", fontsize=11)
    return fig


def write_sweep_maps(summary: pd.DataFrame, keys, out_dir: str | Path,
                     formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write `sweep-<x>-<y>-<value>` heat maps (compute-only speedup and speedup with
    memory) of a sweep's summary into `out_dir`, atomically; none if fewer than two
    numeric keys vary."""
    axes = sweep_axes(summary, keys)
    if axes is None:
        return []
    x, y = axes
    slug = f"{x.rsplit('.', 1)[-1]}-{y.rsplit('.', 1)[-1]}"
    return [path for value in SWEEP_VALUES
            for path in _write_figure(sweep_map(summary, x, y, value, keys), Path(out_dir),
                                      f"sweep-{slug}-{value.replace('_', '-')}", formats)]


# ---------------------------------------------------------------------------- output

def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure rendered as `fmt` (png at 110 dpi, or svg without a date, so that the
    same results give the same files)."""
    buf = io.BytesIO()
    with rc_context({"svg.hashsalt": "accelsim", "svg.fonttype": "none"}):
        fig.savefig(buf, format=fmt, dpi=110,
                    metadata={"Date": None} if fmt == "svg" else {"Software": "accelsim"})
    return buf.getvalue()


def write_report(results_dir: str | Path, formats: tuple[str, ...] = ("png", "svg"),
                 draw_all: bool = False) -> list[Path]:
    """Read `results_dir/results.csv` and write every plot next to it as PNG and SVG,
    each atomically; returns the paths written. A merged sweep of more than
    MAX_CONFIGURATIONS configurations gets its sweep maps instead (4 plots each would be
    hundreds of files), unless `draw_all`. Without two numeric swept keys to map, with
    more than MAX_MAP_PANELS panels to map or more than MAX_DRAWN_ROWS rows to draw, it
    is refused unless `draw_all`. Bad input raises `ConfigError`."""
    results_dir = Path(results_dir)
    what = "a results directory with the results.csv that `accelsim run` writes"
    try:
        st = os.stat(results_dir)
    except FileNotFoundError:
        raise ConfigError(f"{_q(results_dir)}: expected {what}, but it does not exist") from None
    except (OSError, ValueError) as e:  # ENAMETOOLONG, EACCES, ENOTDIR, a NUL in the path
        raise ConfigError(f"{_q(results_dir)}: expected {what}, but it cannot be read "
                          f"({getattr(e, 'strerror', None) or e})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{_q(results_dir)}: expected {what}, but it is not a directory")
    df = load_results(results_dir / "results.csv")
    keys = [c for c in df.columns if c not in COLUMNS]  # a merged sweep's swept keys
    n = _count(df)
    if not draw_all and n > MAX_CONFIGURATIONS:
        summary = _sweep_summary(df, keys) if keys else None
        axes = sweep_axes(summary, keys) if keys else None
        if axes is not None:
            panel_keys = [k for k in keys if k not in (*axes, "workload.sparsity", "workload.network")]
            panels = summary.groupby(["network", "sparsity", *panel_keys], dropna=False).ngroups
            if panels > MAX_MAP_PANELS:
                raise ConfigError(f"{_q(results_dir / 'results.csv')}: holds {n:,} configurations "
                                  f"whose sweep maps would have {panels:,} panels (more than "
                                  f"{MAX_MAP_PANELS}); expected --all to draw every "
                                  "configuration's plots")
            return write_sweep_maps(summary, keys, results_dir, formats)
        raise ConfigError(f"{_q(results_dir / 'results.csv')}: holds {n:,} configurations "
                          f"(more than {MAX_CONFIGURATIONS}) and no two numeric swept keys to map; "
                          "expected --all to draw every configuration's plots")
    if not draw_all and len(df) > MAX_DRAWN_ROWS:
        raise ConfigError(f"{_q(results_dir / 'results.csv')}: holds {len(df):,} rows in {n:,} "
                          f"configurations, more than the {MAX_DRAWN_ROWS:,} drawn in about a "
                          "minute; expected --all to draw them all")
    written = []
    for stem, fig in figures(df):
        written.extend(_write_figure(fig, results_dir, stem, formats))
    return written


def _sweep_summary(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`summarize` per combination of swept key values, with the key columns in front."""
    parts = []
    for values, rows in df.groupby(keys, sort=False, dropna=False):
        part = summarize(rows[[c for c in df.columns if c not in keys]])
        for k, v in zip(keys, values if isinstance(values, tuple) else (values,)):
            part.insert(0, k, v)
        parts.append(part[keys + [c for c in part.columns if c not in keys]])
    return pd.concat(parts, ignore_index=True)


def _write_figure(fig: Figure, out_dir: Path, stem: str, formats) -> list[Path]:
    """Lay `fig` out once, freeze it (so PNG and SVG agree and the same results give the
    same bytes), write it as each format atomically, and release it."""
    written = []
    try:
        with warnings.catch_warnings():  # a name in a script the font lacks: boxes, no warning
            warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
            fig.draw_without_rendering()
            fig.set_layout_engine("none")
            for fmt in formats:
                path = out_dir / f"{stem}.{fmt}"
                try:
                    written.append(write_atomic(path, figure_bytes(fig, fmt)))
                except OutputError as e:  # a directory, FIFO, device or symlink where a plot goes
                    raise ConfigError(cut(str(e), 500)) from None
                except OSError as e:
                    raise ConfigError(f"{_q(path)}: expected a writable file in a writable "
                                      f"directory, could not write it ({e.strerror or e})") from None
    finally:
        fig.clear()
    return written
