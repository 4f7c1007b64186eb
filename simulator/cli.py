"""The `accelsim` command line.

    accelsim run CONFIG [--out DIR] [-q]     simulate, print the summary, write results.csv
    accelsim report RESULTS_DIR [-q]         PNG and SVG plots of RESULTS_DIR/results.csv
                                             (`run --plots` writes them after a run)
    accelsim check CONFIG [-q]               functional check of every scheduled layer
    accelsim sweep SWEEP_CONFIG [--workers N | --dask-scheduler tcp://HOST:PORT]
                                             every point of a design-space sweep, resumable
    accelsim trace-from-training NETWORK ... train with SWAT in NumPy, export sparse traces
    accelsim flops NETWORK --sparsity S      SWAT A.3 analytic training-FLOP model
    accelsim topk-overhead [--measure NET]   SWAT A.4 periodic Top-K overhead model

Exit codes: 0 ok, 1 internal error (a bug: traceback printed), 2 bad input or a failed
check (one line naming the file, the key and what was expected), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import textwrap
import warnings
from pathlib import Path

from . import __version__
from .config import ConfigError, load_config
from .analytic_commands import cmd_flops, cmd_topk_overhead
from .outputs import OutputError, probe_output_dir
from .resources import MemoryLimitError, available_cores
from .trace import TraceError

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2


def _cmd_run(args) -> int:
    from .api import run
    from .results import format_layers, format_summary, summarize, write_results

    config = _config_of(args)
    out = Path(args.out) if args.out else config.output_dir
    what = ("--out" if args.out else f"{config.source}: output.dir" if args.trace is None
            else f"--trace: the output directory {out}")
    _ensure_writable_dir(out, what)
    results = run(config, quiet=args.quiet, max_memory_gib=args.max_memory,
                  workers=args.workers or available_cores())
    path = write_results(results, out / "results.csv")
    arch = config.architecture
    title = (f"{config.name}: {arch.tiles} tiles x {arch.rows} filter lanes x {arch.lanes} weight "
             f"lanes x {arch.columns} windows, front-end {arch.frontend} ({arch.frontend.scheduler} "
             f"scheduler{'' if arch.lockstep else ', decoupled tiles'}), first layer "
             f"{config.lowering.first_layer}, {arch.backend}")
    if args.verbose:
        print(format_layers(results) + "\n")
    print(format_summary(summarize(results), title))
    print(f"\nwrote {path} ({len(results)} rows)")
    if args.plots:
        _write_plots(out, args.quiet)
    return EXIT_OK


# What `--trace DIR` without a CONFIG simulates on: configs/tactical.yaml's array, lowering
# and memory (the parser's defaults plus the choices tactical.yaml states; a test holds the
# two equal).
TRACE_DEFAULTS = {"architecture": {"frontend": {"scheduler": "fewest-candidates"}},
                  "lowering": {"first_layer": "space-to-depth"}}


def _name_part(text: str) -> str:
    """`text` with what a config name may not hold replaced by '-' (see parse_config)."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip(".-")


def _config_of(args):
    """The config of `run`/`check`: CONFIG as written, or with `--trace DIR` CONFIG's (or
    tactical.yaml's) architecture, lowering and memory with the trace as the workload,
    named <config>-<trace> (or <trace>) so its output goes to reports/<that name>/."""
    from .config import parse_config, read_yaml, refuse_sweep_file
    from .safe_yaml import cut

    if args.trace is None:
        if args.config is None:
            raise ConfigError(f"{args.command}: expected a CONFIG file, or --trace DIR")
        return load_config(args.config)
    trace = Path(args.trace)
    if not (trace / "manifest.yaml").is_file():
        raise ConfigError(f"--trace: expected a trace directory holding manifest.yaml, got "
                          f"{str(trace)!r}" + ("" if trace.exists() else " (no such directory)"))
    resolved = trace.resolve()
    label = _name_part(resolved.name)
    if resolved.name.startswith("iter-"):  # iter-000100 of several --trace-at: keep the run's name
        label = f"{_name_part(resolved.parent.name)}-{label}"
    if args.config is None:
        data, source, name = dict(TRACE_DEFAULTS), f"--trace {trace}", label or "trace"
    else:
        data = read_yaml(args.config)
        refuse_sweep_file(data, cut(args.config, 200))
        data = {} if data is None else data
        if not isinstance(data, dict):
            return load_config(args.config)  # its own one-line error
        data, source = dict(data), str(args.config)
        own = data.get("name") if isinstance(data.get("name"), str) else Path(args.config).stem
        name = "-".join(p for p in (_name_part(own), label) if p) or "trace"
        data.pop("output", None)
    data["workload"] = {"trace": str(trace)}
    data["name"] = name
    return parse_config(data, source)


