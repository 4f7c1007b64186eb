"""Argument errors of every subcommand are one line (no usage, no traceback, exit 2), every
option's help states its default, and a file given to the wrong command says which to use."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest
import yaml

from simulator.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
SWEEP_FILE = REPO / "configs" / "sweep.yaml"
RUN_CONFIG = REPO / "configs" / "tactical.yaml"


def errors_of(argv) -> tuple[int, str, str]:
    """main(argv)'s exit code (also when argparse exits), stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


# per subcommand: missing required arguments, unknown options, bad values, bad choices,
# excluded combinations and extra arguments; each must fail before any work
BAD = {
    "run": [[], ["--bogus"], ["--bogus", "--other"], ["a.yaml", "b.yaml"], ["x.yaml", "--workers", "0"],
            ["x.yaml", "--workers", "two"], ["x.yaml", "--max-memory", "abc"], ["x.yaml", "--out"],
            ["x.yaml", "-q=1"], ["nonexistent.yaml"], [SWEEP_FILE], ["--trace", "/nonexistent"]],
    "check": [[], ["x.yaml", "--out", "d"], ["x.yaml", "--plots"], ["x.yaml", "--max-memory", "-1"],
              ["nonexistent.yaml"], [SWEEP_FILE], ["x.yaml", "--verbose=yes"]],
    "report": [[], ["--bogus"], ["a", "b"], [""], ["/nonexistent-results"]],
    "sweep": [[], ["s.yaml", "--workers", "-1"], ["s.yaml", "--max-points", "x"],
              ["s.yaml", "--workers", "2", "--dask-scheduler", "tcp://h:1"], ["s.yaml", "--bogus"],
              ["nonexistent.yaml"], [RUN_CONFIG]],
    "trace-from-training": [
        [], ["resnet51"], ["simple-cnn", "--iterations", "0"], ["simple-cnn", "--iterations", "x"],
        ["simple-cnn", "--iterations", "1", "--epochs", "1"], ["simple-cnn", "--schedule", "linear"],
        ["simple-cnn", "--topk-scope", "C"], ["simple-cnn", "--dataset", "mnist"],
        ["simple-cnn", "--method", "nope"], ["simple-cnn", "--momentum", "1.5"],
        ["simple-cnn", "--seed", "-1"], ["simple-cnn", "--checkpoint-every", "0"],
        ["simple-cnn", "--threads", "0"], ["simple-cnn", "--sparsity"], ["simple-cnn", "--bogus"],
        ["simple-cnn", "extra"], ["simple-cnn", "--i", "3"]],
    "flops": [[], ["resnet18"], ["resnet51", "--sparsity", "0.5"], ["resnet18", "--sparsity", "x"],
              ["resnet18", "--sparsity", "1.5"], ["resnet18", "--sparsity", "0.5", "--batch", "0"],
              ["resnet18", "--sparsity", "0.5", "--method", "nope"],
              ["resnet18", "--sparsity", "0.5", "--bogus"]],
    "topk-overhead": [["--period", "0"], ["--step-ms", "x"], ["--reduction", "2"], ["--bogus"],
                      ["extra"], ["--measure", "resnet51"], ["--period"]],
}
CASES = [(cmd, argv) for cmd, lists in BAD.items() for argv in lists]


@pytest.mark.parametrize("command, argv", CASES, ids=[f"{c} {' '.join(map(str, a))}" for c, a in CASES])
def test_every_argument_error_is_one_line(tmp_path, monkeypatch, command, argv):
    monkeypatch.chdir(tmp_path)  # nothing is written anywhere but here
    rc, out, err = errors_of([command, *argv])
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and "usage:" not in err and "usage:" not in out, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("accelsim: error: "), err


@pytest.mark.parametrize("argv", [["simulate"], ["--bogus"], ["run", "x.yaml", "--bogus"]])
def test_top_level_errors_are_one_line(argv):
    rc, _, err = errors_of(argv)
    assert rc == 2 and len(err.splitlines()) == 1 and "usage:" not in err


