"""One SGD step of ResNet-18 (CIFAR stem, 32x32, batch 64): NumPy trainer vs PyTorch CPU.

Usage: python benchmarks/bench_train_step.py [--threads T] [--repeat N] [--batch 64]

Times forward + backward + SGD update of our NumPy model, dense and with SWAT-U at 80%
(whose extra cost is the Top-K thresholding: every threshold and masking call is timed
inside the step, which is steadier on a busy machine than subtracting two step times), and the same step in PyTorch 2.13 CPU
when `torch` is installed (`pip install torch==2.13.0`; not a dependency), with the
same thread count. Reports the median step time of each, the ratio to PyTorch
(target <= 1.5x) and the Top-K overhead of SWAT-U (target < 5% at period 1).
Set threads before numpy loads: this script re-runs itself with OMP_NUM_THREADS set.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def _median_time(step, repeat: int) -> float:
    step()  # warm-up (numba compilation, allocator)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def numpy_step(method: str, batch: int, repeat: int) -> tuple[float, float]:
    import numpy as np

    from workloads.layers import softmax_cross_entropy
    from workloads.models import build_model, weight_layers
    from workloads.networks import build_network
    from workloads.optim import SGD
    from workloads.sparsity import make_method

    net = build_network("resnet18-cifar", image_size=32, num_classes=10)
    model = build_model(net, seed=0)
    opt = SGD(model.params(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    sparsity = make_method(method, 0.8 if method != "dense" else 0.0)
    sparsity.attach(weight_layers(model), opt)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    topk = [0.0]
    it = [0]
    import workloads.sparsity as sp

    def timed(fn):  # every Top-K call of the method: thresholds, masking, counting
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                topk[0] += time.perf_counter() - t0
        return wrapper
    for name in ("topk_threshold", "apply_threshold", "apply_threshold_count"):
        setattr(sp, name, timed(getattr(sp, name)))

    def step():
        sparsity.before_forward(it[0])
        logits = model.forward(x)
        _, dlogits = softmax_cross_entropy(logits, y)
        model.zero_grad()
        model.backward(dlogits)
        sparsity.after_backward(it[0])
        opt.step()
        it[0] += 1

    t = _median_time(step, repeat)
    return t, topk[0] / (repeat + 1)


def torch_step(batch: int, repeat: int, threads: int) -> float | None:
    try:
        import torch
        import torch.nn as nn
    except ImportError:
        return None
    torch.set_num_threads(threads)
    from workloads.networks import build_network

    # the same architecture, built by hand from torchvision's BasicBlock layout
    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.sc = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                       if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + self.sc(x))

    layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10)]
    model = nn.Sequential(*layers)
    ours = build_network("resnet18-cifar", image_size=32, num_classes=10).param_count
    assert sum(p.numel() for p in model.parameters()) == ours, "architectures differ"
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    return _median_time(step, repeat)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != str(args.threads):
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = str(args.threads)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    dense, _ = numpy_step("dense", args.batch, args.repeat)
    swat, topk = numpy_step("swat-u", args.batch, args.repeat)
    torch_t = torch_step(args.batch, args.repeat, args.threads)
    print(f"ResNet-18 (CIFAR stem) 32x32, batch {args.batch}, {args.threads} threads, median of {args.repeat}")
    print(f"numpy dense step:        {dense * 1000:8.0f} ms")
    print(f"numpy swat-u 80% step:   {swat * 1000:8.0f} ms  (Top-K of weights and activations: "
          f"{topk * 1000:.0f} ms, {topk / swat:.1%} of the step; target < 5%)")
    if torch_t is None:
        print("pytorch: not installed (pip install torch==2.13.0 to compare)")
    else:
        print(f"pytorch 2.13 CPU step:   {torch_t * 1000:8.0f} ms  -> numpy dense / pytorch = "
              f"{dense / torch_t:.2f}x (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
