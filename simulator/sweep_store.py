"""Resumable storage of a sweep's finished points: ``points/<id>.csv`` in the output directory.

Each finished point is stored as ``points/<id>.csv`` (its rows without
the key columns, written atomically) as soon as it finishes, where `<id>` is a stable
hash of the point's *resolved* config (the parsed `Config` with defaults filled in, minus
its name, output and source, plus the accelsim version). The file is the CSV followed by
one end line, ``# accelsim sweep point <id>: <n> rows, <b> bytes, sha256 <digest>``,
where <b> and <digest> are the CSV's length and SHA-256. A point is *finished* only if
its file is a regular file ending in the end line of its own id whose length and digest
match and whose CSV has <n> rows holding what `accelsim run` writes
(`results.check_rows`: no NaN cycles or negative speedups under a forged digest). A re-run skips finished points and
rebuilds the merged CSVs from the point files, so an interrupted sweep (Ctrl-C, a lost
worker) loses at most the points that were running. A regular file that is not finished
(truncated, corrupt, empty, someone else's) is run again, with a note, and replaced
atomically; anything else at that path (a directory, FIFO, device or symlink), or a
``points`` that is not a directory, is a one-line error: we never replace what we did not
create. Points are keyed by what they simulate, not by the sweep, so growing a sweep
reuses what is done. The hash does not cover the simulator's code or a trace's contents:
delete ``points/`` after changing either.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .config import ConfigError
from .outputs import file_kind, write_atomic

if TYPE_CHECKING:  # sweep.py imports this module
    from .sweep import PlannedPoint, Sweep


# The last line of a point file: says the file is complete, whose it is, and what it holds.
END_LINE = re.compile(rb"# accelsim sweep point (?P<id>[0-9a-f]{16}): (?P<rows>[0-9]{1,12}) rows, "
                      rb"(?P<size>[0-9]{1,15}) bytes, sha256 (?P<digest>[0-9a-f]{64})\n")
END_MAX = 200  # bytes: an end line is shorter than this
MISSING, UNFINISHED, FINISHED = "missing", "unfinished", "finished"


def point_path(out_dir: Path, point: PlannedPoint) -> Path:
    return Path(out_dir) / "points" / f"{point.id}.csv"


def point_file_bytes(id: str, rows: pd.DataFrame) -> bytes:
    """What a point file holds: the rows as CSV, then the end line (see the module docstring)."""
    body = rows.to_csv(index=False).encode()
    end = (f"# accelsim sweep point {id}: {len(rows)} rows, {len(body)} bytes, "
           f"sha256 {hashlib.sha256(body).hexdigest()}\n")
    return body + end.encode()


def store_point(out_dir: Path, point: PlannedPoint, rows: pd.DataFrame) -> Path:
    """Write the point file (atomically, replacing an unfinished regular file)."""
    return write_atomic(point_path(out_dir, point), point_file_bytes(point.id, rows))


def _not_a_point_file(path: Path, mode: int) -> ConfigError:
    return ConfigError(f"{path}: expected a point file (a regular file) or nothing, got "
                       f"{file_kind(mode)}; it is not ours to replace: move it away or delete it")


def _cannot_read(path: Path, e: OSError) -> ConfigError:
    return ConfigError(f"{path}: cannot read this point file ({e.strerror or e})")


def _open_point_file(path: Path) -> int | None:
    """A read-only descriptor of the regular file at `path`, or None if nothing is there.
    ConfigError for anything else there (a directory, FIFO, device or symlink, which is
    neither opened nor followed) or a file that cannot be read."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _cannot_read(path, e) from None
    if not stat.S_ISREG(mode):
        raise _not_a_point_file(path, mode)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _cannot_read(path, e) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # swapped since the lstat
        os.close(fd)
        raise _not_a_point_file(path, mode)
    return fd


def read_point_file(path: Path, id: str) -> tuple[str, bytes, int]:
    """(state, CSV, rows) of the point file of point `id` at `path`: MISSING, UNFINISHED (a
    regular file without a valid end line of this id, of another length or digest, or whose
    rows are not what `accelsim run` writes: truncated, corrupt, empty, forged or not ours)
    or FINISHED with its CSV and row count. A file without a valid end line is read no
    further than its last END_MAX bytes. ConfigError if the entry is not a regular file or
    cannot be read."""
    state, body, n, _ = _read_point_rows(path, id)
    return state, body, n


def _parse_rows(body: bytes, n: int) -> pd.DataFrame | None:
    """The `n` rows of a point file's CSV exactly as written (no text is taken for a missing
    value), or None unless they parse, are `n`, and pass `results.check_rows` with every
    column `accelsim run` writes."""
    from .results import COLUMNS, check_rows  # as `sweep.merge` does: the simulator's modules

    try:
        rows = pd.read_csv(io.BytesIO(body), keep_default_na=False, na_values=[""])
    except (ValueError, OverflowError):  # pandas' parser and empty-data errors are ValueErrors
        return None
    if len(rows) != n:
        return None
    try:
        check_rows(rows, required=COLUMNS)
    except ValueError:  # a value `accelsim run` cannot write: the digest was forged
        return None
    return rows


