"""The points of a sweep: the Cartesian product of its value lists, a point's config and id.

See `simulator.sweep` for the sweep file and what a point is. Units: none (points are
positions in the product; ids are 16 hex digits of a SHA-256 of the resolved config).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import __version__, safe_yaml
from .config import Config

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
