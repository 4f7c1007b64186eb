"""Result rows, the Table-11 style summary, and atomic file writing.

One row per (network, sparsity, layer, pass). Units: cycles at the array clock,
`time_us` in microseconds at `frequency_mhz`, MACs, bytes. Whole-network figures are
ratios of summed cycles, never averages of per-layer speedups.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .array import PassTiming
from .config import Architecture
from .lowering import LoweredPass
from .trace import write_atomic

COLUMNS = ["network", "sparsity", "layer", "kind", "pass", "scheduled_operand", "frontend",
           "cycles", "compute_cycles", "stall_cycles", "dense_cycles", "ideal_cycles",
           "speedup", "ideal_speedup", "macs", "effectual_macs", "utilization",
           "weight_sparsity", "scheduled_sparsity", "broadcast_sparsity", "dram_read_bytes",
           "dram_write_bytes", "time_us"]


def result_row(network: str, sparsity: float, kind: str, lowered: LoweredPass, timing: PassTiming,
               effectual_macs: int, arch: Architecture, sparsities: dict) -> dict:
    """One result row (DRAM traffic and stalls are 0 until the memory model exists).
    `sparsities`: weight_sparsity, scheduled_sparsity, broadcast_sparsity (fractions)."""
    c = timing.cycles
    return {
        "network": network, "sparsity": sparsity, "layer": lowered.layer, "kind": kind,
        "pass": lowered.pass_name, "scheduled_operand": lowered.scheduled_tensor,
        "frontend": str(arch.frontend), "cycles": c, "compute_cycles": c, "stall_cycles": 0,
        "dense_cycles": timing.dense_cycles, "ideal_cycles": timing.ideal_cycles,
        "speedup": timing.dense_cycles / c if c else np.nan,
        "ideal_speedup": timing.dense_cycles / timing.ideal_cycles if timing.ideal_cycles else np.nan,
        "macs": lowered.macs, "effectual_macs": effectual_macs,
        "utilization": effectual_macs / (c * arch.peak_macs_per_cycle) if c else 0.0,
        **sparsities,
        "dram_read_bytes": 0, "dram_write_bytes": 0,
        "time_us": c / arch.frequency_mhz,
    }


PHASES = {"forward": ("forward",), "input_grad": ("input_grad",), "weight_grad": ("weight_grad",),
          "backward": ("input_grad", "weight_grad"),
          "iteration": ("forward", "input_grad", "weight_grad")}


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per (network, sparsity, phase): summed cycles, speedup over the dense array
    (dense_cycles / cycles), over the 0% run on the same array (NaN without one) and the
    ideal speedup (dense / ideal cycles). Phases: each simulated pass, `backward` (input +
    weight gradient) and `iteration` (all three), only where all the passes they sum were run."""
    present = set(results["pass"])
    rows = []
    for phase, passes in PHASES.items():
        if not set(passes) <= present:
            continue  # backward needs both gradient passes, iteration all three
        part = results[results["pass"].isin(passes)]
        sums = part.groupby(["network", "sparsity"], sort=False)[
            ["cycles", "dense_cycles", "ideal_cycles"]].sum().reset_index()
        sums.insert(2, "phase", phase)
        rows.append(sums)
    out = pd.concat(rows, ignore_index=True)
    out["speedup"] = out["dense_cycles"] / out["cycles"]
    base = out[out["sparsity"] == 0.0].set_index(["network", "phase"])["cycles"]
    zero = [base.get((n, p), np.nan) for n, p in zip(out["network"], out["phase"])]
    out["speedup_vs_0"] = np.array(zero, dtype=float) / out["cycles"]
    out["ideal_speedup"] = out["dense_cycles"] / out["ideal_cycles"]
    return out


def format_summary(summary: pd.DataFrame, title: str) -> str:
    """SWAT Table-11 style text: per network, cycles per phase, then speedups over the
    dense array, over the 0% run, and ideal, for forward / backward / iteration."""
    lines = [title]
    wide = ["forward", "backward", "iteration"]
    for net, block in summary.groupby("network", sort=False):
        phases = list(dict.fromkeys(block["phase"]))
        table = block.pivot(index="sparsity", columns="phase")
        lines.append(f"\n{net}: cycles")
        lines.append(f"{'sparsity':>9}" + "".join(f"{p:>15}" for p in phases))
        for s in table.index:
            lines.append(f"{s:>8.0%} " + "".join(f"{int(table.loc[s, ('cycles', p)]):>15,d}" for p in phases))
        shown = wide if "iteration" in phases else phases
        lines.append(f"\n{net}: speedup over the dense array / over the 0% run / ideal")
        lines.append(f"{'sparsity':>9}" + "".join(f"{p:>24}" for p in shown))
        for s in table.index:
            cells = []
            for p in shown:
                vs0 = table.loc[s, ("speedup_vs_0", p)]
                vs0 = "-" if np.isnan(vs0) else f"{vs0:.2f}x"
                cells.append(f"{table.loc[s, ('speedup', p)]:.2f}x / {vs0} / "
                             f"{table.loc[s, ('ideal_speedup', p)]:.2f}x")
            lines.append(f"{s:>8.0%} " + "".join(f"{c:>24}" for c in cells))
    sums = [t for p, t in (("backward", "backward = input_grad + weight_grad"),
                           ("iteration", "iteration = forward + backward")) if p in set(summary["phase"])]
    lines.append("\n" + "; ".join(sums + ["summed cycles; dense array: same array and lowering "
                                           "without skipping; ideal: ceil(non-zeros / lanes) per "
                                           "filter lane."]))
    return "\n".join(lines)


def write_results(results: pd.DataFrame, path: str | os.PathLike) -> Path:
    return write_atomic(path, results.to_csv(index=False))
