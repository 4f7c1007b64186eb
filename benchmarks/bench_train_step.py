"""One SGD step of ResNet-18 (CIFAR stem) or ResNet-50 (ImageNet layout): NumPy vs PyTorch CPU.

Usage: python benchmarks/bench_train_step.py [--threads T] [--repeat N] [--batch 64] [--control]
       python benchmarks/bench_train_step.py --network resnet50 --image-size 64|224 [...]
       python benchmarks/bench_train_step.py --memory [--network N --image-size S --batch B]

Networks (`--network`): ``resnet18-cifar`` (the default: 3x3/1 stem, no max-pool,
`--image-size` 32 unless given) and ``resnet50`` (torchvision's ImageNet layout, ResNet
v1.5: 7x7/2 stem conv, BN, ReLU, 3x3/2 max-pool, bottlenecks with the stride on the 3x3
conv; `--image-size` is required, typically 64 or 224), both with 10 classes. The PyTorch
model is built by hand in torchvision's layout and must have our parameter count exactly.

Times forward + backward + SGD update of our NumPy model, dense and with SWAT-U at 80%,
and the same step in PyTorch 2.13 CPU when `torch` is installed (`pip install
torch==2.13.0`; not a dependency), with the same thread count. The three steps run in
interleaved rounds, so a slow phase of a shared machine hits all three alike; medians over
the rounds are reported. Each round runs PyTorch first, then dense and SWAT-U back to
back in alternating order, so the two NumPy steps that are compared sit next to each other
and follow PyTorch and each other equally often. For ResNet-50 the headline is dense NumPy
vs PyTorch; SWAT-U and its Top-K overhead are reported as for ResNet-18.

Every step takes the next of 16 batches of Fashion-MNIST (resized to S x S x 3 for
`--image-size` S, with the trainer's augmentation; random images if the Debian package is
missing), so the Top-K thresholds move from step to step as they do in training.

Reports the ratio of our dense step to PyTorch's (target <= 1.2x) and SWAT-U's Top-K
overhead (target < 5% of the step at period 1), measured two ways: every Top-K call of the
method timed inside the step (thresholds, weight masks, counts), and the SWAT-U step minus
the dense step, which also holds the masking of the saved activations as the backward pass
unfolds them and everything else SWAT-U adds. The second is a small difference of two
noisy times, so it is given twice: between the medians, and between the fastest steps
(the least disturbed, as `timeit` takes them).

Peak memory (`--memory`, instead of the timing): each step (NumPy dense, PyTorch) is
measured per framework in its own fresh process (this script re-run with a hidden `--only`
option), so neither one's allocations, caches or thread pools count against the other.
That process loads 3 batches, builds the model and optimiser, takes its resident set size
(VmRSS) just before the first step, runs 3 steps and then takes its peak resident set size
(`getrusage` ru_maxrss). Both figures are whole-process (interpreter, libraries, model,
data) and given in MiB: the first is what is held before training, the peak minus it is
what the steps add (activations saved for the backward pass, gradients, momentum, scratch).

Set threads before numpy loads: this script re-runs itself with OMP_NUM_THREADS set.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# --network -> (title in the report, default --image-size; None: the option is required)
NETWORKS = {"resnet18-cifar": ("ResNet-18 (CIFAR stem)", 32), "resnet50": ("ResNet-50", None)}
MEMORY_STEPS = 3  # steps (and batches) of each --memory process


def batches(batch: int, image_size: int, count: int = 16):
    """`count` training batches (x float32 [batch, 3, image_size, image_size], labels) and
    their source."""
    import numpy as np

    from workloads.data import DataError, Loader, load_dataset

    # cache_bytes=0: each batch is resized as it is drawn (the same pixels), not all 10,000
    # images up front, which at 224 would add 0.5 GB to the peak memory
    try:
        loader = Loader(load_dataset("fashion-mnist", "test"), batch, image_size, train=True,
                        seed=0, cache_bytes=0)
        it = iter(loader)
        return [next(it) for _ in range(count)], "Fashion-MNIST"
    except DataError:
        rng = np.random.default_rng(0)
        return [(rng.standard_normal((batch, 3, image_size, image_size), dtype=np.float32),
                 rng.integers(0, 10, batch)) for _ in range(count)], "random images"


def numpy_step(method: str, data: list, network: str, image_size: int):
    """(one-step function, its Top-K time accumulator [seconds])."""

    from workloads.layers import softmax_cross_entropy
    from workloads.models import build_model, weight_layers
    from workloads.networks import build_network
    from workloads.optim import SGD
    from workloads.sparsity import make_method

    net = build_network(network, image_size=image_size, num_classes=10)
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


def torch_resnet18_cifar():
    """ResNet-18 with the CIFAR stem in PyTorch, built by hand from torchvision's BasicBlock
    layout."""
    import torch
    import torch.nn as nn

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
    return nn.Sequential(*layers)


def torch_resnet50():
    """ResNet-50 in PyTorch, built by hand in torchvision's layout (v1.5: the stride on the
    3x3 conv of the bottleneck)."""
    import torch
    import torch.nn as nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            cout = 4 * planes
            self.c1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.b1 = nn.BatchNorm2d(planes)
            self.c2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.b2 = nn.BatchNorm2d(planes)
            self.c3 = nn.Conv2d(planes, cout, 1, bias=False)
            self.b3 = nn.BatchNorm2d(cout)
            self.sc = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                       if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = torch.relu(self.b2(self.c2(y)))
            return torch.relu(self.b3(self.c3(y)) + self.sc(x))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for i in range(count):
            layers.append(Bottleneck(cin, planes, 2 if stage > 0 and i == 0 else 1))
            cin = 4 * planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 10)]
    return nn.Sequential(*layers)


def torch_step(data: list, threads: int, network: str, image_size: int):
    """One-step function of the same model in PyTorch, or None without torch."""
    try:
        import torch
        import torch.nn as nn
    except ImportError:
        return None
    torch.set_num_threads(threads)
    from workloads.networks import build_network

    model = {"resnet18-cifar": torch_resnet18_cifar, "resnet50": torch_resnet50}[network]()
    ours = build_network(network, image_size=image_size, num_classes=10).param_count
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


def rss_kib() -> int:
    """This process's resident set size now [KiB] (VmRSS in /proc/self/status, Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def run_only(args) -> int:
    """--only: build one step (numpy dense or pytorch) in this fresh process and run it
    MEMORY_STEPS times; print one line ``memory {json}`` with the resident set size just
    before the first step and the peak after the steps [KiB], and the data source."""
    data, source = batches(args.batch, args.image_size, MEMORY_STEPS)
    if args.only == "dense":
        step, _ = numpy_step("dense", data, args.network, args.image_size)
    else:
        step = torch_step(data, args.threads, args.network, args.image_size)
    before = rss_kib()
    for _ in range(MEMORY_STEPS):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print("memory " + json.dumps({"before_kib": before, "peak_kib": peak, "source": source}))
    return 0


