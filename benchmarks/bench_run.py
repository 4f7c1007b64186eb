"""Time `accelsim run` end to end and report wall time and peak memory.

Usage:
    python benchmarks/bench_run.py [CONFIG] [--repeat N] [--workers N]
    python benchmarks/bench_run.py [CONFIG] --batch 1 32 256 [--sparsity 0.8] [--repeat N]

Each run is a child process that runs the CLI's `main` (so imports, numba's cache,
YAML parsing, the simulation and CSV writing are all counted, as a user sees them) and
then reports its own VmHWM, the peak resident memory of the process and all its
threads. The first form times CONFIG as it is; `--batch` times CONFIG's workload at
each batch size with one sparsity (`--sparsity`) and all three passes, the README's
"Realistic batches" table. Wall times are the best and the median of `--repeat` runs
after one untimed warm-up run (numba's cache warm; with --batch, before the first batch
only). Not run as a test: timings depend
on the machine, and nothing else may run while it measures.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

CHILD = """
import sys
from simulator.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0])
sys.exit(code)
"""


def run_once(config: Path, out: str, workers: int | None) -> tuple[float, float]:
    """(wall seconds, peak MiB) of one `accelsim run CONFIG` in a child process."""
    with tempfile.NamedTemporaryFile("r", suffix=".hwm") as hwm:
        cmd = [sys.executable, "-c", CHILD, hwm.name, "run", str(config), "-q", "--out", out,
               "--max-memory", "1000"]
        if workers:
            cmd += ["--workers", str(workers)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        return wall, int(hwm.read()) / 1024  # VmHWM is in kB


def measure(config: Path, repeat: int, workers: int | None, warm_up: bool = True
            ) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as out:
        if warm_up:
            run_once(config, out, workers)  # numba's cache and the OS's file cache
        runs = [run_once(config, out, workers) for _ in range(repeat)]
    return [w for w, _ in runs], max(p for _, p in runs)


def with_batch(config: Path, batch: int, sparsity: float, directory: str) -> Path:
    data = yaml.safe_load(config.read_text())
    data.setdefault("workload", {}).update(batch=batch, sparsity=[sparsity])
    data["passes"] = ["forward", "input_grad", "weight_grad"]
    path = Path(directory) / f"{config.stem}-batch{batch}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/tactical.yaml", type=Path)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per case (default 3)")
    ap.add_argument("--workers", type=int, help="accelsim run --workers (default: its own, every core)")
    ap.add_argument("--batch", type=int, nargs="+", metavar="B", help="time these batch sizes instead")
    ap.add_argument("--sparsity", type=float, default=0.8, help="with --batch: the one sparsity (0.8)")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; workers: {args.workers or 'default (every core)'}")
    if not args.batch:
        walls, peak = measure(args.config, args.repeat, args.workers)
        print(f"config:      {args.config}")
        print(f"wall time:   best {min(walls):.1f} s, median {statistics.median(walls):.1f} s "
              f"over {len(walls)} runs (numba's cache warm)")
        print(f"peak memory: {peak:.0f} MiB (VmHWM of the run)")
        return 0
    print(f"{args.config}: one sparsity ({args.sparsity:.0%}), three passes")
    print(f"{'batch':>6}{'best s':>9}{'median s':>10}{'ms/sample':>11}{'peak MiB':>10}")
    with tempfile.TemporaryDirectory() as directory:
        for i, batch in enumerate(args.batch):
            walls, peak = measure(with_batch(args.config, batch, args.sparsity, directory),
                                  args.repeat, args.workers, warm_up=i == 0)
            print(f"{batch:>6}{min(walls):>9.1f}{statistics.median(walls):>10.1f}"
                  f"{1000 * min(walls) / batch:>11.0f}{peak:>10.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
