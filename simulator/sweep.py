"""Design-space sweeps: one base config, lists of values for some of its keys, every point run.

A sweep file is YAML with these keys:

    name: sweep                   # optional; default: the file's stem; names reports/<name>/
    base: tactical.yaml           # a config file (relative to the sweep file) or an inline mapping
    sweep:                        # dotted config key -> list of values
      architecture.frontend.lookahead: [1, 2, 3]
      workload.sparsity: [0.8, 0.9]
    output: {dir: reports/x}      # optional; default reports/<name>/

**Points.** The points are the Cartesian product of the value lists, in file order with
the last key varying fastest (`itertools.product`). Their number, the product of the
lists' lengths, is known before any point is built; a sweep of more than `max_points`
(default `MAX_POINTS` = 10,000; `accelsim sweep --max-points N`) is refused in one line.
A point's config is the base mapping with each swept key set (nested mappings are created
where the base lacks them). Every point is validated with `parse_config`, and its workload
is built far enough to know that the network (or trace) exists, *before* anything runs,
so a bad value fails at once with one line naming the sweep file and the key, e.g.
``configs/sweep.yaml: sweep.architecture.frontend.lookahead[3]: expected an integer >= 0,
got -1``. Problems in the base name the base file (or ``base.<key>`` of the sweep file).
Validation streams over the product (one point at a time, each distinct workload built
once) and keeps only each valid point's position and id; a point's config is rebuilt
when it runs. It takes some 0.15 ms a point, with a progress bar if it takes over a
second.

**Combinations.** Lookahead, lookaside and shape are valid one by one but not in every
combination (T<1,9> cannot place 9 lateral connections on 16 lanes; shape `none` takes
no lookahead), nor are a bit-serial back-end's bits, the array's columns and the memory
element (`config.CombinationError`). A point whose only problem is such a combination
(`connectivity` raises `FrontendError`, or the config a `CombinationError`) is skipped with a note, as long as each of its
values builds in some other point; a value that builds in no point at all is an error,
and so is a sweep with no valid point. Every other invalid value is an error.

**Results.** Each point runs `simulator.run`; its rows get one column per swept key,
named by the dotted key, in front of the usual result columns. `results.csv` in the
output directory is the rows of every point in point order; `summary.csv` is
`results.summarize` per point (phases forward, ..., backward, iteration) with the same
key columns. Both are written atomically.

**Resumability** (`sweep_store.py`): each finished point is kept in ``points/<id>.csv``
(an id hashed from its resolved config), checked when read, so a re-run only runs what is
not finished.

**Execution backends** (`executors.py`): this process, N local worker processes, or
an existing Dask distributed cluster. All three yield finished points as they finish;
the merge does not depend on the order. Tasks are built as they are handed out, so only
the points in flight have their config in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import __version__, safe_yaml
from .config import CombinationError, Config, ConfigError, parse_config, read_yaml
from .frontend import FrontendError
from .outputs import write_atomic
from .results import write_results
from .sweep_store import (FINISHED, MISSING, UNFINISHED, StoredPoints, check_points_dir,  # noqa: F401
                          finished, pending, point_path, read_point, read_point_file, scan_points,
                          store_point)

POINT_SOURCE = "<sweep point>"  # the `source` points are parsed with; rewritten in messages
SWEEP_KEYS = ("name", "base", "sweep", "output")
MAX_POINTS = 10_000  # points a sweep may have unless the caller allows more (--max-points)


def _show(value: Any) -> str:
    """`value` as a message quotes it: its repr, cut to one short line."""
    return safe_yaml.cut(repr(value))


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


class Points(Sequence):
    """The Cartesian product of the value lists, without building it: `len()` is the product
    of the lists' lengths, point `n` is computed from `n` (the last key varying fastest), and
    iteration walks `itertools.product` one point at a time."""

    def __init__(self, sweep: dict[str, list]):
        self.keys = tuple(sweep)
        self.lists = [list(sweep[k]) for k in self.keys]

    def __len__(self) -> int:
        return math.prod(len(values) for values in self.lists)

    def __getitem__(self, n: int) -> Point:
        if not isinstance(n, int):
            raise TypeError(f"point indices are integers, not {type(n).__name__}")
        size = len(self)
        if not -size <= n < size:
            raise IndexError(n)
        n %= size
        indices = []
        for values in reversed(self.lists):
            n, i = divmod(n, len(values))
            indices.append(i)
        return self._point(tuple(reversed(indices)))

    def __iter__(self) -> Iterator[Point]:
        for indices in itertools.product(*(range(len(v)) for v in self.lists)):
            yield self._point(indices)

    def _point(self, indices: tuple[int, ...]) -> Point:
        return Point(self.keys, tuple(v[i] for v, i in zip(self.lists, indices)), indices)


def expand(sweep: dict[str, list]) -> Points:
    """The Cartesian product of the value lists: keys in mapping order, the last fastest."""
    return Points(sweep)


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
    data = _fields(config)
    for k in ("name", "output", "source"):
        data.pop(k, None)
    text = json.dumps({"accelsim": __version__, "config": data}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_LEAVES = (str, int, float, bool, type(None))
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # dataclass -> its field names


def _fields(value: Any) -> Any:
    """`dataclasses.asdict` without its deep copies (the same JSON, a few times faster)."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind not in _FIELD_NAMES and dataclasses.is_dataclass(kind):
        _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(kind))
    if kind in _FIELD_NAMES:
        return {name: _fields(getattr(value, name)) for name in _FIELD_NAMES[kind]}
    if isinstance(value, (list, tuple)):
        return [_fields(v) for v in value]
    if isinstance(value, dict):
        return {k: _fields(v) for k, v in value.items()}
    return value


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