def _read_point_rows(path: Path, id: str) -> tuple[str, bytes, int, pd.DataFrame | None]:
    """`read_point_file`, with the parsed rows of a FINISHED file."""
    fd = _open_point_file(path)
    if fd is None:
        return MISSING, b"", 0, None
    try:
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - END_MAX))
            tail = f.read(END_MAX)
            start = tail.rfind(b"\n", 0, len(tail) - 1) + 1
            end = END_LINE.fullmatch(tail[start:])
            if (end is None or end["id"].decode() != id
                    or int(end["size"]) != size - (len(tail) - start)):
                return UNFINISHED, b"", 0, None
            f.seek(0)
            body = f.read(int(end["size"]))
    except OSError as e:
        raise _cannot_read(path, e) from None
    if len(body) != int(end["size"]) or hashlib.sha256(body).hexdigest() != end["digest"].decode():
        return UNFINISHED, b"", 0, None
    rows = _parse_rows(body, int(end["rows"]))
    if rows is None:
        return UNFINISHED, b"", 0, None
    return FINISHED, body, int(end["rows"]), rows


def read_point(out_dir: Path, point: PlannedPoint) -> pd.DataFrame:
    """A finished point's rows, exactly as written (no text is taken for a missing value).
    ConfigError if its file is not finished (it changed since the sweep checked it)."""
    path = point_path(out_dir, point)
    state, _, _, rows = _read_point_rows(path, point.id)
    if rows is None:
        raise ConfigError(f"{path}: expected a finished point file, got one that is "
                          f"{'missing' if state == MISSING else 'incomplete or not ours'} (it "
                          "changed while the sweep ran); the same command reruns that point")
    return rows


@dataclass
class StoredPoints:
    """What `points/` holds for a sweep: the ids of finished points, and the paths of
    regular files that are not finished (their points run again and replace them)."""

    finished: set[str] = field(default_factory=set)
    unfinished: list[Path] = field(default_factory=list)


def check_points_dir(out_dir: Path) -> Path:
    """`out_dir/points`; ConfigError if something other than a directory (or a symlink to
    one) is there."""
    points = Path(out_dir) / "points"
    try:
        mode = os.stat(points).st_mode
    except FileNotFoundError:
        if os.path.lexists(points):
            raise ConfigError(f"{points}: expected a directory of finished sweep points (or "
                              "nothing), got a dangling symlink") from None
        return points
    except OSError as e:
        raise ConfigError(f"{points}: cannot read this directory ({e.strerror or e})") from None
    if not stat.S_ISDIR(mode):
        raise ConfigError(f"{points}: expected a directory of finished sweep points (or nothing), "
                          f"got {file_kind(mode)}; move it away or choose another output directory")
    return points


def scan_points(sweep: Sweep, out_dir: Path, progress: bool = False) -> StoredPoints:
    """Check the point file of every point of `sweep` in `out_dir` (see the module
    docstring). ConfigError (one line) if `points` is not a directory or a point's entry is
    not a regular file. `progress`: a bar if this takes over a second."""
    from tqdm.auto import tqdm

    points = check_points_dir(out_dir)
    stored = StoredPoints()
    if not points.exists():
        return stored
    ids = list(dict.fromkeys(sweep.points.ids))  # once each, should two points be the same
    for id in tqdm(ids, desc=f"{sweep.name}: reading points/", unit="file", delay=1.0,
                   leave=False, disable=True if not progress else None):
        state, _, _ = read_point_file(points / f"{id}.csv", id)
        if state == FINISHED:
            stored.finished.add(id)
        elif state == UNFINISHED:
            stored.unfinished.append(points / f"{id}.csv")
    return stored


def pending(sweep: Sweep, out_dir: Path, stored: StoredPoints | None = None) -> list[PlannedPoint]:
    """The points of `sweep` not finished in `out_dir` (once each, should two points resolve
    to the same config). `stored`: `scan_points` of `out_dir`, if already made."""
    stored = scan_points(sweep, out_dir) if stored is None else stored
    todo: dict[str, PlannedPoint] = {}
    for p in sweep.points:
        if p.id not in stored.finished and p.id not in todo:
            todo[p.id] = p
    return list(todo.values())


def finished(sweep: Sweep, out_dir: Path, stored: StoredPoints | None = None) -> int:
    """How many points of `sweep` are finished in `out_dir`."""
    stored = scan_points(sweep, out_dir) if stored is None else stored
    return sum(id in stored.finished for id in sweep.points.ids)
