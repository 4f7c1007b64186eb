"""Which Bit-Tactical-class array reproduces SWAT's Table 11? (compute cycles only)

Usage: python benchmarks/table11_study.py [--out reports/table11] [--workers 2] [--quick]

SWAT-U on ResNet-50 (synthetic tensors of configs/tactical.yaml: 224x224, batch 1, seed 0,
conv1 dense) at 80% and 90%, all three passes lowered as tactical.yaml does, on arrays of
256 filter lanes x 16 weight lanes (tiles x rows = 256), one window per cycle. Memory is
left out: SWAT's simulator has no DRAM model, and Table 11 is about the array.

Stage 1 sweeps the front-end: shapes T and L, lookahead h = 1..8, lookaside d in
{0, 1, 3, 5, 7, 11, 15} where 16 lanes can place it, both T patterns, all five schedulers,
first layer padded and space-to-depth, 16 rows per tile, lockstep. Stage 2 takes the
stage-1 configurations closest to Table 11 and varies rows per tile (16, 4, 1; tiles =
256 / rows, the same peak) and lockstep (on, off).

Two scorings, both over summed cycles (never averaged per-layer speedups):
- SWAT's (A.5): forward = forward pass; backward = the input gradient run as a forward
  convolution, first layer skipped; training = plain mean of forward and backward
  speedups. Table 11: 3.3/5.6 forward, 3.4/6.3 backward, 3.3/5.9 training (80%/90%).
- ours: backward = input gradient + weight gradient; iteration = all three passes.
The error of a configuration is the RMS of log(ours / paper) over the four forward and
backward numbers; per number, the closest configuration is reported too.

Writes `stage1.csv`, `stage2.csv` (one row per configuration and sparsity), `scored.csv` and
`table11.png` / `.svg` (atomically). Points already stored in a stage's CSV are read, not
rerun (new points are appended): delete the CSVs after changing the simulator. Takes about an hour of CPU on the 2-core machine
(`--quick`: a few configurations, for a smoke test).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.array import time_streams
from simulator.config import Architecture, Lowering
from simulator.frontend import SCHEDULERS, Frontend, FrontendError, connectivity
from simulator.simulate import PassPlan
from workloads.networks import build_network
from workloads.synthetic import synthetic_layers

TABLE11 = {("forward", 0.8): 3.3, ("forward", 0.9): 5.6, ("backward", 0.8): 3.4, ("backward", 0.9): 6.3}
TRAINING = {0.8: 3.3, 0.9: 5.9}
SPARSITIES = (0.8, 0.9)
LOOKASIDES = (0, 1, 3, 5, 7, 11, 15)
PASSES = ("forward", "input_grad", "weight_grad")

_STREAMS: dict = {}  # sparsity -> [(pass, mapping, [(nonzero, windows)])], built before forking
MAPPINGS = ("pad", "space-to-depth")


def build_streams(lanes: int = 16) -> dict:
    """The scheduled operands' non-zero masks of every layer pass, per sparsity. conv1's
    forward pass is held under both first-layer mappings (mapping "pad" or
    "space-to-depth"); every other pass under mapping None (the same for both)."""
    net = build_network("resnet50", image_size=224)
    out = {}
    for sparsity in SPARSITIES:
        layers = list(synthetic_layers(net, sparsity, 1, 0))
        rows = []
        for index, layer in enumerate(layers):
            for pas in PASSES:
                mappings = MAPPINGS if (index == 0 and pas == "forward") else (None,)
                for mapping in mappings:
                    plan = PassPlan(PASSES, Lowering(first_layer=mapping or "pad"))
                    if not plan.applies(pas, index):
                        continue
                    lowered = plan.lower(layer, pas, lanes, index)
                    parts = []
                    for part in lowered.parts:
                        sched, bcast = lowered.operands(part)
                        parts.append((sched != 0, bcast.shape[1]))
                    rows.append((pas, mapping, parts))
        out[sparsity] = rows
    return out


def evaluate_point(point: dict) -> list[dict]:
    """Compute cycles of one configuration at both sparsities, both first-layer mappings."""
    fe = Frontend(point["shape"], point["lookahead"], point["lookaside"], point["pattern"], None,
                  point["scheduler"])
    arch = Architecture(tiles=256 // point["rows"], rows=point["rows"], lanes=16, frontend=fe,
                        lockstep=point["lockstep"])
    results = []
    for sparsity in SPARSITIES:
        cycles = {m: dict.fromkeys(PASSES, 0) for m in MAPPINGS}
        dense = {m: dict.fromkeys(PASSES, 0) for m in MAPPINGS}
        for pas, mapping, parts in _STREAMS[sparsity]:
            for nonzero, windows in parts:
                t = time_streams(nonzero, windows, arch)
                for m in (MAPPINGS if mapping is None else (mapping,)):
                    cycles[m][pas] += t.cycles
                    dense[m][pas] += t.dense_cycles
        for m in MAPPINGS:
            c, d = cycles[m], dense[m]
            row = dict(point, first_layer=m, sparsity=sparsity)
            for pas in PASSES:
                row[f"{pas}_speedup"] = d[pas] / c[pas]
            bwd = ("input_grad", "weight_grad")
            row["backward_speedup"] = sum(d[p] for p in bwd) / sum(c[p] for p in bwd)
            row["iteration_speedup"] = sum(d.values()) / sum(c.values())
            row["swat_training_speedup"] = (row["forward_speedup"] + row["input_grad_speedup"]) / 2
            results.append(row)
    return results


def _init(streams):
    global _STREAMS
    _STREAMS = streams
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")


def stage1_points(quick: bool) -> list[dict]:
    points = []
    for shape, pattern in (("T", "spread"), ("T", "dnnsim"), ("L", "spread")):
        for h, d in itertools.product(range(1, 9), LOOKASIDES):
            try:
                connectivity(Frontend(shape, h, d, pattern), 16)
            except FrontendError:
                continue
            if shape == "T" and pattern == "dnnsim" and d == 0:
                continue  # same as spread
            for scheduler in SCHEDULERS:
                points.append(dict(shape=shape, lookahead=h, lookaside=d, pattern=pattern,
                                   scheduler=scheduler, rows=16, lockstep=True))
    if quick:
        points = [p for p in points if p["lookahead"] in (2, 8) and p["lookaside"] in (5, 15)]
    return points


def score(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: SWAT-definition speedups and the RMS log error."""
    keys = ["shape", "lookahead", "lookaside", "pattern", "scheduler", "first_layer", "rows", "lockstep"]
    wide = df.pivot_table(index=keys, columns="sparsity",
                          values=["forward_speedup", "input_grad_speedup", "backward_speedup",
                                  "iteration_speedup", "swat_training_speedup"])
    wide.columns = [f"{v.replace('_speedup', '')}_{int(round(s * 100))}" for v, s in wide.columns]
    logs = [np.log(wide[f"{'forward' if p == 'forward' else 'input_grad'}_{int(s * 100)}"] / v)
            for (p, s), v in TABLE11.items()]
    wide["rms_log_error"] = np.sqrt(sum(x ** 2 for x in logs) / len(logs))
    return wide.reset_index().sort_values("rms_log_error")