@dataclass(frozen=True)
class _Base:
    """The base config mapping, and the directory relative traces are also looked up in."""

    data: dict
    dir: Path

    def mapping(self, point: Point) -> dict:
        """The config mapping of `point` (plain data, what a worker gets): the base with every
        swept key set, a relative `workload.trace` resolved as `load_config` does."""
        mapping = apply(self.data, point)
        workload = mapping.get("workload")
        found = _trace_next_to_base(workload.get("trace") if isinstance(workload, dict) else None,
                                    self.dir)
        return set_key(mapping, "workload.trace", found) if found else mapping


def _trace_next_to_base(trace: Any, base_dir: Path) -> str | None:
    """A relative trace path that does not exist from the current directory but does from
    the base config's directory: that path. Else None (the value is used as written)."""
    if not isinstance(trace, str) or not trace:
        return None
    try:
        if Path(trace).is_absolute() or Path(trace).exists() or not (base_dir / trace).exists():
            return None
    except (OSError, ValueError):  # a name the file system cannot take: parse_config judges it
        return None
    return str(base_dir / trace)


@dataclass(frozen=True)
class PlannedPoint:
    """A valid point and its id (the name of its point file). Its config mapping and parsed
    config are rebuilt from the base when asked, so a sweep holds only positions and ids."""

    point: Point
    id: str
    base: _Base = field(repr=False, compare=False)

    @property
    def mapping(self) -> dict:
        """The point's config mapping (plain data, what a worker gets)."""
        return self.base.mapping(self.point)

    @property
    def config(self) -> Config:
        return parse_config(self.mapping, POINT_SOURCE)


class PlannedPoints(Sequence):
    """The valid points of a sweep in point order, each kept as its position in the product
    and its id (some 100 bytes); `PlannedPoint`s are made as they are asked for."""

    def __init__(self, points: Points, base: _Base):
        self._points, self._base = points, base
        self._positions = array("q")
        self.ids: list[str] = []

    def add(self, position: int, id: str) -> None:
        self._positions.append(position)
        self.ids.append(id)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> PlannedPoint:
        return PlannedPoint(self._points[self._positions[i]], self.ids[i], self._base)

    def __iter__(self) -> Iterator[PlannedPoint]:
        for position, id in zip(self._positions, self.ids):
            yield PlannedPoint(self._points[position], id, self._base)


@dataclass
class Sweep:
    name: str
    source: str                      # the sweep file
    keys: tuple[str, ...]
    points: PlannedPoints            # valid points, in point order
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
                          f"lists of values, got {_show(data)}")
    keys = list(data)
    for key in keys:
        if not _key_ok(key):
            raise ConfigError(f"{src}: sweep: expected dotted config keys like "
                              f"architecture.frontend.lookahead, got {_show(key)}")
        for other in keys:
            if other != key and key.startswith(other + "."):
                raise ConfigError(f"{src}: sweep.{key}: expected a key outside the other swept "
                                  f"keys, got one inside sweep.{other}")
        values = data[key]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{src}: sweep.{key}: expected a non-empty list of values, got {_show(values)}")
        seen = set()
        for i, v in enumerate(values):
            token = (type(v), _hashable(v))
            if token in seen:
                raise ConfigError(f"{src}: sweep.{key}[{i}]: expected distinct values, got {_show(v)} "
                                  "twice")
            seen.add(token)
    return {k: data[k] for k in keys}