def _write_plots(results_dir: Path, quiet: bool, verbose: bool = False, draw_all: bool = False) -> None:
    from .report import write_report

    for path in write_report(results_dir, draw_all=draw_all):
        if not quiet:
            print(f"wrote {path}" + (f" ({path.stat().st_size / 1e3:,.0f} kB)" if verbose else ""))


def _cmd_report(args) -> int:
    _write_plots(Path(args.results_dir), args.quiet, args.verbose, args.all)
    return EXIT_OK


def _ensure_writable_dir(path: Path, what: str) -> None:
    """Fail before the work, not after it, unless `path` is (or can become) a directory
    where results.csv can be written: probed by creating and removing a temporary file
    of our naming; nothing is left behind (results are written only when complete)."""
    probe_output_dir(path, what, files=("results.csv", "results.csv.sha256", "summary.csv"))


def _cmd_check(args) -> int:
    from .api import check

    config = _config_of(args)
    failures = total = 0
    for network, sparsity, r in check(config, quiet=args.quiet, max_memory_gib=args.max_memory):
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
    arch = config.architecture
    reference = (f"the {arch.bits}-bit quantised NumPy reference exactly, bit-serial ({arch.backend})"
                 if arch.bit_serial else "the NumPy reference")
    print(f"{total - failures} of {total} layer passes match {reference}"
          + ("" if not failures else f"; {failures} FAILED"))
    return EXIT_INPUT if failures else EXIT_OK


def _refuse_run_config(path: str) -> None:
    """A ConfigError pointing at `accelsim run` if `path` is a run config (no base: or sweep:,
    but a run config's sections)."""
    from .config import read_yaml
    from .safe_yaml import cut

    data = read_yaml(path)
    if (isinstance(data, dict) and "sweep" not in data and "base" not in data
            and {"architecture", "workload", "passes"} & set(data)):
        raise ConfigError(f"{cut(path, 200)}: expected a sweep file (top-level base: and sweep:), "
                          f"got a run config; simulate it with `accelsim run {cut(path, 200)}`, or "
                          "sweep it from a file whose base: names it (as configs/sweep.yaml does)")


