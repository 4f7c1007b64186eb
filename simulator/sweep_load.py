"""Reading and validating a sweep file: every point checked before anything runs.

See `simulator.sweep` for the file format, the combinations skipped and the messages.
"""

from __future__ import annotations

import math
import os
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import safe_yaml
from .config import CombinationError, Config, ConfigError, parse_config, read_yaml
from .frontend import FrontendError
from .sweep_points import MAX_POINTS, POINT_SOURCE, SWEEP_KEYS, Point, Points, _show, apply, point_id, set_key

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