def _hashable(value: Any) -> Any:
    """A hashable stand-in for YAML data, equal where the data are equal (lists and
    mappings compared by content), so duplicates are found with a set, in linear time."""
    if isinstance(value, list):
        return ("list", tuple(_hashable(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((k, _hashable(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:  # anything else unhashable: compared by its text
        return ("repr", repr(value))
    return value


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
    """True if parse_config failed on values that do not go together, not on a value that
    is wrong in itself: a front-end that cannot be built (shape, lookahead, lookaside and
    lanes), or a back-end's bits with the array's columns or the memory element."""
    return isinstance(error.__context__, FrontendError) or isinstance(error, CombinationError)


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


def _workload_error(config: Config, checked: dict) -> ConfigError | None:
    """The error of building `config`'s workload, or None. `checked` caches the answer by
    what `_check_workload` reads (not sparsity, batch or seed), so each distinct workload is
    built once however many points share it."""
    wl = config.workload
    key = (wl.network, wl.trace, wl.image_size, wl.num_classes, wl.dense_layers,
           config.passes if wl.trace else None)
    if key not in checked:
        try:
            _check_workload(config)
            checked[key] = None
        except ConfigError as e:
            checked[key] = e
    return checked[key]


def _format_count(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"about 10^{len(str(n)) - 1}"


def check_size(src: str, swept: dict[str, list], max_points: int) -> int:
    """The number of points (the product of the lists' lengths); ConfigError if it is over
    `max_points`. Nothing is built."""
    lengths = [len(values) for values in swept.values()]
    total = math.prod(lengths)
    if total > max_points:
        shape = " x ".join(map(str, lengths)) if len(lengths) <= 8 else f"{len(lengths)} lists"
        raise ConfigError(f"{src}: sweep: expected at most {max_points:,} points (the product of "
                          f"the value lists' lengths), got {_format_count(total)} ({shape}); "
                          "split the sweep, or allow more with --max-points N")
    return total


def _validate(src: str, base_src: str | None, base: _Base, points: Points, label: str,
              progress: bool) -> tuple[PlannedPoints, list[tuple[Point, str]]]:
    """Parse every point and check its workload, one point at a time; raise the first error
    as one line. Returns the valid points and the front-end combinations that cannot be
    built, with why. A progress bar shows if this takes over a second (and `progress`)."""
    from tqdm.auto import tqdm

    messages = _Messages(src, base_src)
    planned = PlannedPoints(points, base)
    combos: list[tuple[Point, str]] = []
    checked: dict = {}
    with tqdm(points, total=len(points), desc=f"{label}: validating", unit="point", delay=1.0,
              leave=False, disable=True if not progress else None) as bar:
        for position, point in enumerate(bar):
            try:
                config = parse_config(base.mapping(point), POINT_SOURCE)
            except ConfigError as e:
                if not _frontend_combination(e):
                    raise messages(e, point) from None
                combos.append((point, "{}: {}".format(*_Messages.split(e))))
                continue
            error = _workload_error(config, checked)
            if error is not None:
                raise messages(error, point) from None
            planned.add(position, point_id(config))
    return planned, combos


def _check_combinations(src: str, planned: PlannedPoints, combos: list[tuple[Point, str]]) -> None:
    """ConfigError if a value of a skipped point builds in no valid point at all."""
    if not combos:
        return
    valid = {(k, i) for p in planned for k, i in zip(p.point.keys, p.point.indices)}
    for point, why in combos:
        for k, i, v in zip(point.keys, point.indices, point.values):
            if (k, i) not in valid:
                raise ConfigError(f"{src}: sweep.{k}[{i}]: expected a value that some point of "
                                  f"the sweep can build, got {_show(v)}: every point with it fails "
                                  f"({why})")


def load_sweep(path: str | os.PathLike, max_points: int = MAX_POINTS,
               progress: bool = False) -> Sweep:
    """Read a sweep file, refuse it if it has more than `max_points` points, and validate
    every point (raises ConfigError with one line on the first problem; see the module
    docstring). `progress`: a bar while validating, if that takes over a second."""
    path = Path(path)
    src = safe_yaml.cut(path, 200)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: expected a mapping with keys base and sweep, got {_show(data)}")
    unknown = [k for k in data if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(f"{src}: {unknown[0]}: expected one of the known keys "
                          f"({', '.join(SWEEP_KEYS)}); unknown key")
    name = data.get("name", "".join(c for c in path.stem if c.isalnum() or c in "-_.") or "sweep")
    if (not isinstance(name, str) or not name or name.startswith(".")
            or not all(c.isalnum() or c in "-_." for c in name)):
        raise ConfigError(f"{src}: name: expected letters, digits, '-', '_' or '.' (it names the "
                          f"output directory reports/<name>), got {_show(name)}")
    output = data.get("output") or {}
    if not isinstance(output, dict) or set(output) - {"dir"}:
        raise ConfigError(f"{src}: output: expected a mapping with the key dir, got {_show(output)}")
    out_dir = output.get("dir")
    if out_dir is not None and (not isinstance(out_dir, str) or not out_dir):
        raise ConfigError(f"{src}: output.dir: expected a non-empty string, got {_show(out_dir)}")

    base = data.get("base")
    if isinstance(base, str) and base:
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        base_src = str(base_path)
        base_data = read_yaml(base_path, f"{src}: base: expected a config file (relative to the "
                               f"sweep file), got {_show(base)}: no such file {safe_yaml.cut(repr(base_src), 200)}")
        if not isinstance(base_data, dict):
            raise ConfigError(f"{base_src}: (top level): expected a mapping, got {_show(base_data)}")
        base_dir = base_path.parent
    elif isinstance(base, dict):
        base_src, base_data, base_dir = None, base, path.parent
    else:
        raise ConfigError(f"{src}: base: expected a config file name (relative to the sweep "
                          f"file) or an inline config mapping, got {_show(base)}")
    swept = parse_sweep_mapping(src, data.get("sweep"))
    check_size(src, swept, max_points)
    for key in swept:
        try:
            set_key(base_data, key, None)
        except TypeError as e:
            raise ConfigError(f"{src}: sweep.{key}: expected a key through mappings of the base "
                              f"config, but {e} is not a mapping there") from None

    planned, combos = _validate(src, base_src, _Base(base_data, base_dir), Points(swept), name,
                                progress)
    _check_combinations(src, planned, combos)
    return Sweep(name=name, source=src, keys=tuple(swept), points=planned, skipped=combos,
                 output_dir=Path(out_dir) if out_dir else None)


# --- running points --------------------------------------------------------------------------------

def run_point(mapping: dict, source: str = POINT_SOURCE) -> pd.DataFrame:
    """Simulate one point from its config mapping (plain data): the function workers run."""
    from .api import run

    return run(parse_config(mapping, source), quiet=True)


class _Tasks(Sequence):
    """The executor tasks `(id, (mapping, source))` of `points`, each built when the
    executor takes it, so only the points in flight have a config mapping in memory."""

    def __init__(self, points: Sequence[PlannedPoint]):
        self.points = points

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> tuple[str, tuple]:
        point = self.points[i]
        return point.id, (point.mapping, POINT_SOURCE)


def run_points(points: Sequence[PlannedPoint], executor,
               on_done: Callable[[PlannedPoint, pd.DataFrame], None] | None = None) -> int:
    """Run `points` on `executor`; call `on_done(point, rows)` as each finishes (in finishing
    order; the rows are not kept). Returns how many ran. An error of a point is raised with
    `sweep_task` set to the point's index in `points`."""
    ran = 0
    for i, rows in executor.map_unordered(run_point, _Tasks(points)):
        ran += 1
        if on_done is not None:
            on_done(points[i], rows)
    return ran


# --- merging ---------------------------------------------------------------------------------------

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
              on_done: Callable[[PlannedPoint, pd.DataFrame], None] | None = None,
              todo: list[PlannedPoint] | None = None) -> SweepRun:
    """Run the points not yet finished (`todo`, default `pending(sweep, out_dir)`), each
    stored as it finishes, then merge every point into `results.csv` and `summary.csv` in
    `out_dir`."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    if todo is None:
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
    results_path = write_results(results, out_dir / "results.csv")
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
