"""Plots of a `results.csv`: what `accelsim report RESULTS_DIR` and `accelsim run --plots` draw.

Every plot is drawn per network (and per configuration, when a merged sweep CSV holds
several front-ends or swept keys) from the rows `accelsim run` writes, one row per
(network, sparsity, layer, pass); layers are in network order, the order in which they
first appear in the CSV. Whole-network figures are ratios of summed cycles or bytes
(`simulator.results.summarize`), never averages of per-layer ratios.

- `layer_speedup` (file `<network>-layer-speedup`): per-layer speedup over the dense
  array, memory included (`speedup` = dense_cycles / cycles, unit x), grouped bars, one
  bar per training pass, one panel per sparsity. A black tick on each bar is the array's
  compute-only speedup (`compute_speedup`). A dashed red line, drawn over the bars, marks
  the front-end's cap h+1: it bounds the compute-only ticks of a bit-parallel array (what
  value skipping alone can reach on any layer), not the bars (the memory-included speedup
  passes it when dense training's traffic stalls the dense array), and on a bit-serial
  array (TCLp/TCLe) only the value skipping, since the array also skips bits; its legend
  entry says which. A grey line marks 1x. A layer without a pass (the first conv's input
  gradient) has no bar. An outlier (a value more than 3x the 95th percentile and the cap,
  e.g. one fc speedup of 91x) does not stretch the axis: it is cut 12% above the largest
  other value, each cut bar has its value written at the top, and the panel's title says
  so (`axis_top`).
- `speedup_vs_sparsity` (`<network>-speedup-vs-sparsity`): network speedup against
  Top-K sparsity for forward, backward (input + weight gradient) and the whole
  iteration: `speedup` (memory included) and `compute_speedup` (the array alone), both
  ratios of summed cycles, with the work bound 1/(1-s) (work scales with density; the
  word "ideal" is kept for the tables' `ideal_speedup`, the array's bound) and the
  front-end cap h+1. Unit x; sparsity in percent. A run at one sparsity has no curve:
  it gets bars per phase, memory included beside array only, each value written
  (`speedup_bars`).
- `dram_traffic` (`<network>-dram-traffic`): DRAM traffic of the whole network per pass
  and sparsity in MB (10^6 bytes), stacked by tensor class (weights, activations, saved
  activations, gradients; reads plus writes, metadata included), with dense training's
  traffic (`dense_dram_bytes`) as a black marker and its ratio to ours over each bar.
- `utilization_map` (`<network>-utilization`): heat map of the array's utilization,
  effectual MACs / (cycles x peak MACs per cycle) in percent, per layer (columns) and
  (sparsity, pass) (rows), each cell (0.42 x 0.34 in) labelled in 7.5-pt type; the
  colour scale runs from 0 to the largest value rounded up to 10%; grey where a layer
  has no such pass.
- `energy_split` (`<network>-energy`, energy_plot.py; results with energy columns only):
  energy per pass and sparsity stacked by MACs, on-chip buffers and DRAM, ours beside the
  dense baseline's, with the efficiency over each pair.
- `sweep_map` (`sweep-<x>-<y>-<value>`, written by `accelsim sweep` and by `accelsim
  report` on a sweep of more than MAX_CONFIGURATIONS configurations): heat maps of the
  compute-only speedup and the speedup with memory over two swept keys, a panel per
  phase and (network, sparsity, other swept value), 8-pt cell labels, the colour bar
  under the panels.

Every title names the configuration once (the front-end, or a merged sweep's label);
titles and colour-bar labels are wrapped to the figure; legends sit outside the axes
(under the panels, or to the right), covering no data. `tests/test_report_layout.py`
checks that no text leaves the figure at any size these plots are drawn.

Modules: `report_data.py` reads and checks the CSV and splits it into configurations;
`report_plots.py` draws the figures; this module names the files and writes them. Every
public name (and those the tests use) stays importable from `simulator.report`.

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

import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure

from .config import ConfigError
from .energy_plot import energy_split, has_energy
from .outputs import OutputError, write_atomic
from .report_data import (  # noqa: F401  (public names of simulator.report)
    FRONTEND, MAX_LAYERS, MAX_NAME, MAX_RESULTS_BYTES, MAX_ROWS, MAX_SPARSITIES, NUMERIC, PASSES,
    PHASES, REQUIRED, _check_configurations, _config_keys, _count, _label, _q, _slug, _split,
    configurations, frontend_cap, load_results)
from .report_plots import (  # noqa: F401
    CLASS_COLORS, CLASSES, PASS_COLORS, SWEEP_VALUES, WORK_BOUND, _figure, _frontends, _pct, axis_top,
    cap_label, dram_traffic, layer_order, layer_speedup, speedup_bars, speedup_vs_sparsity, sweep_axes,
    sweep_map, utilization_map)
from .results import COLUMNS, summarize
from .safe_yaml import cut

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
            plots["energy"] = lambda rows, config: energy_split(rows, _figure, config=config)
        config = label if label.startswith("front-end") else (
            f"front-end {_frontends(part)}" + (f", {label}" if label else ""))
        for kind, plot in plots.items():  # the configuration named once in each title
            out.append((f"{stem}-{kind}", plot(part, config=config)))
    return out



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
