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

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .config import ConfigError, parse_config
from .outputs import write_atomic
from .results import write_results
from .sweep_load import (PlannedPoint, PlannedPoints, Sweep, _Messages, check_size,  # noqa: F401
                         load_sweep, parse_sweep_mapping)
from .sweep_points import (MAX_POINTS, POINT_SOURCE, SWEEP_KEYS, Point, Points, apply,  # noqa: F401
                           expand, format_value, point_id, set_key, short_names)
from .sweep_store import (FINISHED, MISSING, UNFINISHED, StoredPoints, check_points_dir,  # noqa: F401
                          finished, pending, point_path, read_point, read_point_file, scan_points,
                          store_point)

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
