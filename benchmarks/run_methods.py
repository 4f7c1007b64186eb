"""Train every sparsity method at one budget, record traces, and compare them on the accelerator.

Usage:
    python benchmarks/run_methods.py [--network resnet50] [--sparsity 0.8 0.9]
        [--methods swat-u swat-erk swat-m swat-structured saw meprop topkast]
        [--iterations 200] [--jobs 2] [--eval-limit 2000] [--traces traces/methods]
        [--runs runs/methods] [--out reports/methods]
        [--configs configs/tactical.yaml configs/table11-closest.yaml]

Each (method, sparsity) and one dense run is `accelsim trace-from-training NETWORK` with the
network's recipe except `--iterations` (the same budget for every method), one BLAS thread
per job and `--jobs` jobs at once, recorded at the native size (224x224 for ResNet-50) on
one sample. Finished runs (their summary.yaml exists) are kept; interrupted ones resume
from their checkpoint. Then every trace is simulated on every config
(`trained_vs_synthetic.summary_rows`) and the script prints, per config, a Markdown table
of compute-only and with-memory speedups, DRAM traffic reduction and test accuracy, and
writes OUT/methods.csv. Not a test: about 8 minutes per run of 200 ResNet-50 iterations
with one thread on the 2-core machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import simulator  # noqa: E402
from simulator.config import Workload  # noqa: E402
from trained_vs_synthetic import summary_rows  # noqa: E402

METHODS = ["swat-u", "swat-erk", "swat-m", "swat-structured", "saw", "meprop", "topkast"]


def train(network: str, method: str, sparsity: float, args) -> tuple[Path, Path]:
    name = f"{network}-{method}-{round(sparsity * 100)}"
    trace, run = Path(args.traces) / name, Path(args.runs) / name
    if (run / "summary.yaml").is_file():
        return trace, run
    cmd = [sys.executable, "-m", "simulator.cli", "trace-from-training", network, "--method", method,
           "--sparsity", str(sparsity), "--iterations", str(args.iterations), "--threads", "1", "-q",
           "--eval-limit", str(args.eval_limit), "--out", str(trace), "--run-dir", str(run)]
    if (run / "checkpoint.npz").is_file():
        cmd.append("--resume")
    print(f"start {name}", file=sys.stderr, flush=True)
    log = Path(args.runs) / f"{name}.out"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {done.returncode}); see {log}")
    print(f"done  {name}", file=sys.stderr, flush=True)
    return trace, run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="resnet50")
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.8, 0.9])
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--eval-limit", type=int, default=2000)
    ap.add_argument("--traces", default="traces/methods")
    ap.add_argument("--runs", default="runs/methods")
    ap.add_argument("--out", default="reports/methods")
    ap.add_argument("--configs", nargs="+", default=[str(ROOT / "configs/tactical.yaml"),
                                                      str(ROOT / "configs/table11-closest.yaml")])
    args = ap.parse_args()
    jobs = [("dense", 0.0)] + [(m, s) for s in args.sparsity for m in args.methods]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda j: (j, train(args.network, j[0], j[1], args)), jobs))
    rows = []
    for (method, sparsity), (trace, run) in done:
        accuracy = yaml.safe_load((run / "summary.yaml").read_text())["test_accuracy"]
        if method == "dense":
            continue
        for cpath in args.configs:
            base = simulator.load_config(cpath)
            print(f"simulate {Path(cpath).stem}: {trace}", file=sys.stderr, flush=True)
            cfg = replace(base, workload=Workload(trace=str(trace)))
            for r in summary_rows(cfg, Path(cpath).stem, "trained", {"method": method, "sparsity": sparsity}):
                rows.append({**r, "test_accuracy": accuracy})
    dense_accuracy = next(yaml.safe_load((run / "summary.yaml").read_text())["test_accuracy"]
                          for (m, _), (_, run) in done if m == "dense")
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "methods.csv", index=False)
    print(f"dense test accuracy at this budget: {dense_accuracy:.2%}\n")
    for cfg, g in df.groupby("config"):
        print(f"{cfg} (compute only / with memory):\n")
        print("| method | sparsity | forward | backward | iteration | DRAM reduction (iteration) | test accuracy |")
        print("|---|---|---|---|---|---|---|")
        for (method, sp), h in g.groupby(["method", "sparsity"], sort=False):
            cell = {r.phase: f"{r.compute_speedup:.2f}x / {r.speedup:.2f}x" for r in h.itertuples()}
            it = h[h.phase == "iteration"].iloc[0]
            print(f"| {method} | {sp:.0%} | {cell['forward']} | {cell['backward']} | {cell['iteration']} | "
                  f"{it.dram_reduction:.2f}x | {it.test_accuracy:.2%} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
