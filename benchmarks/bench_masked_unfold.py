"""What masking SWAT-U's saved activations inside the conv backward costs (units: ms).

Usage: python benchmarks/bench_masked_unfold.py [--threads T] [--repeat N]

For every sparse conv of ResNet-18 (CIFAR stem, 32x32, batch 64), times the layer's
backward pass (dX and dW) three ways, median of N, interleaved: with the dense saved input,
with a `Thresholded` saved input (masked as each chunk is unfolded, while padding or, for
unpadded convs, in the columns: what the trainer does), and with a masked copy made beforehand (not counting the copy). The
second minus the first is the masking's share of the Top-K overhead that the step
benchmark's in-step timing does not see. Also checks that the two sparse variants give
the same dW bit for bit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != str(args.threads):
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = str(args.threads)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    import numpy as np

    from workloads.models import build_model, weight_layers
    from workloads.networks import build_network
    from workloads.topk import Thresholded, apply_threshold, topk_threshold

    model = build_model(build_network("resnet18-cifar", image_size=32, num_classes=10), seed=0)
    rng = np.random.default_rng(0)
    names = ("dense input", "thresholded", "masked copy")
    total = dict.fromkeys(names, 0.0)
    print(f"{'layer':24s}" + "".join(f"{n:>14s}" for n in names))
    for lay in weight_layers(model)[1:-1]:           # the sparse convs (not conv1, not fc)
        spec = lay.spec
        x = np.maximum(rng.standard_normal((64, spec.in_channels, *spec.in_hw), dtype=np.float32), 0)
        w = lay.weight.value
        dy = rng.standard_normal(lay._forward(x, w).shape, dtype=np.float32)
        thr = topk_threshold(x, 0.8)
        saved = {"dense input": x, "thresholded": Thresholded(x, thr, 0),
                 "masked copy": apply_threshold(x, thr)}
        assert np.array_equal(lay._backward(dy, saved["thresholded"], w)[1],
                              lay._backward(dy, saved["masked copy"], w)[1])
        times = {n: [] for n in names}
        for _ in range(args.repeat):
            for n in names:
                t0 = time.perf_counter()
                lay._backward(dy, saved[n], w)
                times[n].append(time.perf_counter() - t0)
        med = {n: statistics.median(t) for n, t in times.items()}
        for n in names:
            total[n] += med[n]
        print(f"{spec.name:24s}" + "".join(f"{med[n] * 1000:14.1f}" for n in names))
    print(f"{'all sparse convs':24s}" + "".join(f"{total[n] * 1000:14.1f}" for n in names))
    extra = total["thresholded"] - total["dense input"]
    print(f"masking inside the unfold: {extra * 1000:+.1f} ms per step "
          f"({extra / total['dense input']:+.1%} of these backward passes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
