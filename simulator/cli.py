"""The `accelsim` command line.

    accelsim run CONFIG [--out DIR] [-q]     simulate, print the summary, write results.csv
    accelsim check CONFIG [-q]               functional check of every scheduled layer

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
    print(f"{total - failures} of {total} layer passes match the NumPy reference"
          + ("" if not failures else f"; {failures} FAILED"))
    return EXIT_INPUT if failures else EXIT_OK


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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_INPUT
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
