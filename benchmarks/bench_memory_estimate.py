"""The peak-memory estimate of `run` and `check` (simulator/footprint.py) against measured peaks.

Each case runs in its own process (so one peak does not hide another) and reports its
VmHWM (peak resident memory; not ru_maxrss, which a process started by fork and exec
inherits from its parent), the stream bytes of the largest chunk (`run`: uint8, one
chunk of the streamed simulation; `check`: float32, the whole pass) and the estimate. The
README's "Memory" paragraph quotes these numbers; the estimate must stay above every
measured peak.

    python benchmarks/bench_memory_estimate.py            # the README's cases, some minutes
    python benchmarks/bench_memory_estimate.py --quick    # two small cases
    python benchmarks/bench_memory_estimate.py --only tcl # the bit-serial back-ends' cases
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CASES = [  # (label, network, image size, batch, lanes, command, workers)
    ("resnet50 b1", "resnet50", 224, 1, 16, "run", 1),
    ("resnet50 b16", "resnet50", 224, 16, 16, "run", 1),
    ("resnet50 b32 2 workers", "resnet50", 224, 32, 16, "run", 2),
    ("resnet50 b256 2 workers", "resnet50", 224, 256, 16, "run", 2),
    ("resnet50 448px", "resnet50", 448, 1, 16, "run", 1),
    ("resnet50 64 lanes", "resnet50", 224, 1, 64, "run", 1),
    ("vgg16 b2", "vgg16", 224, 2, 16, "run", 1),
    ("vgg16 b32 2 workers", "vgg16", 224, 32, 16, "run", 2),
    ("mobilenet-v2 b8", "mobilenet-v2", 224, 8, 16, "run", 1),
    ("resnet50 b4 check", "resnet50", 224, 4, 16, "check", 1),
    ("resnet50 b1 tclp", "resnet50", 224, 1, 16, "run", 1, "tclp"),
    ("resnet50 b8 tcle 2 workers", "resnet50", 224, 8, 16, "run", 2, "tcle"),
    ("resnet50 b16 tclp", "resnet50", 224, 16, 16, "run", 1, "tclp"),
    ("resnet50 b1 tclp check", "resnet50", 224, 1, 16, "check", 1, "tclp"),
]
QUICK = [("resnet18-cifar b8", "resnet18-cifar", 32, 8, 16, "run", 2),
         ("resnet18-cifar b8 check", "resnet18-cifar", 32, 8, 16, "check", 1)]

CHILD = """
import json, sys
import simulator
from simulator.api import check
from simulator.config import parse_config
from simulator.footprint import check_bytes, coded_layer_bytes, largest_pass, streamed_run
from simulator.simulate import PassPlan
from workloads.networks import build_network
network, size, batch, lanes, command, workers, backend = (json.loads(sys.argv[1]) + ["bit-parallel"])[:7]
data = {"architecture": {"lanes": lanes, "backend": backend}, "workload": {"network": network, "image_size": size,
        "batch": batch, "sparsity": [0.8]}, "lowering": {"first_layer": "space-to-depth"}}
cfg = parse_config(data, "bench")
specs = build_network(network, image_size=size).layers
if command == "run":
    simulator.run(cfg, workers=workers, max_memory_gib=1000)
    serial = cfg.architecture.bit_serial  # whole float layers in flight, as `simulator.api` counts them
    estimate, layer, pass_name, streams = streamed_run(specs, batch, cfg.architecture,
                                                       PassPlan(cfg.passes, cfg.lowering), workers,
                                                       synthetic=not serial)
    if serial:
        estimate += (workers + 1) * max(coded_layer_bytes(s, batch) for s in specs)
else:
    list(check(cfg, max_memory_gib=1000))
    largest, layer, pass_name = largest_pass(specs, batch, lanes, cfg.passes, cfg.lowering)
    estimate, streams = check_bytes(largest), 4 * largest
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"streams": streams, "largest": f"{layer} {pass_name}", "peak": hwm,
                  "estimate": estimate}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small cases instead of the README's")
    parser.add_argument("--only", metavar="TEXT", help="only the cases whose label contains TEXT")
    args = parser.parse_args()
    print(f"{'case':<26}{'largest chunk':>28}{'streams MB':>12}{'peak MB':>10}{'estimate MB':>13}"
          f"{'est/peak':>10}")
    for label, *spec in (QUICK if args.quick else CASES):
        if args.only and args.only not in label:
            continue
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True,
                             text=True, cwd=REPO, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{label:<26}{r['largest']:>28}{r['streams'] / 1e6:>12.1f}{r['peak'] / 1e6:>10.0f}"
              f"{r['estimate'] / 1e6:>13.0f}{r['estimate'] / r['peak']:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
