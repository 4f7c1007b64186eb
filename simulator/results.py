"""Result rows, the Table-11 style summary, and atomic file writing.

One row per (network, sparsity, layer, pass). Units: cycles at the array clock,
`time_us` in microseconds at `frequency_mhz`, MACs, bytes. Whole-network figures are
ratios of summed cycles, never averages of per-layer speedups.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .array import PassTiming
from .config import Architecture
from .lowering import LoweredPass

COLUMNS = ["network", "sparsity", "layer", "kind", "pass", "scheduled_operand", "frontend",
           "cycles", "compute_cycles", "stall_cycles", "dense_cycles", "ideal_cycles",
           "speedup", "ideal_speedup", "macs", "effectual_macs", "utilization",
           "weight_sparsity", "input_sparsity", "dram_read_bytes", "dram_write_bytes", "time_us"]


def result_row(network: str, sparsity: float, kind: str, lowered: LoweredPass, timing: PassTiming,
               arch: Architecture, weight_sparsity: float, input_sparsity: float) -> dict:
    """One result row (DRAM traffic and stalls are 0 until the memory model exists)."""
    c = timing.cycles
    return {
        "network": network, "sparsity": sparsity, "layer": lowered.layer, "kind": kind,
        "pass": lowered.pass_name, "scheduled_operand": lowered.scheduled_operand,
        "frontend": str(arch.frontend), "cycles": c, "compute_cycles": c, "stall_cycles": 0,
        "dense_cycles": timing.dense_cycles, "ideal_cycles": timing.ideal_cycles,
        "speedup": timing.dense_cycles / c if c else np.nan,
        "ideal_speedup": timing.dense_cycles / timing.ideal_cycles if timing.ideal_cycles else np.nan,
        "macs": lowered.macs, "effectual_macs": lowered.effectual_macs,
        "utilization": lowered.effectual_macs / (c * arch.peak_macs_per_cycle) if c else 0.0,
        "weight_sparsity": weight_sparsity, "input_sparsity": input_sparsity,
        "dram_read_bytes": 0, "dram_write_bytes": 0,
        "time_us": c / arch.frequency_mhz,
    }


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per (network, pass, sparsity): summed cycles, speedup over the dense array, over the
    0% run of the same array (NaN if there is none), and the ideal speedup."""
    keys = ["network", "pass", "sparsity"]
    sums = results.groupby(keys, sort=False)[["cycles", "dense_cycles", "ideal_cycles"]].sum()
    out = sums.reset_index()
    out["speedup"] = out["dense_cycles"] / out["cycles"]
    base = out[out["sparsity"] == 0.0].set_index(["network", "pass"])["cycles"]
    zero = [base.get((n, p), np.nan) for n, p in zip(out["network"], out["pass"])]
    out["speedup_vs_0"] = np.array(zero, dtype=float) / out["cycles"]
    out["ideal_speedup"] = out["dense_cycles"] / out["ideal_cycles"]
    return out


def format_summary(summary: pd.DataFrame, title: str) -> str:
    """The summary as a plain-text table, one block per (network, pass)."""
    lines = [title]
    for (net, pas), block in summary.groupby(["network", "pass"], sort=False):
        lines.append(f"\n{net}, {pas} pass")
        header = (f"{'sparsity':>9} {'cycles':>15} {'speedup':>8} {'vs 0%':>7} {'ideal':>7}")
        lines += [header, "-" * len(header)]
        for r in block.itertuples(index=False):
            vs0 = "-" if np.isnan(r.speedup_vs_0) else f"{r.speedup_vs_0:.2f}x"
            lines.append(f"{r.sparsity:>8.0%} {r.cycles:>15,d} {r.speedup:>7.2f}x {vs0:>7} "
                         f"{r.ideal_speedup:>6.2f}x")
    lines.append("\nspeedup: dense array cycles / cycles; vs 0%: cycles of the 0% run on the same "
                 "array / cycles; ideal: dense / ceil(non-zeros / lanes) per filter lane.")
    return "\n".join(lines)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give a plain file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_results(results: pd.DataFrame, path: str | os.PathLike) -> Path:
    return write_atomic(path, results.to_csv(index=False))
