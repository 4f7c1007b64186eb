"""The argument parser of the `accelsim` command line (`simulator.cli` runs the commands).

Every subcommand's options with their help and defaults, and the one-line argument
errors (`_Parser.error`: ``accelsim: error: <command>: <option>: expected ..., got ...``,
exit code 2, no usage dump).
"""

from __future__ import annotations

import argparse
import re

from . import __version__
from .analytic_commands import cmd_flops, cmd_topk_overhead
from .resources import available_cores

EXIT_INPUT = 2  # bad input (simulator.cli's exit codes)

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
    from .cli import _cmd_check, _cmd_report, _cmd_run, _cmd_sweep, _cmd_trace_from_training
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
                       "pass, network speedup vs sparsity with the work bound 1/(1-s) and the "
                       "front-end cap h+1, DRAM traffic per tensor class, utilization per layer and "
                       "pass, and (results with energy) where the energy goes.")
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