def _cmd_sweep(args) -> int:
    from .executors import DaskExecutor, ProcessExecutor, SerialExecutor
    from .sweep import (finished, format_sweep_summary, load_sweep, pending, run_sweep,
                        scan_points)

    # every point validated before anything runs (at most --max-points of them)
    try:
        sweep = load_sweep(args.config, max_points=args.max_points, progress=not args.quiet)
    except ConfigError:
        _refuse_run_config(args.config)
        raise
    out = Path(args.out) if args.out else sweep.default_output_dir()
    _ensure_writable_dir(out, "--out" if args.out else f"{sweep.source}: output.dir")
    stored = scan_points(sweep, out, progress=not args.quiet)  # finished points; bad entries fail
    if args.dask_scheduler:
        executor, where = DaskExecutor(args.dask_scheduler), f"on {args.dask_scheduler}"
    else:
        workers = args.workers or 1
        executor = SerialExecutor() if workers == 1 else ProcessExecutor(workers)
        where = f"in {workers} worker processes" if workers > 1 else "in this process"
    todo = pending(sweep, out, stored)
    total = len(sweep.points)
    if todo and args.dask_scheduler:
        executor.connect()  # a wrong address fails before anything is printed
    shown = sweep.skipped if args.verbose else sweep.skipped[:10]
    for point, why in shown:
        print(f"note: skipped {point.label()}: {why}")
    if len(shown) < len(sweep.skipped):
        print(f"note: ... and {len(sweep.skipped) - len(shown)} more (-v lists them)")
    bad = stored.unfinished if args.verbose else stored.unfinished[:10]
    for path in bad:
        print(f"note: points/{path.name} is incomplete or not ours; rerunning that point")
    if len(bad) < len(stored.unfinished):
        print(f"note: ... and {len(stored.unfinished) - len(bad)} more such point files "
              "(-v lists them)")
    skipped = len(sweep.skipped)
    print(f"{sweep.name}: {finished(sweep, out, stored)} of {total} points done, {len(todo)} to run"
          + (f" {where}" if todo else "") + (f" ({skipped} invalid combination"
                                             f"{'s' if skipped > 1 else ''} skipped)" if skipped else ""))

    def report(point, rows) -> None:
        if args.verbose:
            print(f"done {point.point.label()} ({len(rows)} rows, points/{point.id}.csv)", flush=True)

    try:
        result = run_sweep(sweep, out, executor, progress=not args.quiet, on_done=report,
                           todo=todo)
    except KeyboardInterrupt:
        print(f"accelsim: interrupted: {finished(sweep, out)} of {total} points done, kept in "
              f"{out / 'points'}; the same command resumes", file=sys.stderr)
        return 130
    print(format_sweep_summary(sweep, result.point_summaries))
    print(f"\nwrote {result.results_path} ({len(result.results)} rows from {total} points) and "
          f"{result.summary_path}")
    from .report import write_sweep_maps

    for path in write_sweep_maps(result.summary, sweep.keys, out):
        if not args.quiet:
            print(f"wrote {path}")
    return EXIT_OK


def _gib(text: str) -> float:
    from .resources import MemoryLimitError, parse_gib

    try:
        return parse_gib(text, "--max-memory")
    except MemoryLimitError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None


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


# trace-from-training: the option of each TrainSettings field, for its one-line errors
_TRAIN_OPTIONS = {"network": "NETWORK", "lr_scaling": "--no-lr-scaling",
                  "zero_init_residual": "--no-zero-init-residual"}
# its numeric options: parsed here (one line naming the option), ranges checked by TrainSettings
_TRAIN_NUMBERS = {"sparsity": float, "iterations": int, "epochs": float, "batch": int,
                  "image_size": int, "trace_image_size": int, "trace_batch": int, "seed": int,
                  "lr": float, "momentum": float, "weight_decay": float, "label_smoothing": float,
                  "warmup": int, "topk_period": int, "checkpoint_every": int,
                  "checkpoint_minutes": float, "eval_limit": int}


def _train_option(name: str) -> str:
    return _TRAIN_OPTIONS.get(name, "--" + name.replace("_", "-"))


def _train_number(name: str, text: str | None):
    if text is None:
        return None
    kind = _TRAIN_NUMBERS[name]
    try:
        return int(text) if kind is int else float(text)
    except ValueError:
        raise ConfigError(f"{_train_option(name)}: expected {'an integer' if kind is int else 'a number'}, "
                          f"got {text[:40]!r}") from None


def _train_iterations(text: str | None) -> tuple[int, ...]:
    if text is None:
        return ()
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise ConfigError(f"--trace-at: expected comma-separated iterations, got {text[:40]!r}")
    return values


