"""Time `accelsim run CONFIG` end to end and report wall time and peak memory.

Usage: python benchmarks/bench_run.py [CONFIG] [--repeat N]

Runs the installed `accelsim` as a child process (so numba compilation, YAML parsing
and CSV writing are all counted, as a user would see them), `--repeat` times, and
prints the best and median wall time and the peak resident memory of the child
(ru_maxrss of the children, Linux: KiB). Targets for configs/tactical.yaml: see README.
Not run as a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/tactical.yaml")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    exe = shutil.which("accelsim")
    cmd = [exe] if exe else [sys.executable, "-m", "simulator.cli"]
    walls = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([*cmd, "run", args.config, "-q", "--out", out], check=True,
                           stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - t0)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"config:      {args.config}")
    print(f"machine:     {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"wall time:   best {min(walls):.1f} s, median {statistics.median(walls):.1f} s "
          f"over {len(walls)} runs (first run includes numba compilation unless cached)")
    print(f"peak memory: {peak_mib:.0f} MiB (max resident set of one run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
