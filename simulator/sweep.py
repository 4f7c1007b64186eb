"""Design-space sweeps: one base config, lists of values for some of its keys, every point run.

A sweep file is YAML with these keys:

    name: sweep                   # optional; default: the file's stem; names reports/<name>/
    base: tactical.yaml           # a config file (relative to the sweep file) or an inline mapping
    sweep:                        # dotted config key -> list of values
      architecture.frontend.lookahead: [1, 2, 3]
      workload.sparsity: [0.8, 0.9]
    output: {dir: reports/x}      # optional; default reports/<name>/

**Points.** The points are the Cartesian product of the value lists, in file order with
the last key varying fastest (`itertools.product`). A point's config is the base mapping
with each swept key set (nested mappings are created where the base lacks them). Every
point is validated with `parse_config`, and its workload is built far enough to know
that the network (or trace) exists, *before* anything runs, so a bad value fails at once
with one line naming the sweep file and the key, e.g.
``configs/sweep.yaml: sweep.architecture.frontend.lookahead[3]: expected an integer >= 0,
got -1``. Problems in the base name the base file (or ``base.<key>`` of the sweep file).

**Front-end combinations.** Lookahead, lookaside and shape are valid one by one but not
in every combination (T<1,9> cannot place 9 lateral connections on 16 lanes; shape
`none` takes no lookahead). A point whose only problem is such a combination
(`connectivity` raises `FrontendError`) is skipped with a note, as long as each of its
values builds in some other point; a value that builds in no point at all is an error,
and so is a sweep with no valid point. Every other invalid value is an error.

**Results.** Each point runs `simulator.run`; its rows get one column per swept key,
named by the dotted key, in front of the usual result columns. `results.csv` in the
output directory is the rows of every point in point order; `summary.csv` is
`results.summarize` per point (phases forward, ..., backward, iteration) with the same
key columns. Both are written atomically.

**Resumability.** Each finished point is stored as ``points/<id>.csv`` (its rows without
the key columns, written atomically) as soon as it finishes, where `<id>` is a stable
hash of the point's *resolved* config (the parsed `Config` with defaults filled in, minus
its name, output and source, plus the accelsim version). A re-run skips points whose
file exists and rebuilds the merged CSVs from the point files, so an interrupted sweep
(Ctrl-C, a lost worker) loses at most the points that were running. Points are keyed by
what they simulate, not by the sweep, so growing a sweep reuses what is done. The hash
does not cover the simulator's code or a trace's contents: delete ``points/`` after
changing either.

**Execution backends** (`executors.py`): this process, N local worker processes, or
an existing Dask distributed cluster. All three yield finished points as they finish;
the merge does not depend on the order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import __version__
from .config import Config, ConfigError, parse_config, read_yaml
from .frontend import FrontendError
from .trace import write_atomic

POINT_SOURCE = "<sweep point>"  # the `source` points are parsed with; rewritten in messages
SWEEP_KEYS = ("name", "base", "sweep", "output")


# --- points --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """One combination: `values[i]` for swept key `keys[i]`, the `indices[i]`-th of its list."""

    keys: tuple[str, ...]
    values: tuple[Any, ...]
    indices: tuple[int, ...]

    def items(self) -> list[tuple[str, Any]]:
        return list(zip(self.keys, self.values))

    def label(self) -> str:
        """`lookahead=2 lookaside=5 sparsity=0.8` (the keys' short names)."""
        names = short_names(self.keys)
        return " ".join(f"{names[k]}={format_value(v)}" for k, v in self.items())


def expand(sweep: dict[str, list]) -> list[Point]:
    """The Cartesian product of the value lists: keys in mapping order, the last fastest."""
    keys = tuple(sweep)
    lists = [list(enumerate(sweep[k])) for k in keys]
    return [Point(keys, tuple(v for _, v in combo), tuple(i for i, _ in combo))
            for combo in itertools.product(*lists)]


def set_key(mapping: dict, dotted: str, value: Any) -> dict:
    """A copy of `mapping` with the nested key `a.b.c` set to `value`; missing (or null)
    mappings on the way are created. Raises TypeError if the path crosses a non-mapping."""
    out = dict(mapping)
    node = out
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            raise TypeError(".".join(parts[:i + 1]))
        node[part] = child = dict(child)
        node = child
    node[parts[-1]] = _plain(value)
    return out


def apply(base: dict, point: Point) -> dict:
    """The config mapping of `point`: `base` with every swept key set."""
    out = base
    for key, value in point.items():
        out = set_key(out, key, value)
    return out


def point_id(config: Config) -> str:
    """Stable 16-hex-digit hash of what a config simulates (its resolved settings, without
    name, output and source, plus the accelsim version)."""
    data = dataclasses.asdict(config)
    for k in ("name", "output", "source"):
        data.pop(k, None)
    text = json.dumps({"accelsim": __version__, "config": data}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def short_names(keys) -> dict[str, str]:
    """Dotted key -> its last component, or the whole key where the last components clash."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _plain(value: Any) -> Any:
    """A deep copy of YAML data (so points never share mutable values)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# --- the sweep file ------------------------------------------------------------------------------

@dataclass
class PlannedPoint:
    """A valid point: its config mapping (plain data, what a worker gets), the parsed
    config and its id (the name of its point file)."""

    point: Point
    mapping: dict
    config: Config
    id: str


@dataclass
class Sweep:
    name: str
    source: str                      # the sweep file
    keys: tuple[str, ...]
    points: list[PlannedPoint]       # valid points, in point order
    skipped: list[tuple[Point, str]] = field(default_factory=list)  # (point, why)
    output_dir: Path | None = None   # the sweep file's output.dir, if any

    @property
    def total(self) -> int:
        return len(self.points) + len(self.skipped)

    def default_output_dir(self) -> Path:
        return self.output_dir or Path("reports") / self.name


def _key_ok(key: Any) -> bool:
    return isinstance(key, str) and all(p and p.strip() == p for p in key.split("."))


def parse_sweep_mapping(src: str, data: Any) -> dict[str, list]:
    """Check the `sweep:` mapping: dotted keys (not nested in each other) -> non-empty lists of
    distinct values."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{src}: sweep: expected a non-empty mapping of dotted config keys to "
                          f"lists of values, got {data!r}")
    keys = list(data)
    for key in keys:
        if not _key_ok(key):
            raise ConfigError(f"{src}: sweep: expected dotted config keys like "
                              f"architecture.frontend.lookahead, got {key!r}")
        for other in keys:
            if other != key and key.startswith(other + "."):
                raise ConfigError(f"{src}: sweep.{key}: expected a key outside the other swept "
                                  f"keys, got one inside sweep.{other}")
        values = data[key]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{src}: sweep.{key}: expected a non-empty list of values, got {values!r}")
        for i, v in enumerate(values):
            if any(v == w and type(v) is type(w) for w in values[:i]):
                raise ConfigError(f"{src}: sweep.{key}[{i}]: expected distinct values, got {v!r} "
                                  "twice")
    return {k: data[k] for k in keys}


class _Messages:
    """Turns a ConfigError of a point (parsed with source POINT_SOURCE) into one line naming the
    sweep file and swept key, or the base file / `base.` key when the base is at fault."""

    def __init__(self, src: str, base_src: str | None):
        self.src, self.base_src = src, base_src

    @staticmethod
    def split(error: ConfigError) -> tuple[str, str]:
        text = str(error)
        prefix = POINT_SOURCE + ": "
        if text.startswith(prefix):
            key, _, rest = text[len(prefix):].partition(": ")
            return key, rest
        return "", text

    def __call__(self, error: ConfigError, point: Point) -> ConfigError:
        key, rest = self.split(error)
        if not key:
            return ConfigError(f"{self.src}: {rest}")
        for k, i, v in zip(point.keys, point.indices, point.values):
            index = "" if rest.endswith("unknown key") else f"[{i}]"
            if key == k or key.startswith((k + ".", k + "[")):
                suffix = key[len(k):]
                if suffix == "[0]" and not isinstance(v, list):  # a scalar the config made a list
                    suffix = ""
                return ConfigError(f"{self.src}: sweep.{k}{index}{suffix}: {rest}")
            if k.startswith(key + "."):  # a swept key inside the key at fault
                return ConfigError(f"{self.src}: sweep.{k}{index}: {key}: {rest}")
        if self.base_src is not None:
            return ConfigError(f"{self.base_src}: {key}: {rest}")
        return ConfigError(f"{self.src}: base.{key}: {rest}")


def _frontend_combination(error: ConfigError) -> bool:
    """True if parse_config failed on a front-end that cannot be built (a combination of
    shape, lookahead, lookaside and lanes), not on a value that is wrong in itself."""
    return isinstance(error.__context__, FrontendError)


def _check_workload(config: Config) -> None:
    """Build the point's workload far enough to know it exists (network name, image size,
    dense layers; a trace's manifest and passes), as `simulator.run` would, without
    simulating. Raises ConfigError."""
    from .api import _workloads  # the one place that knows how a workload is built

    gen = _workloads(config)
    try:
        next(gen, None)
    finally:
        gen.close()


def _resolve_trace(mapping: dict, config: Config, base_dir: Path) -> tuple[dict, Config]:
    """A relative `workload.trace` is taken from the current directory if it exists there,
    else from the base config's directory (as `load_config` does)."""
    trace = config.workload.trace
    if trace and not Path(trace).is_absolute() and not Path(trace).exists():
        alt = base_dir / trace
        if alt.exists():
            mapping = set_key(mapping, "workload.trace", str(alt))
            config = dataclasses.replace(config, workload=dataclasses.replace(config.workload,
                                                                               trace=str(alt)))
    return mapping, config


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read a sweep file, expand its points and validate every one of them (raises
    ConfigError with one line on the first problem; see the module docstring)."""
    path = Path(path)
    src = str(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: expected a mapping with keys base and sweep, got {data!r}")
    unknown = [k for k in data if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(f"{src}: {unknown[0]}: expected one of the known keys "
                          f"({', '.join(SWEEP_KEYS)}); unknown key")
    name = data.get("name", "".join(c for c in path.stem if c.isalnum() or c in "-_.") or "sweep")
    if (not isinstance(name, str) or not name or name.startswith(".")
            or not all(c.isalnum() or c in "-_." for c in name)):
        raise ConfigError(f"{src}: name: expected letters, digits, '-', '_' or '.' (it names the "
                          f"output directory reports/<name>), got {name!r}")
    output = data.get("output") or {}
    if not isinstance(output, dict) or set(output) - {"dir"}:
        raise ConfigError(f"{src}: output: expected a mapping with the key dir, got {output!r}")
    out_dir = output.get("dir")
    if out_dir is not None and (not isinstance(out_dir, str) or not out_dir):
        raise ConfigError(f"{src}: output.dir: expected a non-empty string, got {out_dir!r}")

    base = data.get("base")
    if isinstance(base, str) and base:
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        base_src = str(base_path)
        base_data = read_yaml(base_path, f"{src}: base: expected a config file (relative to the "
                               f"sweep file), got {base!r}: no such file {base_src!r}")
        if not isinstance(base_data, dict):
            raise ConfigError(f"{base_src}: (top level): expected a mapping, got {base_data!r}")
        base_dir = base_path.parent
    elif isinstance(base, dict):
        base_src, base_data, base_dir = None, base, path.parent
    else:
        raise ConfigError(f"{src}: base: expected a config file name (relative to the sweep "
                          f"file) or an inline config mapping, got {base!r}")
    swept = parse_sweep_mapping(src, data.get("sweep"))
    for key in swept:
        try:
            set_key(base_data, key, None)
        except TypeError as e:
            raise ConfigError(f"{src}: sweep.{key}: expected a key through mappings of the base "
                              f"config, but {e} is not a mapping there") from None

    messages = _Messages(src, base_src)
    points = expand(swept)
    planned: list[PlannedPoint] = []
    combos: list[tuple[Point, ConfigError]] = []
    checked: dict[str, ConfigError | None] = {}
    for point in points:
        mapping = apply(base_data, point)
        try:
            config = parse_config(mapping, POINT_SOURCE)
        except ConfigError as e:
            if _frontend_combination(e):
                combos.append((point, e))
                continue
            raise messages(e, point) from None
        mapping, config = _resolve_trace(mapping, config, base_dir)
        wl = json.dumps([dataclasses.asdict(config.workload), config.passes,
                         config.lowering.first_layer_input_grad], default=str)
        if wl not in checked:
            try:
                _check_workload(config)
                checked[wl] = None
            except ConfigError as e:
                checked[wl] = e
        if checked[wl] is not None:
            raise messages(checked[wl], point) from None
        planned.append(PlannedPoint(point, mapping, config, point_id(config)))

    if combos:
        valid = {(k, i) for p in planned for k, i in zip(p.point.keys, p.point.indices)}
        for point, e in combos:
            for k, i, v in zip(point.keys, point.indices, point.values):
                if (k, i) not in valid:
                    key, rest = _Messages.split(e)
                    raise ConfigError(f"{src}: sweep.{k}[{i}]: expected a value that some point of "
                                      f"the sweep can build, got {v!r}: every point with it fails "
                                      f"({key}: {rest})")
    return Sweep(name=name, source=src, keys=tuple(swept), points=planned,
                 skipped=[(p, "{}: {}".format(*_Messages.split(e))) for p, e in combos],
                 output_dir=Path(out_dir) if out_dir else None)


# --- running points --------------------------------------------------------------------------------

def run_point(mapping: dict, source: str = POINT_SOURCE) -> pd.DataFrame:
    """Simulate one point from its config mapping (plain data): the function workers run."""
    from .api import run

    return run(parse_config(mapping, source), quiet=True)


def run_points(points: list[PlannedPoint], executor,
               on_done: Callable[[PlannedPoint, pd.DataFrame], None] | None = None
               ) -> dict[str, pd.DataFrame]:
    """Run `points` on `executor`; call `on_done(point, rows)` as each finishes (in finishing
    order). Returns id -> rows. An error of a point is raised with `sweep_task` set to the
    point's index in `points`."""
    results = {}
    tasks = [(p.id, (p.mapping, POINT_SOURCE)) for p in points]
    for i, rows in executor.map_unordered(run_point, tasks):
        point = points[i]
        results[point.id] = rows
        if on_done is not None:
            on_done(point, rows)
    return results


# --- storage and merging -----------------------------------------------------------------------------

def point_path(out_dir: Path, point: PlannedPoint) -> Path:
    return Path(out_dir) / "points" / f"{point.id}.csv"


def store_point(out_dir: Path, point: PlannedPoint, rows: pd.DataFrame) -> Path:
    return write_atomic(point_path(out_dir, point), rows.to_csv(index=False))


def read_point(out_dir: Path, point: PlannedPoint) -> pd.DataFrame:
    """A stored point's rows, exactly as written (no text is taken for a missing value)."""
    path = point_path(out_dir, point)
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise ConfigError(f"{path}: cannot read this finished point ({' '.join(str(e).split())}); "
                          "delete it to run the point again") from None


def pending(sweep: Sweep, out_dir: Path) -> list[PlannedPoint]:
    """The points of `sweep` without a stored result in `out_dir` (once each, should two
    points resolve to the same config)."""
    todo = {p.id: p for p in sweep.points if not point_path(out_dir, p).is_file()}
    return list(todo.values())


def finished(sweep: Sweep, out_dir: Path) -> int:
    """How many points of `sweep` have a stored result in `out_dir`."""
    return sum(point_path(out_dir, p).is_file() for p in sweep.points)


def with_keys(rows: pd.DataFrame, point: Point) -> pd.DataFrame:
    """`rows` with one column per swept key (named by the dotted key) in front; a list or
    mapping value is written as JSON."""
    keys = pd.DataFrame({k: [json.dumps(v) if isinstance(v, (list, dict)) else v] * len(rows)
                         for k, v in point.items()}, index=rows.index)
    for k in point.keys:
        if k in rows.columns:
            rows = rows.drop(columns=k)
    return pd.concat([keys, rows], axis=1)


def merge(sweep: Sweep, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[pd.DataFrame]]:
    """From the stored point files, in point order: (results, summary, each point's summary
    without the key columns). `summary` is `results.summarize` of each point with its keys."""
    from .results import summarize

    results, summaries, parts = [], [], []
    for p in sweep.points:
        rows = read_point(out_dir, p)
        part = summarize(rows)
        results.append(with_keys(rows, p.point))
        summaries.append(with_keys(part, p.point))
        parts.append(part)
    return (pd.concat(results, ignore_index=True), pd.concat(summaries, ignore_index=True), parts)


@dataclass
class SweepRun:
    out_dir: Path
    results: pd.DataFrame
    summary: pd.DataFrame
    point_summaries: list[pd.DataFrame]  # per point of sweep.points, without key columns
    results_path: Path
    summary_path: Path
    ran: int


def run_sweep(sweep: Sweep, out_dir: Path, executor, progress: bool = True,
              on_done: Callable[[PlannedPoint, pd.DataFrame], None] | None = None) -> SweepRun:
    """Run the points not yet done (each stored as it finishes), then merge every point into
    `results.csv` and `summary.csv` in `out_dir`."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    todo = pending(sweep, out_dir)
    messages = _Messages(sweep.source, None)
    bar = tqdm(total=len(todo), desc=sweep.name, unit="point", disable=True if not progress else None)

    def done(point: PlannedPoint, rows: pd.DataFrame) -> None:
        store_point(out_dir, point, rows)
        bar.update()
        if on_done is not None:
            on_done(point, rows)

    try:
        run_points(todo, executor, done)
    except ConfigError as e:
        task = getattr(e, "sweep_task", None)
        if task is None or not _Messages.split(e)[0]:
            raise
        raise messages(e, todo[task].point) from None
    finally:
        bar.close()
    results, summary, parts = merge(sweep, out_dir)
    results_path = write_atomic(out_dir / "results.csv", results.to_csv(index=False))
    summary_path = write_atomic(out_dir / "summary.csv", summary.to_csv(index=False))
    return SweepRun(out_dir, results, summary, parts, results_path, summary_path, len(todo))


def format_sweep_summary(sweep: Sweep, point_summaries: list[pd.DataFrame]) -> str:
    """One line per (point, network, sparsity): speedup over the dense array with memory /
    compute only, for forward, backward and iteration (or the passes that were run).
    `point_summaries`: `results.summarize` of each point of `sweep.points`."""
    present = set().union(*(set(s["phase"]) for s in point_summaries))
    phases = [p for p in ("forward", "backward", "iteration") if p in present]
    if not phases:
        phases = [p for p in ("input_grad", "weight_grad") if p in present]
    scalar = {k for i, k in enumerate(sweep.keys)
              if not any(isinstance(p.point.values[i], list) for p in sweep.points)}
    # the rows' network and sparsity, unless a swept key already gives them
    shown = [c for c in ("network", "sparsity") if f"workload.{c}" not in scalar]
    names = short_names([*sweep.keys, *shown])
    table = []
    for planned, part in zip(sweep.points, point_summaries):
        for (network, sparsity), block in part.groupby(["network", "sparsity"], sort=False):
            by_phase = block.set_index("phase")
            cells = [f"{by_phase.loc[p, 'speedup']:.2f}x / {by_phase.loc[p, 'compute_speedup']:.2f}x"
                     if p in by_phase.index else "-" for p in phases]
            row = {"network": network, "sparsity": f"{sparsity:.0%}"}
            table.append([format_value(v) for v in planned.point.values] + [row[c] for c in shown]
                         + cells)
    header = [names[k] for k in (*sweep.keys, *shown)] + phases
    widths = [max(len(h), *(len(r[j]) for r in table)) for j, h in enumerate(header)]
    lines = ["speedup over the dense array: with memory / compute only"]
    lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in table]
    return "\n".join(lines)
