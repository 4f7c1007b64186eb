"""The periodic Top-K overhead model (SWAT A.4, eq. 7-8), `accelsim topk-overhead`, and
the Top-K timing helper behind `--measure`."""

from __future__ import annotations

import numpy as np
import pytest

from tests.util import one_line_error
from simulator.cli import main
from simulator.topk_overhead import (PAPER_PERIOD, PAPER_REDUCTIONS, PAPER_SPEEDUPS, PAPER_STEP_MS,
                                     PAPER_TOPK_MS, Case, overhead_table, periodic_topk_speedup,
                                     topk_share)
from workloads.networks import build_network
from workloads.topk_timing import time_topk, topk_tensors


# --- the model -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sparsity", [0.8, 0.9])
def test_paper_inputs_give_the_papers_speedups(sparsity):
    assert (PAPER_STEP_MS, PAPER_TOPK_MS, PAPER_PERIOD) == (147.0, 470.0, 1000)
    speedup = periodic_topk_speedup(PAPER_STEP_MS, PAPER_REDUCTIONS[sparsity], PAPER_PERIOD,
                                     PAPER_TOPK_MS)
    assert round(speedup, 2) == PAPER_SPEEDUPS[sparsity]  # 4.13x and 6.79x


def test_equation_by_hand():
    # eq. 7 as printed: 1000 * 147 / (999 * (1 - 0.761) * 147 + 147 * (1 - 0.761) + 470)
    by_hand = 1000 * 147 / (999 * (1 - 0.761) * 147 + 147 * (1 - 0.761) + 470)
    assert periodic_topk_speedup(147, 0.761, 1000, 470) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(4.129, abs=5e-4)


def test_limits_and_monotonicity():
    assert periodic_topk_speedup(10.0, 0.75, 100, 0.0) == pytest.approx(4.0)  # free Top-K: 1/(1-R)
    assert periodic_topk_speedup(10.0, 0.0, 1, 0.0) == pytest.approx(1.0)
    assert periodic_topk_speedup(10.0, 0.5, 1, 5.0) == pytest.approx(1.0)  # T / ((1-R)T + K)
    periods = [periodic_topk_speedup(147, 0.856, p, 470) for p in (1, 10, 100, 1000, 10**6)]
    assert all(a < b for a, b in zip(periods, periods[1:]))
    assert periods[-1] < 1 / (1 - 0.856)
    topks = [periodic_topk_speedup(147, 0.856, 1000, k) for k in (0, 100, 470, 5000)]
    assert all(a > b for a, b in zip(topks, topks[1:]))
    # the Top-K share and the speedup tell the same story
    share = topk_share(147, 0.761, 1000, 470)
    assert periodic_topk_speedup(147, 0.761, 1000, 470) == pytest.approx((1 - share) / (1 - 0.761))


def test_table():
    t = overhead_table([Case(0.761, 147, 470, 1000, 0.8), Case(0.5, 1.0, 0.0, 1)])
    assert list(t["speedup"].round(2)) == [4.13, 2.0]
    assert list(t["ideal_speedup"].round(2)) == [4.18, 2.0]
    assert t["sparsity"].isna().tolist() == [False, True]


@pytest.mark.parametrize("args, match", [
    ((0, 0.5, 10, 1), "step time"), ((1, 1.0, 10, 1), "FLOP reduction"),
    ((1, 0.5, 0, 1), "period"), ((1, 0.5, 2.5, 1), "period"), ((1, 0.5, 10, -1), "Top-K time"),
])
def test_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        periodic_topk_speedup(*args)


# --- the command ---------------------------------------------------------------------------------

def test_cli_no_arguments_reproduces_the_paper(capsys):
    assert main(["topk-overhead"]) == 0
    out = capsys.readouterr().out
    assert "4.13x" in out and "6.79x" in out
    assert "147 ms" in out and "470 ms" in out and "76.1%" in out and "85.6%" in out


