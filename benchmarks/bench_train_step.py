"""One SGD step of ResNet-18 (CIFAR stem, 32x32, batch 64): NumPy trainer vs PyTorch CPU.

Usage: python benchmarks/bench_train_step.py [--threads T] [--repeat N] [--batch 64]

Times forward + backward + SGD update of our NumPy model, dense and with SWAT-U at 80%,
and the same step in PyTorch 2.13 CPU when `torch` is installed (`pip install
torch==2.13.0`; not a dependency), with the same thread count. The three steps run in
interleaved rounds, so a slow phase of a shared machine hits all three alike; medians over
the rounds are reported. Each round runs PyTorch first, then dense and SWAT-U back to
back in alternating order, so the two NumPy steps that are compared sit next to each other
and follow PyTorch and each other equally often.

Every step takes the next of 16 batches of Fashion-MNIST (resized to 32x32x3, with the
trainer's augmentation; random images if the Debian package is missing), so the Top-K
thresholds move from step to step as they do in training.

Reports the ratio of our dense step to PyTorch's (target <= 1.5x) and SWAT-U's Top-K
overhead (target < 5% of the step at period 1), measured two ways: every Top-K call of the
method timed inside the step (thresholds, weight masks, counts), and the SWAT-U step minus
the dense step, which also holds the masking of the saved activations as the backward pass
unfolds them and everything else SWAT-U adds. The second is a small difference of two
noisy times, so it is given twice: between the medians, and between the fastest steps
(the least disturbed, as `timeit` takes them).
Set threads before numpy loads: this script re-runs itself with OMP_NUM_THREADS set.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def batches(batch: int, count: int = 16):
    """`count` training batches (x float32 [batch, 3, 32, 32], labels) and their source."""
    import numpy as np

    from workloads.data import DataError, Loader, load_dataset

    try:
        loader = Loader(load_dataset("fashion-mnist", "test"), batch, 32, train=True, seed=0)
        it = iter(loader)
        return [next(it) for _ in range(count)], "Fashion-MNIST"
    except DataError:
        rng = np.random.default_rng(0)
        return [(rng.standard_normal((batch, 3, 32, 32), dtype=np.float32),
                 rng.integers(0, 10, batch)) for _ in range(count)], "random images"


def numpy_step(method: str, data: list):
    """(one-step function, its Top-K time accumulator [seconds])."""

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
    topk = [0.0]
    it = [0]
    import workloads.sparsity as sp

    depth = [0]
    running = [False]   # this model's step is running (the module functions are shared)

    def timed(fn):  # every Top-K call of the method (outermost only): thresholds, masks, counts
        def wrapper(*a, **k):
            if not running[0]:
                return fn(*a, **k)
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    topk[0] += time.perf_counter() - t0
        return wrapper
    for name in ("topk_threshold", "apply_threshold", "apply_threshold_count", "count_kept",
                 "zero_fraction"):
        setattr(sp, name, timed(getattr(sp, name)))
    for name in ("threshold", "sparsify"):
        setattr(sparsity.selector, name, timed(getattr(sparsity.selector, name)))

    def step():
        x, y = data[it[0] % len(data)]
        running[0] = True
        try:
            sparsity.before_forward(it[0])
            logits = model.forward(x)
            _, dlogits = softmax_cross_entropy(logits, y)
            model.zero_grad()
            model.backward(dlogits)
            sparsity.after_backward(it[0])
            opt.step()
        finally:
            running[0] = False
        it[0] += 1

    return step, topk


def torch_step(data: list, threads: int):
    """One-step function of the same model in PyTorch, or None without torch."""
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
    data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in data]
    loss_fn = nn.CrossEntropyLoss()
    it = [0]

    def step():
        x, y = data[it[0] % len(data)]
        it[0] += 1
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--control", action="store_true",
                    help="a second dense model in SWAT-U's place: shows how far two identical "
                         "steps differ on this machine")
    args = ap.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != str(args.threads):
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = str(args.threads)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    data, source = batches(args.batch)
    dense, _ = numpy_step("dense", data)
    swat, topk = numpy_step("dense" if args.control else "swat-u", data)
    steps = {"dense": dense, "swat-u": swat}
    torch = torch_step(data, args.threads)
    if torch is not None:
        steps["pytorch"] = torch
    for fn in steps.values():  # warm-up: numba compilation (SWAT-U's first step searches,
        fn()                   # its second compiles the bracketed kernels), allocator
        fn()
    topk[0] = 0.0
    times = {name: [] for name in steps}
    first = ["pytorch"] if "pytorch" in steps else []
    for r in range(args.repeat):
        for name in first + (["dense", "swat-u"] if r % 2 == 0 else ["swat-u", "dense"]):
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    topk_step = topk[0] / args.repeat
    by_median = med["swat-u"] - med["dense"]
    by_fastest = min(times["swat-u"]) - min(times["dense"])
    print(f"ResNet-18 (CIFAR stem) 32x32, batch {args.batch}, {args.threads} threads, "
          f"median of {args.repeat} interleaved rounds, {source}")
    print(f"numpy dense step:        {med['dense'] * 1000:8.0f} ms")
    print(f"numpy swat-u 80% step:   {med['swat-u'] * 1000:8.0f} ms"
          + ("  (--control: a second dense model)" if args.control else ""))
    print(f"  Top-K calls timed inside the step: {topk_step * 1000:.0f} ms, "
          f"{topk_step / med['swat-u']:.1%} of the step (target < 5%)")
    print(f"  swat-u minus dense: medians {by_median * 1000:.0f} ms ({by_median / med['swat-u']:.1%}), "
          f"fastest steps {by_fastest * 1000:.0f} ms ({by_fastest / min(times['swat-u']):.1%})")
    if torch is None:
        print("pytorch: not installed (pip install torch==2.13.0 to compare)")
    else:
        ratios = [d / t for d, t in zip(times["dense"], times["pytorch"])]
        print(f"pytorch 2.13 CPU step:   {med['pytorch'] * 1000:8.0f} ms  -> numpy dense / pytorch = "
              f"{med['dense'] / med['pytorch']:.2f}x (per round: {min(ratios):.2f}x to "
              f"{max(ratios):.2f}x; target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
