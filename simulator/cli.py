"""The `accelsim` command line.

    accelsim run CONFIG [--out DIR] [-q]     simulate, print the summary, write results.csv
    accelsim check CONFIG [-q]               functional check of every scheduled layer
    accelsim trace-from-training NETWORK ... train with SWAT in NumPy, export sparse traces

Exit codes: 0 ok, 1 internal error (a bug: traceback printed), 2 bad input or a failed
check (one line naming the file, the key and what was expected), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .config import ConfigError, load_config
from .trace import TraceError

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2


def _cmd_run(args) -> int:
    from .api import run
    from .results import format_summary, summarize, write_results

    config = load_config(args.config)
    out = Path(args.out) if args.out else config.output_dir
    _ensure_writable_dir(out, "--out" if args.out else f"{config.source}: output.dir")
    results = run(config, quiet=args.quiet)
    path = write_results(results, out / "results.csv")
    arch = config.architecture
    title = (f"{config.name}: {arch.tiles} tiles x {arch.rows} filter lanes x {arch.lanes} weight "
             f"lanes x {arch.columns} windows, front-end {arch.frontend}, {arch.backend}")
    print(format_summary(summarize(results), title))
    print(f"\nwrote {path} ({len(results)} rows)")
    return EXIT_OK


def _ensure_writable_dir(path: Path, what: str) -> None:
    """Fail before the simulation, not after it, if `path` cannot become a writable
    directory; nothing is created here (results are written only when complete)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what}: expected a writable directory, got {str(path)!r} "
                          f"({str(probe)!r} is not a directory)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what}: expected a writable directory, got {str(path)!r} "
                          f"(no write permission in {str(probe)!r})")
    if (path / "results.csv").is_dir():
        raise ConfigError(f"{what}: expected a directory where results.csv can be written, "
                          f"but {str(path / 'results.csv')!r} is a directory")


def _cmd_check(args) -> int:
    from .api import check

    config = load_config(args.config)
    failures = total = 0
    for network, sparsity, r in check(config, quiet=args.quiet):
        total += 1
        if not r.ok:
            failures += 1
            print(f"FAIL {network} {sparsity:.0%} layer {r.layer} pass {r.pass_name}: {r.message}",
                  file=sys.stderr)
        elif args.verbose:
            print(f"ok   {network} {sparsity:.0%} layer {r.layer} pass {r.pass_name} "
                  f"(max abs error {r.max_abs_error:.2e})")
    if total == 0:
        raise ConfigError(f"{config.source}: passes: expected at least one layer pass to check, "
                          "but the workload has none (the first layer's input_grad is skipped "
                          "unless lowering.first_layer_input_grad is true)")
    print(f"{total - failures} of {total} layer passes match the NumPy reference"
          + ("" if not failures else f"; {failures} FAILED"))
    return EXIT_INPUT if failures else EXIT_OK


