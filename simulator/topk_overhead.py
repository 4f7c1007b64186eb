"""Top-K overhead model of SWAT appendix A.4, equations 7 and 8 (units: any one time
unit, milliseconds in the CLI; fractions for reductions and shares).

SWAT recomputes its Top-K thresholds once every `period` iterations and reuses them in
between. If a dense training step (forward + backward) takes T, the sparse step takes
(1 - R) T, where R is the training-FLOP reduction (`simulator.flops`, assuming the
hardware turns fewer FLOPs into proportionally less time), and a Top-K recomputation
(thresholds of all sparsified weight and activation tensors) takes K, then over one
period

    speedup = P T / ((P - 1)(1 - R) T + (1 - R) T + K)          (A.4, eq. 7 and 8)

i.e. P - 1 plain sparse iterations, one sparse iteration that also runs Top-K, against
P dense iterations. The paper's inputs (Table 10: ResNet-50, batch 32, RTX 2080 Ti):
T = 147 ms ("Forward + Backward Pass"), K = 470 ms ("Total Top-K Overhead" = 18 ms for
the weights + 452 ms for the activations), P = 1000 (the ImageNet period of section
4.1), R = 76.1% and 85.6% (Table 3, at 80% and 90% sparsity); they give 4.13x and 6.79x.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

PAPER_STEP_MS = 147.0       # SWAT Table 10: dense forward + backward, ResNet-50, batch 32
PAPER_TOPK_MS = 470.0       # SWAT Table 10: total Top-K overhead (18 ms weights + 452 ms activations)
PAPER_PERIOD = 1000         # SWAT 4.1: ImageNet thresholds recomputed every 1000 iterations
PAPER_REDUCTIONS = {0.8: 0.761, 0.9: 0.856}  # SWAT Table 3: ResNet-50 SWAT-U training FLOPs
PAPER_SPEEDUPS = {0.8: 4.13, 0.9: 6.79}      # SWAT A.4, eq. 7 and 8


def _check(step_time: float, flop_reduction: float, period: int, topk_time: float) -> None:
    if not step_time > 0:
        raise ValueError(f"step time: expected a positive number, got {step_time!r}")
    if not 0.0 <= flop_reduction < 1.0:
        raise ValueError(f"FLOP reduction: expected a number in [0, 1), got {flop_reduction!r}")
    if isinstance(period, bool) or int(period) != period or period < 1:
        raise ValueError(f"period: expected an integer >= 1, got {period!r}")
    if not topk_time >= 0:
        raise ValueError(f"Top-K time: expected a number >= 0, got {topk_time!r}")


def periodic_topk_speedup(step_time: float, flop_reduction: float, period: int,
                          topk_time: float) -> float:
    """Eq. 7/8: training speedup over dense with a Top-K recomputation every `period`
    iterations (`step_time` and `topk_time` in the same unit)."""
    _check(step_time, flop_reduction, period, topk_time)
    sparse_step = (1.0 - flop_reduction) * step_time
    return period * step_time / ((period - 1) * sparse_step + sparse_step + topk_time)


def topk_share(step_time: float, flop_reduction: float, period: int, topk_time: float) -> float:
    """Fraction of the sparse run's time spent in Top-K."""
    _check(step_time, flop_reduction, period, topk_time)
    return topk_time / (period * (1.0 - flop_reduction) * step_time + topk_time)


@dataclass(frozen=True)
class Case:
    """One line of the model: a FLOP reduction (at a sparsity, if known) and the timings."""

    flop_reduction: float
    step_time: float
    topk_time: float
    period: int
    sparsity: float | None = None


def overhead_table(cases: Sequence[Case]) -> pd.DataFrame:
    """One row per case: sparsity, flop_reduction, step_time, topk_time, period,
    ideal_speedup (1 / (1 - R): Top-K free), speedup (eq. 7/8), topk_share."""
    rows = []
    for c in cases:
        rows.append({
            "sparsity": c.sparsity, "flop_reduction": c.flop_reduction, "step_time": c.step_time,
            "topk_time": c.topk_time, "period": c.period,
            "ideal_speedup": 1.0 / (1.0 - c.flop_reduction),
            "speedup": periodic_topk_speedup(c.step_time, c.flop_reduction, c.period, c.topk_time),
            "topk_share": topk_share(c.step_time, c.flop_reduction, c.period, c.topk_time),
        })
    return pd.DataFrame(rows)


def format_overhead(table: pd.DataFrame, unit: str = "ms") -> str:
    """Text table of `overhead_table` output."""
    head = (f"{'sparsity':>9}{'FLOP reduction':>16}{'step':>13}{'Top-K':>13}{'period':>8}"
            f"{'speedup w/o Top-K':>19}{'speedup':>9}{'Top-K share':>13}")
    lines = [head, "-" * len(head)]
    for _, r in table.iterrows():
        s = "-" if pd.isna(r["sparsity"]) else f"{r['sparsity']:.0%}"
        lines.append(f"{s:>9}{r['flop_reduction']:>16.1%}{r['step_time']:>10.4g} {unit}"
                     f"{r['topk_time']:>10.4g} {unit}{int(r['period']):>8d}"
                     f"{r['ideal_speedup']:>18.2f}x{r['speedup']:>8.2f}x{r['topk_share']:>13.1%}")
    return "\n".join(lines)