def measure_memory(args) -> int:
    """--memory: each step's memory from its own fresh process (this script with --only)."""
    found = {}
    for name in ("dense", "pytorch"):
        if name == "pytorch" and importlib.util.find_spec("torch") is None:
            continue
        cmd = [sys.executable, __file__, "--only", name, "--network", args.network,
               "--image-size", str(args.image_size), "--batch", str(args.batch),
               "--threads", str(args.threads)]
        try:
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        except subprocess.CalledProcessError as e:
            sys.exit(f"--only {name} failed:\n{e.stderr}")
        line, = (line for line in out.splitlines() if line.startswith("memory "))
        found[name] = json.loads(line[len("memory "):])
    size = args.image_size
    print(f"{NETWORKS[args.network][0]} {size}x{size}, batch {args.batch}, {args.threads} threads, "
          f"memory of one fresh process per step ({MEMORY_STEPS} steps), "
          f"{found['dense']['source']}")
    mib = {name: (r["before_kib"] / 1024, r["peak_kib"] / 1024) for name, r in found.items()}
    for name, label in (("dense", "numpy dense step:"), ("pytorch", "pytorch 2.13 CPU step:")):
        if name not in mib:
            print("pytorch: not installed (pip install torch==2.13.0 to compare)")
            continue
        before, peak = mib[name]
        print(f"{label:24} {before:6.0f} MiB before the first step, peak {peak:6.0f} MiB "
              f"(the steps add {peak - before:.0f} MiB)"
              + (f"  -> numpy dense / pytorch peak = {mib['dense'][1] / peak:.2f}x"
                 if name == "pytorch" else ""))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", choices=tuple(NETWORKS), default="resnet18-cifar",
                    help="network to time (default: resnet18-cifar)")
    ap.add_argument("--image-size", type=int,
                    help="input height and width (default 32 for resnet18-cifar; required for "
                         "resnet50, typically 64 or 224)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads of both frameworks (default: all cores)")
    ap.add_argument("--repeat", type=int, default=7, help="interleaved rounds (default: 7)")
    ap.add_argument("--batch", type=int, default=64, help="training batch (default: 64)")
    ap.add_argument("--control", action="store_true",
                    help="a second dense model in SWAT-U's place: shows how far two identical "
                         "steps differ on this machine")
    ap.add_argument("--memory", action="store_true",
                    help="instead of the timing: the peak memory of the numpy dense and the "
                         "pytorch step, each in its own fresh process")
    ap.add_argument("--only", choices=("dense", "pytorch"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.image_size is None:
        args.image_size = NETWORKS[args.network][1]
        if args.image_size is None:
            ap.error(f"--network {args.network} needs --image-size (typically 64 or 224)")
    if os.environ.get("OMP_NUM_THREADS") != str(args.threads):
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = str(args.threads)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if args.only:
        return run_only(args)
    if args.memory:
        return measure_memory(args)
    data, source = batches(args.batch, args.image_size)
    dense, _ = numpy_step("dense", data, args.network, args.image_size)
    swat, topk = numpy_step("dense" if args.control else "swat-u", data, args.network,
                            args.image_size)
    steps = {"dense": dense, "swat-u": swat}
    torch = torch_step(data, args.threads, args.network, args.image_size)
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
    size = args.image_size
    print(f"{NETWORKS[args.network][0]} {size}x{size}, batch {args.batch}, {args.threads} threads, "
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
              f"{max(ratios):.2f}x; target <= 1.2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