def test_cli_own_numbers(capsys):
    assert main(["topk-overhead", "--step-ms", "100", "--topk-ms", "0", "--reduction", "0.5,0.75",
                 "--period", "10", "-q"]) == 0
    out = capsys.readouterr().out
    assert "2.00x" in out and "4.00x" in out and "SWAT" not in out
    assert main(["topk-overhead", "--topk-ms", "1000", "--reduction", "0.9", "--sparsity", "0.9",
                 "--period", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{147 / (14.7 + 1000):.2f}x" in out and "90%" in out


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["topk-overhead", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in ("--step-ms", "--topk-ms", "--period", "--reduction", "--measure", "--batch", "-q", "-v"):
        assert word in out


@pytest.mark.parametrize("argv, fragments", [
    (["--reduction", "1.5"], ["--reduction: expected a number in [0, 1), got 1.5"]),
    (["--period", "0"], ["--period: expected an integer >= 1, got 0"]),
    (["--period", "2.5"], ["--period: expected an integer >= 1, got 2.5"]),
    (["--step-ms", "0"], ["--step-ms: expected a positive number, got 0"]),
    (["--topk-ms", "-3"], ["--topk-ms: expected a number >= 0, got -3"]),
    (["--sparsity", "0.8"], ["--sparsity", "--reduction"]),
    (["--reduction", "0.7", "--sparsity", "0.8,0.9"], ["--sparsity: expected one value per --reduction (1), got 2"]),
    (["--batch", "8"], ["--batch: only used with --measure"]),
    (["--measure", "simple-cnn", "--topk-ms", "3"], ["--topk-ms: not used with --measure"]),
    (["--measure", "resnet51"], ["--measure: expected one of", "resnet51"]),
    (["--measure", "simple-cnn", "--sparsity", "1"], ["--sparsity: expected a number in [0, 1), got 1"]),
    (["--measure", "simple-cnn", "--batch", "0"], ["--batch: expected an integer >= 1, got 0"]),
])
def test_cli_bad_input_is_one_line_exit_2(capsys, argv, fragments):
    assert main(["topk-overhead", *argv]) == 2
    one_line_error(capsys.readouterr().err, *fragments)


def test_cli_measure_small_network(capsys):
    assert main(["topk-overhead", "--measure", "simple-cnn", "--batch", "2", "--sparsity", "0.8",
                 "-v"]) == 0
    out = capsys.readouterr().out
    assert "np.partition" in out and "radix select" in out
    assert out.count("speedup w/o Top-K") == 2  # one table per implementation
    assert "fc1" in out  # -v: per tensor
    assert "SWAT Table 10" in out  # where the default step time comes from


def test_cli_measure_mismatched_reductions(capsys):
    assert main(["topk-overhead", "--measure", "simple-cnn", "--reduction", "0.5"]) == 2
    one_line_error(capsys.readouterr().err, "--reduction: expected one value per --sparsity (2), got 1")


def test_cli_measure_with_given_step_and_reduction(capsys):
    assert main(["topk-overhead", "--measure", "simple-cnn", "--batch", "1", "--sparsity", "0.5",
                 "--reduction", "0.5", "--step-ms", "1000", "--period", "1000000", "-q"]) == 0
    out = capsys.readouterr().out
    # with a huge period and a long step, Top-K vanishes: 1 / (1 - 0.5)
    assert out.count("2.00x") >= 4


# --- the timing helper ---------------------------------------------------------------------------

def test_topk_tensors_skip_the_first_conv_and_follow_the_shapes():
    net = build_network("simple-cnn")
    tensors = topk_tensors(net, batch=3)
    assert net.first_conv not in {t[0] for t in tensors}
    assert len(tensors) == 2 * (len(net.layers) - 1)
    for name, kind, shape in tensors:
        lay = net.layer(name)
        assert shape == (lay.weight_shape if kind == "weight" else lay.input_shape(3))
    assert len(topk_tensors(net, 1, dense_layers=())) == 2 * len(net.layers)


def test_time_topk_rows():
    net = build_network("simple-cnn")
    t = time_topk(net, 2, 0.9, implementations=("partition",))
    assert list(t.columns) == ["layer", "tensor", "elements", "partition_ms"]
    assert (t["partition_ms"] > 0).all()
    expected = [int(np.prod(s)) for _, _, s in topk_tensors(net, 2)]
    assert t["elements"].tolist() == expected
    with pytest.raises(ValueError, match="implementation"):
        time_topk(net, 2, 0.9, implementations=("sort",))