def run(points, streams, workers):
    from tqdm import tqdm
    rows = []
    if workers > 1:
        with get_context("fork").Pool(workers, _init, (streams,)) as pool:
            for r in tqdm(pool.imap(evaluate_point, points), total=len(points), desc="configurations"):
                rows.extend(r)
    else:
        _init(streams)
        for p in tqdm(points, desc="configurations"):
            rows.extend(evaluate_point(p))
    return pd.DataFrame(rows)


POINT_KEYS = ["shape", "lookahead", "lookaside", "pattern", "scheduler", "rows", "lockstep"]


class Lazy:
    """The streams, built on first use (a rerun with every point stored needs none)."""

    def __init__(self, build):
        self.build, self.value = build, None

    def get(self):
        if self.value is None:
            t0 = time.time()
            self.value = self.build()
            print(f"streams built in {time.time() - t0:.0f} s", file=sys.stderr)
        return self.value


def run_missing(path: Path, points: list[dict], streams: Lazy, workers: int) -> pd.DataFrame:
    """The rows of `points`: those stored in `path` are read, the rest run and appended."""
    done = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=POINT_KEYS)
    stored = {tuple(r) for r in done[POINT_KEYS].astype(str).itertuples(index=False)}
    todo = [p for p in points if tuple(str(p[k]) for k in POINT_KEYS) not in stored]
    if todo:
        done = pd.concat([done, run(todo, streams.get(), workers)], ignore_index=True)
        write_csv(done, path)
    wanted = {tuple(str(p[k]) for k in POINT_KEYS) for p in points}
    keep = [tuple(r) in wanted for r in done[POINT_KEYS].astype(str).itertuples(index=False)]
    return done[keep]