def _cmd_trace_from_training(args) -> int:
    from dataclasses import fields

    from workloads.data import DataError
    from workloads.trainer import SettingsError, TrainingError, TrainSettings, Trainer

    from .outputs import OutputError
    from .resources import MemoryLimitError, parse_gib

    numbers = {name: _train_number(name, getattr(args, name)) for name in _TRAIN_NUMBERS}
    max_memory = None if args.max_memory is None else parse_gib(args.max_memory, "--max-memory")
    trace_at = _train_iterations(args.trace_at)
    options = {f.name: _train_option(f.name) for f in fields(TrainSettings)}
    try:
        settings = TrainSettings(
            network=args.network, method=args.method, **numbers, dataset=args.dataset,
            data_dir=args.data_dir, lr_scaling=not args.no_lr_scaling, nesterov=args.nesterov,
            schedule=args.schedule, zero_init_residual=not args.no_zero_init_residual,
            topk_scope=args.topk_scope, trace_at=trace_at, out=args.out,
            run_dir=args.run_dir, resume=args.resume, max_memory=max_memory)
        trainer = Trainer(settings, option_names=options)
    except SettingsError as e:
        raise ConfigError(f"{_train_option(e.field)}: {e.detail}") from None
    except DataError as e:  # its messages may start with the data set's name: say it once
        message = str(e).removeprefix(f"{args.dataset}: ")
        raise ConfigError(f"--dataset {args.dataset}: {message}") from None
    except (ConfigError, TrainingError, TraceError, OutputError, MemoryLimitError) as e:
        raise ConfigError(str(e)) from None
    except ValueError as e:
        raise ConfigError(f"trace-from-training: {e}") from None
    settings = trainer.settings
    width = min(100, shutil.get_terminal_size((100, 24)).columns)
    print(textwrap.fill(trainer.plan(), width=width) + "\n", flush=True)
    try:  # a diverging run stops with one line; numpy's warnings on the way are not shown
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = trainer.run(progress=not args.quiet)
    except TrainingError as e:
        raise ConfigError(str(e)) from None
    last = result.log.iloc[-1] if len(result.log) else None
    print(f"{settings.name}: {result.iterations} iterations"
          + (f", final loss {last['loss']:.4f}, train accuracy {last['train_accuracy']:.1%}" if last is not None else "")
          + f", test accuracy {result.test_accuracy:.2%}")
    for path in result.traces:
        print(f"trace: {path}")
    print(f"log and checkpoint: {settings.run_path}")
    if args.verbose and last is not None:  # the log's measured sparsities, last iteration
        for layer in dict.fromkeys(c[2:] for c in result.log.columns if c[:2] in ("w:", "a:")):
            cells = [f"{what} sparsity {last[f'{k}:{layer}']:.1%}"
                     for k, what in (("w", "weight"), ("a", "saved-activation"))
                     if f"{k}:{layer}" in last.index and last[f"{k}:{layer}"] == last[f"{k}:{layer}"]]
            print(f"  {layer}: " + (", ".join(cells) or "not measured (a dense layer)"))
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


def _path(text: str) -> str:
    """A path option: not empty, no control characters (a newline or escape in a path is a
    mistake, and would break the one-line messages that quote it)."""
    from .safe_yaml import cut, has_control_characters

    if not text or has_control_characters(text):
        raise argparse.ArgumentTypeError(f"expected a non-empty path without control characters, got "
                                         f"{cut(repr(text))}")
    return text


