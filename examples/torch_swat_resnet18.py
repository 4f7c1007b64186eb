"""Train ResNet-18 on Fashion-MNIST with SWAT-U in PyTorch for a few iterations and record
the last one as an accelsim trace.

    pip install -e '.[torch]'
    python examples/torch_swat_resnet18.py --out traces/torch-resnet18-swat-u-80
    accelsim run configs/swat-trace.yaml --trace traces/torch-resnet18-swat-u-80

The model is torchvision's ResNet-18 layer for layer (same modules, names, strides and
padding), built here from accelsim's network zoo (`workloads.torch_models`) because
torchvision's PyPI build does not import beside the CPU wheel of torch 2.13.0 this project
pins; with torchvision installed, `torchvision.models.resnet18(num_classes=10)` records the
same way. Images are Fashion-MNIST (Debian's dataset-fashion-mnist, read from disk),
resized to 32x32 and repeated over three channels. Nothing is downloaded.

Any `nn.Module` records like this: `workloads.torch_trace.record_iteration(model, x, y,
loss_fn)` returns the layers, `recorded_trace` and `simulator.trace.write_trace` write them.
"""

from __future__ import annotations

import argparse
import sys
import torch
from tqdm.auto import tqdm

from simulator.trace import TraceError, check_trace_destination, write_trace
from workloads.data import DataError, Loader, load_dataset
from workloads.networks import build_network
from workloads.torch_models import torch_model
from workloads.torch_swat import swat_u
from workloads.torch_trace import TorchTraceError, record_iteration, recorded_trace


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="traces/torch-resnet18-swat-u-80",
                        help="trace directory to write (default: %(default)s)")
    parser.add_argument("--sparsity", type=float, default=0.8, help="SWAT-U Top-K sparsity (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=20,
                        help="training iterations; the last is recorded (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--trace-batch", type=int, default=8,
                        help="samples of the recorded iteration kept in the trace (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the batches (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.sparsity < 1.0 or args.iterations < 1 or not 1 <= args.trace_batch <= args.batch:
        parser.error("expected 0 <= --sparsity < 1, --iterations >= 1 and 1 <= --trace-batch <= --batch")
    try:
        check_trace_destination(args.out)  # before the work, not after it
        loader = Loader(load_dataset("fashion-mnist", "train"), args.batch, 32, 3, train=True, seed=args.seed)
    except (TraceError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return train_and_record(args, loader)
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    except TorchTraceError as e:  # e.g. a diverged iteration
        print(f"error: {e}", file=sys.stderr)
        return 1


def batches(loader):
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def train_and_record(args, loader) -> int:
    torch.manual_seed(args.seed)
    model = swat_u(torch_model(build_network("resnet18", image_size=32, num_classes=10)), args.sparsity)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.functional.cross_entropy
    stream = batches(loader)
    bar = tqdm(range(args.iterations), desc="SWAT-U ResNet-18", unit="it")
    for it in bar:
        x, y = (torch.from_numpy(a) for a in next(stream))
        opt.zero_grad()
        if it == args.iterations - 1:  # the last iteration, recorded
            layers, loss, _ = record_iteration(model, x, y.long(), loss_fn)
        else:
            loss = loss_fn(model(x), y.long())
            loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    keep = slice(0, args.trace_batch)
    layers = [type(lay)(lay.spec, lay.weight, lay.input[keep], lay.input_saved[keep], lay.grad_output[keep])
              for lay in layers]
    trace = recorded_trace(layers, "resnet18", "swat-u", args.sparsity,
                           {"image_size": 32, "batch": args.trace_batch, "iteration": args.iterations,
                            "dataset": "fashion-mnist"})
    path = write_trace(trace, args.out)
    print(f"wrote {path} ({len(layers)} layers); simulate it with:\n"
          f"  accelsim run configs/swat-trace.yaml --trace {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