def write_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def plot(scored: pd.DataFrame, out: Path) -> None:
    """Best configuration per family against Table 11, SWAT's definitions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["forward 80%", "forward 90%", "backward 80%", "backward 90%"]
    cols = ["forward_80", "forward_90", "input_grad_80", "input_grad_90"]
    picks = [("DNNsim (T<2,5>, dnnsim, s2d)",
              (scored["shape"] == "T") & (scored["lookahead"] == 2) & (scored["lookaside"] == 5)
              & (scored["scheduler"] == "dnnsim") & (scored["first_layer"] == "space-to-depth")
              & (scored["rows"] == 16) & scored["lockstep"]),
             ("tactical.yaml (T<2,5>, fewest-candidates, s2d)",
              (scored["shape"] == "T") & (scored["lookahead"] == 2) & (scored["lookaside"] == 5)
              & (scored["scheduler"] == "fewest-candidates") & (scored["pattern"] == "spread")
              & (scored["first_layer"] == "space-to-depth") & (scored["rows"] == 16) & scored["lockstep"]),
             ("closest with space-to-depth", scored["first_layer"] == "space-to-depth"),
             ("closest, 16 rows, lockstep", (scored["rows"] == 16) & scored["lockstep"]),
             ("closest of all", scored["rows"] > 0)]
    fig, ax = plt.subplots(figsize=(9, 6), layout="constrained")
    x = np.arange(len(labels))
    width = 0.8 / (len(picks) + 1)
    ax.bar(x - 0.4 + width / 2, [TABLE11[k] for k in TABLE11], width, label="SWAT Table 11",
           color="black")
    for i, (name, mask) in enumerate(picks):
        sel = scored[mask]
        if sel.empty:
            continue
        best = sel.iloc[0]
        desc = (f"{best['shape']}<{best['lookahead']},{best['lookaside']}> {best['pattern']} pattern, "
                f"{best['scheduler']}, conv1 {best['first_layer']}, {best['rows']} row"
                f"{'' if best['rows'] == 1 else 's'}/tile{'' if best['lockstep'] else ', decoupled'}")
        ax.bar(x - 0.4 + width * (i + 1.5), [best[c] for c in cols], width,
               label=f"{name}: {desc} (error {best['rms_log_error']:.2f})")
    ax.set_xticks(x, labels)
    ax.set_ylabel("compute speedup over the dense array")
    ax.set_title("ResNet-50, SWAT-U: Table 11 against Bit-Tactical-class arrays (SWAT's definitions)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=1, frameon=False)
    for ext in ("png", "svg"):
        path = out / f"table11.{ext}"
        tmp = path.with_name(f".{path.stem}.tmp.{ext}")
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/table11")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--finalists", type=int, default=8, help="stage-1 configurations taken to stage 2")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    streams = Lazy(build_streams)
    df1 = run_missing(out / "stage1.csv", stage1_points(args.quick), streams, args.workers)
    s1 = score(df1)
    finalists = s1.head(args.finalists)
    # the reference points too: DNNsim's and tactical.yaml's configurations
    ref = s1[(s1["shape"] == "T") & (s1["lookahead"] == 2) & (s1["lookaside"] == 5)
             & (s1["first_layer"] == "space-to-depth") & (s1["pattern"] == "spread")]
    base = pd.concat([finalists, ref]).drop_duplicates(
        ["shape", "lookahead", "lookaside", "pattern", "scheduler"])
    points = []
    for _, r in base.iterrows():
        for rows, lockstep in itertools.product((16, 4, 1), (True, False)):
            if rows == 16 and lockstep:
                continue
            points.append(dict(shape=r["shape"], lookahead=int(r["lookahead"]),
                               lookaside=int(r["lookaside"]), pattern=r["pattern"],
                               scheduler=r["scheduler"], rows=rows, lockstep=lockstep))
    df2 = run_missing(out / "stage2.csv", points, streams, args.workers)
    scored = score(pd.concat([df1, df2]))
    write_csv(scored, out / "scored.csv")
    plot(scored, out)
    pd.set_option("display.width", 200)
    print(scored.head(15).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for (p, s), v in TABLE11.items():
        col = f"{'forward' if p == 'forward' else 'input_grad'}_{int(s * 100)}"
        best = scored.iloc[(np.log(scored[col] / v)).abs().argsort().iloc[0]]
        print(f"closest to {p} {s:.0%} = {v}x: {best[col]:.2f}x with "
              f"{best['shape']}<{best['lookahead']},{best['lookaside']}> {best['pattern']} "
              f"{best['scheduler']} {best['first_layer']} rows={best['rows']} lockstep={best['lockstep']}")
    print(f"total {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