def _iterations(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated iterations, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected iterations >= 1, got {text!r}")
    return values


def _positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return v
    return parse


def _cmd_trace_from_training(args) -> int:
    from workloads.data import DataError
    from workloads.trainer import TrainSettings, Trainer

    settings = TrainSettings(
        network=args.network, method=args.method, sparsity=args.sparsity,
        iterations=args.iterations, epochs=args.epochs, batch=args.batch,
        image_size=args.image_size, dataset=args.dataset, data_dir=args.data_dir, lr=args.lr,
        momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing, schedule=args.schedule, warmup=args.warmup,
        topk_scope=args.topk_scope, topk_period=args.topk_period, trace_batch=args.trace_batch,
        trace_at=args.trace_at or (), out=args.out, run_dir=args.run_dir, seed=args.seed,
        checkpoint_every=args.checkpoint_every, eval_limit=args.eval_limit, resume=args.resume)
    try:
        trainer = Trainer(settings)
    except DataError as e:
        raise ConfigError(f"--dataset {args.dataset}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"trace-from-training: {e}") from None
    result = trainer.run(progress=not args.quiet)
    last = result.log.iloc[-1] if len(result.log) else None
    print(f"{settings.name}: {result.iterations} iterations"
          + (f", final loss {last['loss']:.4f}, train accuracy {last['train_accuracy']:.1%}" if last is not None else "")
          + f", test accuracy {result.test_accuracy:.2%}")
    for path in result.traces:
        print(f"trace: {path}")
    print(f"log and checkpoint: {settings.run_path}")
    return EXIT_OK


def _set_threads(threads: int | None) -> None:
    """Use `threads` numba threads (default: 1 when CI is set, as two threads on a loaded
    2-core machine can be many times slower). BLAS threads are fixed when numpy loads, so
    those follow OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, which `simulator/__init__.py`
    sets to 1 under CI and `--threads` sets by re-running the command."""
    if threads is None:
        return
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accelsim", description="Cycle-level simulator of a Bit-Tactical-style sparse "
        "training accelerator.")
    parser.add_argument("--version", action="version", version=f"accelsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("config", help="YAML config file, e.g. configs/tactical.yaml")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    common.add_argument("-v", "--verbose", action="store_true", help="more detail")

    p = sub.add_parser("run", parents=[common], help="simulate a config and write results.csv",
                       description="Simulate every workload point and pass of CONFIG, print a "
                       "SWAT Table-11 style summary and write results.csv.")
    p.add_argument("--out", metavar="DIR", help="output directory (default: the config's "
                   "output.dir, else reports/<config name>/)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("check", parents=[common], help="functional check of the schedules",
                       description="Recompute every simulated layer's output from the "
                       "scheduled buffers and compare it with a NumPy reference. Exits 2 and "
                       "names the layer and pass on any mismatch.")
    p.set_defaults(func=_cmd_check)

    from workloads.networks import NETWORKS
    from workloads.sparsity import METHODS

    p = sub.add_parser("trace-from-training", help="train with SWAT in NumPy and export traces",
                       description="Train NETWORK with a sparsity method on a dataset, evaluate it "
                       "on the test split, and export the sparse tensors of the requested "
                       "iterations as traces that `accelsim run` can simulate.")
    p.add_argument("network", choices=NETWORKS, metavar="NETWORK", help=f"one of {', '.join(NETWORKS)}")
    p.add_argument("--method", default="swat-u", choices=METHODS, help="sparsity method (default swat-u)")
    p.add_argument("--sparsity", type=float, default=0.8, help="target sparsity in [0, 1) (default 0.8)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--iterations", type=_positive(int), help="SGD steps")
    steps.add_argument("--epochs", type=_positive(float), help="passes over the training split (default 1)")
    p.add_argument("--batch", type=_positive(int), default=64, help="training batch (default 64)")
    p.add_argument("--image-size", type=_positive(int), help="input size in pixels (default: the network's)")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default), cifar10 or synthetic")
    p.add_argument("--data-dir", help="where the dataset's files are")
    p.add_argument("--trace-batch", type=_positive(int), default=8, help="samples kept in the trace (default 8)")
    p.add_argument("--trace-at", type=_iterations, metavar="I,...", help="iterations to export (default: the last)")
    p.add_argument("--out", metavar="DIR", help="trace directory (default traces/<network>-<method>-<sparsity>)")
    p.add_argument("--run-dir", metavar="DIR", help="log and checkpoint directory (default runs/<trace name>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive(int), help="BLAS and numba threads (default: all; 1 under CI)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--lr", type=_positive(float), default=0.1, help="peak learning rate (default 0.1)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    p.add_argument("--warmup", type=int, default=0, help="iterations of linear warm-up")
    p.add_argument("--topk-scope", choices=("NCHW", "CHW", "HW"), default="NCHW")
    p.add_argument("--topk-period", type=_positive(int), default=1, help="iterations between Top-K thresholds")
    p.add_argument("--checkpoint-every", type=_positive(int), default=100)
    p.add_argument("--eval-limit", type=_positive(int), help="test samples to evaluate (default all)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_trace_from_training)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_INPUT
    threads = getattr(args, "threads", None)
    if threads and argv is None and os.environ.get("OMP_NUM_THREADS") != str(threads):
        env = {k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update(env)  # BLAS reads these only at start-up: run the command again
        os.execv(sys.executable, [sys.executable, "-m", "simulator.cli", *sys.argv[1:]])
    _set_threads(threads)
    try:
        return args.func(args)
    except (ConfigError, TraceError) as e:
        print(f"accelsim: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("accelsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