def _rephrase(message: str) -> str:
    """argparse's error `message` as `<what>: expected <...>, got <...>`, like the other
    input errors (argparse 3.8-3.13 wording; anything else is kept as it is)."""
    m = re.fullmatch(r"argument (\S+): (.*)", message, re.S)
    what, rest = (m.group(1).split("/")[-1], m.group(2)) if m else ("", message)
    rules = (
        (r"invalid choice: (.*) \(choose from (.*)\)",
         lambda g: f"expected one of {g[2].replace(chr(39), '')}, got {g[1]}"),
        (r"invalid (\S+) value: (.*)", lambda g: f"expected {'an' if g[1][0] in 'aeiou' else 'a'} "
         f"{g[1]}, got {g[2]}"),
        (r"expected (one|at least one) argument", lambda g: "expected a value, got none"),
        (r"ignored explicit argument (.*)", lambda g: f"expected no value (a flag), got {g[1]}"),
        (r"not allowed with argument (\S+)",
         lambda g: f"expected at most one of {g[1].split('/')[-1]} and {what}, got both"),
        (r"the following arguments are required: (.*)",
         lambda g: f"{g[1]}: expected {'a value' if ',' not in g[1] else 'values'}, got none"),
        (r"one of the arguments (.*) is required",
         lambda g: f"{' or '.join(g[1].split())}: expected one of them, got none"),
        (r"unrecognized arguments: (.*)",
         lambda g: f"{g[1]}: expected " + ("the command's options, got " if g[1].startswith("-")
                                           else "no more arguments, got ")
         + ("an " if " " not in g[1] else "") + ("unknown option" if g[1].startswith("-")
                                                 else "extra argument") + ("s" if " " in g[1] else "")),
        (r"ambiguous option: (\S+) could match (.*)",
         lambda g: f"{g[1]}: expected one option, got an abbreviation of {g[2]}"),
    )
    for pattern, say in rules:
        m = re.fullmatch(pattern, rest, re.S)
        if m:
            rest = say(m)
            break
    return f"{what}: {rest}" if what else rest


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, `accelsim: error: <command>: <what>: expected
    <...>, got <...>`, and exit code 2, like every other input error (the usage is what
    `--help` shows)."""

    def error(self, message: str):
        from .safe_yaml import cut

        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        where = f"{command}: " if command else ""
        self.exit(EXIT_INPUT, f"accelsim: error: {where}{cut(_rephrase(message), 300)} "
                              f"(accelsim {command + ' ' if command else ''}--help lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="accelsim", description="Cycle-level simulator of a Bit-Tactical-style sparse "
        "training accelerator.")
    parser.add_argument("--version", action="version", version=f"accelsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = sub.choices

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("config", nargs="?", type=_path, help="YAML config file, e.g. configs/tactical.yaml "
                        "(with --trace: optional, default tactical.yaml's array and memory)")
    common.add_argument("--trace", metavar="DIR", type=_path, help="simulate this trace directory (from "
                        "trace-from-training) as the workload, on CONFIG's architecture, "
                        "lowering and memory; output to reports/<config>-<trace>/")
    common.add_argument("--max-memory", type=_gib, metavar="GIB", help="refuse a workload whose "
                        "estimated peak memory exceeds GIB (default: the memory available now, "
                        "or $ACCELSIM_MAX_MEMORY)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("run", parents=[common], help="simulate a config and write results.csv",
                       description="Simulate every workload point and pass of CONFIG, print a "
                       "SWAT Table-11 style summary and write results.csv.")
    p.add_argument("--out", metavar="DIR", type=_path, help="output directory (default: the config's "
                   "output.dir, else reports/<config name>/)")
    p.add_argument("--plots", action="store_true", help="also write the plots of `accelsim "
                   "report` (PNG and SVG) next to results.csv")
    p.add_argument("--workers", type=_positive(int), metavar="N", help="threads simulating layers "
                   f"at once (default: the cores this process may use, here {available_cores()}); "
                   "results do not depend on it")
    p.add_argument("-v", "--verbose", action="store_true", help="also a line per layer and pass "
                   "(cycles, stalls, speedup, DRAM traffic) before the summary")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("report", help="plot a results directory (PNG and SVG)",
                       description="Read RESULTS_DIR/results.csv (written by `accelsim run`) and "
                       "write, per network, PNG and SVG plots next to it: per-layer speedup per "
                       "pass, network speedup vs sparsity with the ideal 1/(1-s) and the front-end "
                       "cap h+1, DRAM traffic per tensor class, and utilization per layer and pass.")
    p.add_argument("results_dir", metavar="RESULTS_DIR", type=_path, help="directory holding results.csv, "
                   "e.g. reports/tactical")
    p.add_argument("--all", action="store_true", help="for a merged sweep of more than 8 "
                   "configurations, draw every configuration's plots instead of the sweep maps")
    p.add_argument("-q", "--quiet", action="store_true", help="do not list the files written")
    p.add_argument("-v", "--verbose", action="store_true", help="also the size of each file")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("check", parents=[common], help="functional check of the schedules",
                       description="Recompute every simulated layer's output from the "
                       "scheduled buffers and compare it with a NumPy reference. Exits 2 and "
                       "names the layer and pass on any mismatch.")
    p.add_argument("-v", "--verbose", action="store_true", help="also a line per matching layer "
                   "and pass with its max abs error (mismatches are always printed, on stderr)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("sweep", help="run every point of a design-space sweep (resumable)",
                       description="Run every point of SWEEP_CONFIG (a base config plus lists of "
                       "values for dotted keys; the points are their Cartesian product), in local "
                       "worker processes or on a Dask cluster, and merge all rows, with one column "
                       "per swept key, into results.csv (and per-phase sums into summary.csv). "
                       "Finished points are kept in points/, so a re-run only runs what is left.")
    p.add_argument("config", metavar="SWEEP_CONFIG", type=_path, help="sweep file, e.g. configs/sweep.yaml")
    p.add_argument("--out", metavar="DIR", type=_path, help="output directory (default: the sweep file's "
                   "output.dir, else reports/<sweep name>/)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive(int), metavar="N",
                       help="local worker processes, one BLAS/numba thread each (default 1: run "
                       "in this process)")
    where.add_argument("--dask-scheduler", metavar="tcp://HOST:PORT", help="run the points on the "
                       "Dask distributed cluster with this scheduler (needs the `distributed` extra)")
    from .sweep import MAX_POINTS

    p.add_argument("--max-points", type=_positive(int), metavar="N", default=MAX_POINTS,
                   help="refuse a sweep of more than N points (the product of its value lists' "
                   "lengths) before building any (default %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="a line per finished point, every "
                   "skipped combination and unfinished point file")
    p.set_defaults(func=_cmd_sweep)

    from workloads.data import DATASETS, FASHION_MNIST_DIR
    from workloads.networks import NETWORKS
    from workloads.sparsity import METHODS

    p = sub.add_parser("trace-from-training", help="train with SWAT in NumPy and export traces",
                       description="Train NETWORK with a sparsity method on a dataset, evaluate it "
                       "on the test split, and export the sparse tensors of the requested "
                       "iterations as traces that `accelsim run` can simulate. Bad values, a run "
                       "that would not fit in memory, unusable output paths and unusable "
                       "checkpoints are refused with one line before training.")
    p.add_argument("network", choices=NETWORKS, metavar="NETWORK", help=f"one of {', '.join(NETWORKS)}")
    p.add_argument("--method", default="swat-u", choices=METHODS, help="sparsity method (default %(default)s)")
    p.add_argument("--sparsity", default="0.8", metavar="S", help="target sparsity in [0, 1) (default %(default)s)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--iterations", metavar="N", help="SGD steps, 1 to 2**31-1 (default: "
                       "one epoch, see --epochs)")
    steps.add_argument("--epochs", metavar="E", help="passes over the training split, a number "
                       "> 0 (default 1)")
    p.add_argument("--batch", metavar="B", help="training batch (default: the network's "
                   "recipe, 32 for the ImageNet-shaped networks, 64 for simple-cnn)")
    p.add_argument("--image-size", metavar="N", help="training resolution in pixels "
                   "(default: the recipe's, 64 for the ImageNet-shaped networks, 28 for simple-cnn)")
    p.add_argument("--trace-image-size", metavar="N", help="resolution of "
                   "the recorded iteration (default: the network's native size, 224 for the "
                   "ImageNet-shaped networks, when its weights do not depend on the size)")
    p.add_argument("--dataset", default="fashion-mnist", choices=DATASETS, metavar="NAME",
                   help=f"{', '.join(DATASETS)} (default %(default)s)")
    p.add_argument("--data-dir", metavar="DIR", type=_path, help="where the dataset's files are "
                   f"(default {FASHION_MNIST_DIR} for fashion-mnist; required for cifar10: "
                   "cifar-10-batches-py or its parent)")
    p.add_argument("--trace-batch", metavar="B", help="samples in the recorded iteration "
                   "(default: the recipe's, 1 for the ImageNet-shaped networks)")
    p.add_argument("--trace-at", metavar="I,...", help="iterations to export (default: the last)")
    p.add_argument("--out", metavar="DIR", type=_path, help="trace directory (default traces/<network>-<method>-<sparsity>)")
    p.add_argument("--run-dir", metavar="DIR", type=_path, help="log and checkpoint directory (default runs/<trace name>)")
    p.add_argument("--seed", default="0", metavar="N", help="seed of initialisation, shuffling and "
                   "augmentation, 0 to 2**63-1 (default %(default)s)")
    p.add_argument("--threads", type=_positive(int), metavar="N", help="BLAS and numba threads (default: all; 1 under CI)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's "
                   "checkpoint (refused unless it and log.csv are this run's, complete and intact)")
    p.add_argument("--max-memory", metavar="GIB", help="refuse a run whose estimated peak memory "
                   "is above GIB GiB (default: the memory available when it starts, or "
                   "$ACCELSIM_MAX_MEMORY)")
    p.add_argument("--lr", metavar="LR", help="learning rate at batch 256, scaled "
                   "linearly to --batch (default: the recipe's, 0.1 for the ResNets)")
    p.add_argument("--no-lr-scaling", action="store_true", help="use --lr as given, whatever the batch")
    p.add_argument("--momentum", default="0.9", metavar="M", help="SGD momentum in [0, 1) (default %(default)s)")
    p.add_argument("--nesterov", action="store_true", help="use Nesterov momentum (default: plain momentum)")
    p.add_argument("--weight-decay", default="5e-4", metavar="WD", help="L2 weight decay >= 0, not on "
                   "batch-norm parameters (default %(default)s)")
    p.add_argument("--label-smoothing", default="0", metavar="EPS", help="label smoothing in [0, 1) "
                   "(default %(default)s)")
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine",
                   help="learning-rate schedule after warm-up: %(choices)s (default %(default)s)")
    p.add_argument("--warmup", metavar="N", help="iterations of linear warm-up, at most the run's "
                   "(default: 5%% of the run)")
    p.add_argument("--no-zero-init-residual", action="store_true", help="start residual "
                   "branches' last batch-norm scale at 1 instead of 0")
    p.add_argument("--topk-scope", choices=("NCHW", "CHW", "HW"), default="NCHW",
                   help="what one Top-K selection covers: NCHW the whole tensor, CHW each slice "
                   "of its first axis (a sample, or a weight's output filter), HW each channel of "
                   "those (default %(default)s)")
    p.add_argument("--topk-period", default="1", metavar="N", help="iterations between Top-K "
                   "thresholds (default %(default)s)")
    p.add_argument("--checkpoint-every", default="100", metavar="N",
                   help="checkpoint and log every N iterations (default %(default)s)")
    p.add_argument("--checkpoint-minutes", default="4", metavar="MIN",
                   help="and whenever this many minutes have passed since the last (default %(default)s)")
    p.add_argument("--eval-limit", metavar="N", help="test samples to evaluate (default all)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also the measured sparsity of every layer at the last iteration")
    p.set_defaults(func=_cmd_trace_from_training)

    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", help="only the tables, no notes")
    quiet.add_argument("-v", "--verbose", action="store_true", help="per-layer detail")

    p = sub.add_parser("flops", parents=[quiet], help="analytic training-FLOP model (SWAT A.3)",
                       description="MACs and FLOPs of one training iteration per pass, dense vs "
                       "sparse, and their reduction, after SWAT appendix A.3: forward and "
                       "input-gradient MACs scale with the weights' density, weight-gradient "
                       "MACs with the activations'; the first layer stays dense; BN excluded.")
    p.add_argument("network", metavar="NETWORK", help=f"one of {', '.join(NETWORKS)}")
    p.add_argument("--sparsity", required=True, metavar="S[,S...]",
                   help="Top-K sparsity in [0, 1), or several comma-separated")
    p.add_argument("--method", default="swat-u", metavar="M",
                   help="dense, swat-u (default), saw, meprop or sparse-learning")
    p.add_argument("--activation-sparsity", metavar="A", help="sparsity of the activations the "
                   "weight gradient reads (default: S for swat-u and saw, 0.5 for sparse-learning)")
    p.add_argument("--image-size", metavar="N", help="input size in pixels (default: the network's)")
    p.add_argument("--batch", default="1", metavar="B", help="samples per iteration (default %(default)s)")
    p.add_argument("--counting", default="a3", metavar="C", help="a3 (default: input gradient "
                   "counted as A.3 eq. 5, as SWAT Table 3) or true (every pass = forward MACs)")
    p.add_argument("--dense-layers", metavar="NAMES", help="comma-separated layers kept dense "
                   "(default: the first conv), or 'none'")
    p.add_argument("--no-first-input-grad", action="store_true",
                   help="leave out the first layer's input gradient (A.3 counts it)")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("topk-overhead", parents=[quiet], help="periodic Top-K overhead model (SWAT A.4)",
                       description="Training speedup of SWAT with a Top-K recomputation every P "
                       "iterations, SWAT A.4 eq. 7-8. Without options, the paper's inputs (147 ms "
                       "step, 470 ms Top-K, P = 1000, 76.1% and 85.6% FLOP reduction) give its "
                       "4.13x and 6.79x. --measure NETWORK times our own Top-K (np.partition and "
                       "the numba radix select) on this machine over the network's tensors.")
    p.add_argument("--step-ms", metavar="T", help="dense forward+backward step time in ms (default "
                   "147, SWAT Table 10; with --measure, 147 scaled by the network's MACs)")
    p.add_argument("--topk-ms", metavar="K", help="time of one Top-K recomputation in ms (default 470)")
    p.add_argument("--period", metavar="P", help="iterations between recomputations (default 1000)")
    p.add_argument("--reduction", metavar="R[,R...]", help="training-FLOP reductions in [0, 1) "
                   "(default 0.761,0.856; with --measure, from the A.3 model at each --sparsity)")
    p.add_argument("--sparsity", metavar="S[,S...]", help="with --measure: Top-K sparsities "
                   "(default 0.8,0.9); otherwise labels for --reduction")
    p.add_argument("--measure", metavar="NETWORK", help="time our Top-K over NETWORK's weights and "
                   "saved activations (default: no timing, the paper's inputs)")
    p.add_argument("--batch", metavar="B", help="with --measure: batch of the activations (default 32)")
    p.add_argument("--image-size", metavar="N", help="with --measure: input size (default: the network's)")
    p.add_argument("--repeat", metavar="N", help="with --measure: best of N timings, at most 100 "
                   "(default 1)")
    p.add_argument("--max-memory", metavar="GIB", help="with --measure: refuse sizes whose "
                   "tensors would need more than GIB GiB (default: the memory available, or "
                   "$ACCELSIM_MAX_MEMORY)")
    p.set_defaults(func=cmd_topk_overhead)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the command's parser, which says which command's --help to read
        parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        print("accelsim: error: expected a command: run, report, check, sweep, "
              "trace-from-training, flops or topk-overhead (accelsim --help describes them)",
              file=sys.stderr)
        return EXIT_INPUT
    os.environ["MPLBACKEND"] = "Agg"  # the commands only write files; ignore a GUI backend
    threads = getattr(args, "threads", None)
    if threads and argv is None and os.environ.get("OMP_NUM_THREADS") != str(threads):
        env = {k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update(env)  # BLAS reads these only at start-up: run the command again
        os.execv(sys.executable, [sys.executable, "-m", "simulator.cli", *sys.argv[1:]])
    _set_threads(threads)
    try:
        return args.func(args)
    except (ConfigError, TraceError, OutputError, MemoryLimitError) as e:
        print(f"accelsim: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("accelsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `accelsim ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except MemoryError:  # what the estimates before the work did not foresee
        print("accelsim: error: out of memory: the run needed more memory than this process "
              "may use; lower the batch, image size or lanes", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
