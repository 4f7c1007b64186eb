"""Accuracy check of the NumPy trainer on real data: dense vs SWAT-U on Fashion-MNIST.

Usage: python benchmarks/bench_accuracy.py [--network simple-cnn] [--epochs 2] [--sparsity 0.8]

Trains the same network twice on the same budget (epochs, batch, learning-rate
schedule, seed): once dense, once with SWAT-U at the given sparsity, and prints the
test accuracy of each (the full 10,000-image test split). Target (issue 4): dense
>= 85%, SWAT-U at 80% within 2 points of dense. Needs the Debian package
dataset-fashion-mnist (or --data-dir). Not run as a test: it takes minutes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from workloads.trainer import TrainSettings, train


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="simple-cnn")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--data-dir")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method, sparsity in (("dense", 0.0), ("swat-u", args.sparsity)):
            t0 = time.perf_counter()
            settings = TrainSettings(network=args.network, method=method, sparsity=sparsity,
                                     epochs=args.epochs, batch=args.batch, lr=args.lr,
                                     lr_scaling=False, warmup=0,  # the recipe before issue 12
                                     dataset="fashion-mnist", data_dir=args.data_dir,
                                     out=f"{tmp}/{method}", run_dir=f"{tmp}/run-{method}",
                                     checkpoint_every=10**9)
            result = train(settings, progress=sys.stderr.isatty())
            results[method] = result.test_accuracy
            print(f"{method:>7} (sparsity {sparsity:.0%}): test accuracy {result.test_accuracy:.2%} "
                  f"after {result.iterations} iterations, {time.perf_counter() - t0:.0f} s")
    gap = results["dense"] - results["swat-u"]
    print(f"gap: {gap * 100:.2f} points (target: dense >= 85%, gap <= 2 points)")
    return 0 if results["dense"] >= 0.85 and gap <= 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
