"""How long each network's default `trace-from-training` run takes: measured steps, extrapolated.

Usage: python benchmarks/bench_recipes.py [NETWORK ...] [--steps 4]

For every zoo network (or those named), in a child process each (so peak memory is the
network's own): builds the trainer exactly as `accelsim trace-from-training NETWORK` does
with no options (Fashion-MNIST, the recipe of `workloads/recipes.py`), times `--steps`
training steps after one warm-up step, the forward pass over 512 test images, and the
recording pass at the trace size, and reports

    predicted total = iterations x step + test images x (evaluation per image) + recording,

next to the plan paragraph's own estimate and the child's peak resident memory
(`ru_maxrss`, which includes everything the run would hold but the rest of the training
steps' identical allocations). Nothing is written outside a temporary directory. Run it on
an idle machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(network: str, steps: int) -> dict:
    from workloads.layers import softmax_cross_entropy
    from workloads.trainer import TrainSettings, Trainer, evaluate

    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(TrainSettings(network=network, out=f"{tmp}/t", run_dir=f"{tmp}/r"))
        s = tr.settings
        batches = tr._batches()

        def step(i):
            x, y = next(batches)
            tr.method.before_forward(i)
            loss, d = softmax_cross_entropy(tr.model.forward(x), y)
            tr.model.zero_grad()
            tr.model.backward(d)
            tr.method.after_backward(i)
            tr.optimizer.step(tr.schedule(i))

        step(0)
        t = time.perf_counter()
        for i in range(1, steps + 1):
            step(i)
        per_step = (time.perf_counter() - t) / steps
        images = min(512, len(tr.test_set))
        tr.test_set.images, tr.test_set.labels = tr.test_set.images[:images], tr.test_set.labels[:images]
        t = time.perf_counter()
        evaluate(tr.model, tr.test_loader, tr.layers, tr.method)
        per_image = (time.perf_counter() - t) / images
        t = time.perf_counter()
        if tr.trace_loader is not None:
            tr._record_at_trace_size(s.iterations, progress=False)
        else:
            for lay in tr.layers:
                lay.record = True
            step(steps + 1)
            tr._export(s.iterations, tr.trace_batch)
        record = time.perf_counter() - t
        e = tr.estimate()
        test_images = 10000
        return {"network": network, "size": s.image_size, "batch": s.batch, "iterations": s.iterations,
                "trace": f"{s.trace_image_size}x{tr.trace_batch}", "step_s": per_step,
                "eval_per_image_ms": 1e3 * per_image, "record_s": record,
                "predicted_min": (s.iterations * per_step + test_images * per_image + record) / 60,
                "estimate_min": e.total / 60,
                "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("networks", nargs="*")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return 0
    from workloads.networks import NETWORKS

    print("| network | training size, batch | iterations | trace size x batch | step | evaluation "
          "(10,000 images) | recording | predicted total | plan's estimate | peak memory |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for net in args.networks or NETWORKS:
        out = subprocess.run([sys.executable, __file__, "--child", net, "--steps", str(args.steps)],
                             capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            print(f"| {net} | failed: {out.stderr.strip().splitlines()[-1]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {net} | {r['size']}, {r['batch']} | {r['iterations']:,} | {r['trace']} | "
              f"{r['step_s']:.2f} s | {r['eval_per_image_ms'] * 10:.0f} s | {r['record_s']:.0f} s | "
              f"{r['predicted_min']:.1f} min | {r['estimate_min']:.1f} min | {r['peak_gib']:.2f} GiB |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
