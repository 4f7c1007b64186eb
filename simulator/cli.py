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

import os
import shutil
import sys
import textwrap
import warnings
from pathlib import Path

from .config import ConfigError, load_config
from .cli_parser import build_parser
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