@pytest.mark.parametrize("argv, message", [
    (["trace-from-training", "resnet51"],
     "accelsim: error: trace-from-training: NETWORK: expected one of resnet18, "),
    (["trace-from-training"], "accelsim: error: trace-from-training: NETWORK: expected a value, got none"),
    (["trace-from-training", "simple-cnn", "--iterations", "1", "--epochs", "1"],
     "accelsim: error: trace-from-training: --epochs: expected at most one of --iterations and "
     "--epochs, got both"),
    (["trace-from-training", "simple-cnn", "--schedule", "linear"],
     "accelsim: error: trace-from-training: --schedule: expected one of cosine, step, constant, "
     "got 'linear'"),
    (["run", "x.yaml", "--bogus"], "accelsim: error: run: --bogus: expected the command's options, "
     "got an unknown option (accelsim run --help lists the options)"),
    (["run", "a.yaml", "b.yaml"], "accelsim: error: run: b.yaml: expected no more arguments, got an "
     "extra argument"),
    (["flops"], "accelsim: error: flops: NETWORK, --sparsity: expected values, got none"),
    (["run", "x.yaml", "-q=1"], "accelsim: error: run: --quiet: expected no value (a flag), got '1'"),
    (["simulate"], "accelsim: error: COMMAND: expected one of run, report, check, sweep, "),
])
def test_argument_errors_say_expected_and_got(argv, message):
    rc, _, err = errors_of(argv)
    assert rc == 2 and err.startswith(message), err


def test_sweep_file_given_to_run_points_at_sweep(tmp_path):
    for command in ("run", "check"):
        rc, _, err = errors_of([command, SWEEP_FILE])
        assert rc == 2 and len(err.splitlines()) == 1
        assert "got a sweep file" in err and f"`accelsim sweep {SWEEP_FILE}`" in err, err
        assert "known keys" not in err
    (tmp_path / "manifest.yaml").write_text("{}\n")
    rc, _, err = errors_of(["run", SWEEP_FILE, "--trace", tmp_path])  # the CONFIG of --trace too
    assert rc == 2 and "got a sweep file" in err


def test_run_config_given_to_sweep_points_at_run():
    rc, _, err = errors_of(["sweep", RUN_CONFIG])
    assert rc == 2 and len(err.splitlines()) == 1
    assert "got a run config" in err and f"`accelsim run {RUN_CONFIG}`" in err, err


def test_a_sweep_file_with_an_unknown_key_still_names_the_key(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": str(RUN_CONFIG), "sweep": {"workload.seed": [1]},
                                    "bogus": 1}))
    rc, _, err = errors_of(["sweep", path])
    assert rc == 2 and "bogus: expected one of the known keys" in err, err


def test_data_set_errors_name_the_data_set_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    for dataset in ("fashion-mnist", "cifar10"):
        rc, _, err = errors_of(["trace-from-training", "simple-cnn", "--dataset", dataset,
                                "--data-dir", tmp_path / "empty", "--iterations", "1", "-q"])
        assert rc == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"accelsim: error: --dataset {dataset}: ") and err.count(f"{dataset}:") == 1, err


# --- help -----------------------------------------------------------------------------------------

FLAGS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
         argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def options():
    parser = build_parser()
    for name, sub in parser.commands.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                yield name, sub, action


OPTIONS = list(options())


@pytest.mark.parametrize("command, sub, action", OPTIONS,
                         ids=[f"{c} {a.option_strings[-1] if a.option_strings else a.dest}"
                              for c, _, a in OPTIONS])
def test_every_option_has_help_with_its_default(command, sub, action):
    assert action.help and action.help != argparse.SUPPRESS
    shown = sub._get_formatter()._expand_help(action)  # %(default)s etc. filled in
    assert shown.strip()
    if action.default is not None and not isinstance(action, FLAGS):
        assert f"default {action.default}" in shown or f"default: {action.default}" in shown \
            or f"{action.default} (default" in shown, (command, action.dest, shown)
    if action.choices and action.default is not None:
        assert action.default in action.choices


@pytest.mark.parametrize("option", ["--seed", "--momentum", "--nesterov", "--weight-decay",
                                    "--label-smoothing", "--schedule", "--topk-scope",
                                    "--checkpoint-every", "--dataset", "--data-dir", "--threads"])
def test_trace_from_training_help_describes(option, capsys):
    with pytest.raises(SystemExit) as info:
        main(["trace-from-training", "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    line = out.split(f" {option} ", 1)[1]
    assert "default" in line.split(" --", 1)[0], line[:200]


def test_check_help_describes_checks_own_verbose(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    check = " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    run = " ".join(capsys.readouterr().out.split())
    assert "max abs error" in check and "run:" not in check.split("-v, --verbose", 1)[1]
    assert "before the summary" in run and "max abs error" not in run
