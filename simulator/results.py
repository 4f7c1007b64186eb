"""Result rows, the Table-11 style summary, and atomic file writing.

One row per (network, sparsity, layer, pass). Units: cycles at the array clock,
`time_us` in microseconds at `frequency_mhz`, MACs, bytes. Whole-network figures are
ratios of summed cycles (and bytes), never averages of per-layer ratios.

Cycles: `compute_cycles` (the array), `stall_cycles` (waiting for DRAM), `cycles` (their
sum); `dense_*` the same for the dense array moving dense training's traffic; `ideal`
the compute bound (on a bit-serial back-end: the bits or terms of a filter lane's
multiplications over its lanes x columns multipliers), and
`serial_bound_cycles` a bit-serial back-end's dense bound (bits cycles per step of the
dense stream; empty for the bit-parallel array). On a bit-serial back-end the dense
array is the bit-parallel one of the same peak. Speedups: `speedup` = dense_cycles / cycles (memory included),
`compute_speedup` = dense_compute_cycles / compute_cycles (the front-end alone, <= h+1),
`ideal_speedup` = dense_compute_cycles / ideal_cycles. Bytes: DRAM reads and writes, the
same split by tensor class, `dense_dram_bytes` (dense training), and on forward rows
the activation memory the backward pass keeps (the saved input as stored plus the dense
batch-norm input after the layer) and its dense-training size.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
from pathlib import Path

import numpy as np
import pandas as pd

from .array import PassTiming
from .config import Architecture
from .lowering import LoweredPass
from .outputs import write_atomic
from .traffic import PassTraffic

COLUMNS = ["network", "sparsity", "layer", "kind", "pass", "scheduled_operand", "frontend",
           "scheduler", "backend", "cycles", "compute_cycles", "stall_cycles", "bound", "dense_cycles",
           "dense_compute_cycles", "ideal_cycles", "serial_bound_cycles", "speedup", "compute_speedup", "ideal_speedup",
           "macs", "effectual_macs", "utilization", "weight_sparsity", "scheduled_sparsity",
           "broadcast_sparsity", "dram_read_bytes", "dram_write_bytes", "weight_bytes",
           "activation_bytes", "saved_activation_bytes", "gradient_bytes", "dense_dram_bytes",
           "compression_ratio", "refetch", "tiling", "tiles", "activation_memory_bytes",
           "dense_activation_memory_bytes", "energy_pj", "energy_mac_pj", "energy_sram_pj",
           "energy_dram_pj", "dense_energy_pj", "dense_energy_mac_pj", "dense_energy_sram_pj",
           "dense_energy_dram_pj", "energy_efficiency", "time_us"]


def result_row(network: str, sparsity: float, kind: str, lowered: LoweredPass, timing: PassTiming,
               effectual_macs: int, arch: Architecture, sparsities: dict, traffic: PassTraffic,
               dense_traffic: PassTraffic, batchnorm_bytes: int = 0) -> dict:
    """One result row without its memory timing (`finish_row` adds it).
    `sparsities`: weight_sparsity, scheduled_sparsity, broadcast_sparsity (fractions);
    `batchnorm_bytes`: the dense BN input saved after this layer (forward rows only)."""
    classes = traffic.class_bytes()
    forward = lowered.pass_name == "forward"
    return {
        "network": network, "sparsity": sparsity, "layer": lowered.layer, "kind": kind,
        "pass": lowered.pass_name, "scheduled_operand": lowered.scheduled_tensor,
        "frontend": str(arch.frontend), "scheduler": arch.frontend.scheduler,
        "backend": arch.backend if not arch.bit_serial else f"{arch.backend}-{arch.bits}",
        "compute_cycles": timing.cycles,
        "dense_compute_cycles": timing.dense_cycles, "ideal_cycles": timing.ideal_cycles,
        "serial_bound_cycles": timing.bound_cycles if arch.bit_serial else np.nan,
        "compute_speedup": timing.dense_cycles / timing.cycles if timing.cycles else np.nan,
        "ideal_speedup": timing.dense_cycles / timing.ideal_cycles if timing.ideal_cycles else np.nan,
        "macs": lowered.macs, "effectual_macs": effectual_macs, **sparsities,
        "dram_read_bytes": traffic.read_bytes, "dram_write_bytes": traffic.write_bytes,
        "weight_bytes": classes["weights"], "activation_bytes": classes["activations"],
        "saved_activation_bytes": classes["saved_activations"],
        "gradient_bytes": classes["gradients"],
        "dense_dram_bytes": dense_traffic.read_bytes + dense_traffic.write_bytes,
        "compression_ratio": traffic.compression_ratio, "refetch": traffic.refetch,
        "tiling": traffic.tiling, "tiles": traffic.tiles,
        "activation_memory_bytes": traffic.stored["input_saved"] + batchnorm_bytes if forward else 0,
        "dense_activation_memory_bytes":
            dense_traffic.stored["input_saved"] + batchnorm_bytes if forward else 0,
    }


def finish_row(row: dict, stall_cycles: int, dense_stall_cycles: int, memory_bound: bool,
               arch: Architecture) -> dict:
    """Add the memory timing to a row: cycles = compute + stalls, for the simulated array
    and for the dense one (dense training's traffic), and what follows from them."""
    c = row["compute_cycles"] + stall_cycles
    dense = row["dense_compute_cycles"] + dense_stall_cycles
    row.update({
        "cycles": c, "stall_cycles": stall_cycles, "dense_cycles": dense,
        "bound": "memory" if memory_bound else "compute",
        "speedup": dense / c if c else np.nan,
        "utilization": row["effectual_macs"] / (c * arch.peak_macs_per_cycle) if c else 0.0,
        "time_us": c / arch.frequency_mhz})
    return row


# ---------------------------------------------------------------------------- checking rows

PASSES = ("forward", "input_grad", "weight_grad")
MAX_COUNT = 10 ** 18  # cycles, MACs, bytes: far beyond any run, and sums of them stay finite
COUNTS = ["compute_cycles", "stall_cycles", "dense_compute_cycles", "ideal_cycles", "macs",
          "effectual_macs", "dram_read_bytes", "dram_write_bytes", "weight_bytes",
          "activation_bytes", "saved_activation_bytes", "gradient_bytes", "dense_dram_bytes",
          "tiles", "activation_memory_bytes", "dense_activation_memory_bytes", "energy_pj", "energy_mac_pj",
          "energy_sram_pj", "energy_dram_pj", "dense_energy_pj", "dense_energy_mac_pj",
          "dense_energy_sram_pj", "dense_energy_dram_pj"]
NULLABLE = ["serial_bound_cycles"]  # counts left empty on bit-parallel rows
POSITIVE = ["cycles", "dense_cycles"]  # >= 1: every speedup divides by them
FRACTIONS = ["weight_sparsity", "scheduled_sparsity", "broadcast_sparsity"]  # in [0, 1]
RATIOS = ["speedup", "compute_speedup", "ideal_speedup", "utilization", "compression_ratio",
          "refetch", "energy_efficiency", "time_us"]
# a ratio that `result_row` leaves empty (NaN) exactly when its divisor is 0
EMPTY_WHEN_ZERO = {"compute_speedup": "compute_cycles", "ideal_speedup": "ideal_cycles"}
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*|\s*[+-]?(nan|inf|infinity)\s*",
                     re.IGNORECASE)


def numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(the cells of a column as floats, NaN where empty; a mask of the cells that are not
    numbers at all). Never raises: a 400-digit integer is inf, text like '1_000' or 'True'
    is not a number."""
    n = len(values)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=float, na_value=np.nan), np.zeros(n, dtype=bool)
    out, bad = np.full(n, np.nan), np.zeros(n, dtype=bool)
    for i, v in enumerate(values.to_numpy(dtype=object)):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue  # an empty cell
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (str, int, float, np.number)):
            bad[i] = True
        elif isinstance(v, str) and not _NUMBER.fullmatch(v):
            bad[i] = True
        else:
            try:
                out[i] = float(v)
            except OverflowError:  # an integer beyond any float
                out[i] = math.inf if v > 0 else -math.inf
            except (TypeError, ValueError):
                bad[i] = True
    return out, bad


def _shown(value) -> str:
    if isinstance(value, str):
        text = " ".join(value.split())
        return repr(text if len(text) <= 40 else text[:37] + "...")
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return "an empty cell (or NaN)"
    if isinstance(value, (int, np.integer)) and len(str(value)) > 40:
        return f"an integer of {len(str(value))} digits"
    return repr(value.item() if isinstance(value, np.generic) else value)


def check_rows(rows: pd.DataFrame, required=()) -> None:
    """ValueError (one line: `column X: expected ..., got ... (data row N)`, N counting from
    1 after the header) unless every numeric column of `COLUMNS` that `rows` holds has what
    `result_row` and `finish_row` write: cycles, MACs and bytes finite integers-or-floats in
    [0, 10^18], `cycles` and `dense_cycles` at least 1; sparsities in [0, 1) (the workload's)
    or [0, 1]; ratios (speedups, utilization, compression, refetch, time) finite and >= 0,
    with `compute_speedup` / `ideal_speedup` empty exactly where `compute_cycles` /
    `ideal_cycles` is 0; `network`, `layer`, `pass` and `frontend` (where present) a value
    in every row, `pass` one of PASSES. `required`: columns that must be present."""
    missing = [c for c in required if c not in rows.columns]
    if missing:
        raise ValueError(f"expected the columns of `accelsim run`'s results; missing {', '.join(missing)}")
    for col in ("network", "layer", "pass", "frontend"):
        if col in rows.columns and rows[col].isna().any():
            i = int(np.flatnonzero(rows[col].isna().to_numpy())[0])
            raise ValueError(f"column {col}: expected a value in every row, data row {i + 1} has none")
    if "pass" in rows.columns:
        unknown = ~rows["pass"].isin(PASSES)
        if unknown.any():
            i = int(np.flatnonzero(unknown.to_numpy())[0])
            raise ValueError(f"column pass: expected {', '.join(PASSES)}, got "
                             f"{_shown(rows['pass'].iloc[i])} (data row {i + 1})")
    values = {}
    for col in ("sparsity", *POSITIVE, *COUNTS, *NULLABLE, *FRACTIONS, *RATIOS):
        if col not in rows.columns:
            continue
        if isinstance(rows[col], pd.DataFrame):  # the header names it twice
            raise ValueError(f"column {col}: expected once in the header, got it "
                             f"{rows[col].shape[1]} times")
        x, bad = numbers(rows[col])
        values[col] = x
        low, high, what = ((0.0, 1.0, "a fraction in [0, 1)") if col == "sparsity" else
                           (0.0, 1.0, "a fraction in [0, 1]") if col in FRACTIONS else
                           (1.0, MAX_COUNT, "a number in [1, 10^18]") if col in POSITIVE else
                           (0.0, MAX_COUNT, "a number in [0, 10^18]"))
        with np.errstate(invalid="ignore"):
            ok = ~bad & np.isfinite(x) & (x >= low) & (x <= high)
            if col == "sparsity":
                ok &= x < 1.0
            if col in NULLABLE:
                ok |= np.isnan(x) & ~bad
                what += " or empty"
        if col in EMPTY_WHEN_ZERO and EMPTY_WHEN_ZERO[col] in values:
            divisor = EMPTY_WHEN_ZERO[col]
            empty = np.isnan(x) & ~bad
            ok |= empty & (values[divisor] == 0)
            ok &= ~(~empty & (values[divisor] == 0))  # a ratio over 0 is empty
            what += f", empty exactly where {divisor} is 0"
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            got = rows[col].iloc[i]
            raise ValueError(f"column {col}: expected {what}, got {_shown(got)} (data row {i + 1})")


PHASES = {"forward": ("forward",), "input_grad": ("input_grad",), "weight_grad": ("weight_grad",),
          "backward": ("input_grad", "weight_grad"),
          "iteration": ("forward", "input_grad", "weight_grad")}


SUMMED = ["cycles", "compute_cycles", "stall_cycles", "dense_cycles", "dense_compute_cycles",
          "ideal_cycles", "dram_read_bytes", "dram_write_bytes", "dense_dram_bytes",
          "activation_memory_bytes", "dense_activation_memory_bytes"]
ENERGY = ["energy_pj", "energy_mac_pj", "energy_sram_pj", "energy_dram_pj", "dense_energy_pj",
          "dense_energy_mac_pj", "dense_energy_sram_pj", "dense_energy_dram_pj"]


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per (network, sparsity, phase): summed cycles and bytes, and the ratios of sums:
    `speedup` (dense_cycles / cycles, memory included), `compute_speedup`,
    `speedup_vs_0` (over the 0% run on the same array; NaN without one), `ideal_speedup`,
    `dram_reduction` (dense training's DRAM bytes / ours) and `activation_memory_reduction`
    (forward rows carry the activation memory, so it is NaN for phases without forward);
    with energy columns (results since issue 15), their sums and `energy_efficiency`
    (dense_energy_pj / energy_pj); on a bit-serial back-end, `serial_bound_cycles`. Phases: each simulated pass, `backward` (input + weight gradient) and `iteration`
    (all three), only where all the passes they sum were run."""
    present = set(results["pass"])
    summed = SUMMED + [c for c in ENERGY if c in results.columns]
    serial = "serial_bound_cycles" in results.columns and results["serial_bound_cycles"].notna().all()
    summed += ["serial_bound_cycles"] if serial else []
    rows = []
    for phase, passes in PHASES.items():
        if not set(passes) <= present:
            continue  # backward needs both gradient passes, iteration all three
        part = results[results["pass"].isin(passes)]
        sums = part.groupby(["network", "sparsity"], sort=False)[summed].sum().reset_index()
        sums.insert(2, "phase", phase)
        rows.append(sums)
    out = pd.concat(rows, ignore_index=True)
    out["speedup"] = out["dense_cycles"] / out["cycles"]
    out["compute_speedup"] = out["dense_compute_cycles"] / out["compute_cycles"]
    base = out[out["sparsity"] == 0.0].set_index(["network", "phase"])["cycles"]
    zero = [base.get((n, p), np.nan) for n, p in zip(out["network"], out["phase"])]
    out["speedup_vs_0"] = np.array(zero, dtype=float) / out["cycles"]
    out["ideal_speedup"] = out["dense_compute_cycles"] / out["ideal_cycles"]
    out["dram_bytes"] = out["dram_read_bytes"] + out["dram_write_bytes"]
    out["dram_reduction"] = out["dense_dram_bytes"] / out["dram_bytes"]
    memory = out["activation_memory_bytes"].where(out["activation_memory_bytes"] > 0)
    out["activation_memory_reduction"] = out["dense_activation_memory_bytes"] / memory
    if "energy_pj" in out.columns:
        out["energy_efficiency"] = out["dense_energy_pj"] / out["energy_pj"]
    return out


def format_summary(summary: pd.DataFrame, title: str) -> str:
    """SWAT Table-11 style text: per network, cycles per phase; speedups over the dense
    array (memory included / compute only / ideal) for forward, backward and iteration;
    DRAM traffic per phase and its reduction over dense training; the activation memory
    kept for the backward pass."""
    lines = [title]
    wide = ["forward", "backward", "iteration"]
    for net, block in summary.groupby("network", sort=False):
        phases = list(dict.fromkeys(block["phase"]))
        table = block.pivot(index="sparsity", columns="phase")
        lines.append(f"\n{net}: cycles (compute + memory stalls)")
        lines.append(f"{'sparsity':>9}" + "".join(f"{p:>15}" for p in phases))
        for s in table.index:
            lines.append(f"{s:>8.0%} " + "".join(f"{int(table.loc[s, ('cycles', p)]):>15,d}" for p in phases))
        shown = wide if "iteration" in phases else phases
        lines.append(f"\n{net}: speedup over the dense array: with memory / compute only / ideal")
        lines.append(f"{'sparsity':>9}" + "".join(f"{p:>24}" for p in shown))
        for s in table.index:
            cells = [f"{table.loc[s, ('speedup', p)]:.2f}x / {table.loc[s, ('compute_speedup', p)]:.2f}x"
                     f" / {table.loc[s, ('ideal_speedup', p)]:.2f}x" for p in shown]
            lines.append(f"{s:>8.0%} " + "".join(f"{c:>24}" for c in cells))
        lines.append(f"\n{net}: DRAM traffic in MB (reduction over dense training)")
        memory = "forward" in phases
        lines.append(f"{'sparsity':>9}" + "".join(f"{p:>20}" for p in phases)
                     + (f"{'saved for backward':>24}" if memory else ""))
        for s in table.index:
            cells = [f"{table.loc[s, ('dram_bytes', p)] / 1e6:,.1f} ({table.loc[s, ('dram_reduction', p)]:.2f}x)"
                     for p in phases]
            if memory:
                cells.append(f"{table.loc[s, ('activation_memory_bytes', 'forward')] / 1e6:,.2f} "
                             f"({table.loc[s, ('activation_memory_reduction', 'forward')]:.2f}x)")
            lines.append(f"{s:>8.0%} " + "".join(f"{c:>20}" for c in cells[:len(phases)])
                         + (f"{cells[-1]:>24}" if memory else ""))
        if "energy_pj" in block.columns:
            lines.append(f"\n{net}: energy in mJ (efficiency over the dense array) and where it goes")
            lines.append(f"{'sparsity':>9}" + "".join(f"{p:>20}" for p in phases) + f"{'MAC / SRAM / DRAM':>24}")
            last = phases[-1]
            for s in table.index:
                cells = [f"{table.loc[s, ('energy_pj', p)] / 1e9:,.2f} "
                         f"({table.loc[s, ('energy_efficiency', p)]:.2f}x)" for p in phases]
                split = [table.loc[s, (c, last)] / table.loc[s, ("energy_pj", last)]
                         for c in ("energy_mac_pj", "energy_sram_pj", "energy_dram_pj")]
                lines.append(f"{s:>8.0%} " + "".join(f"{c:>20}" for c in cells)
                             + f"{' / '.join(f'{v:.0%}' for v in split):>24}")
    sums = [t for p, t in (("backward", "backward = input_grad + weight_grad"),
                           ("iteration", "iteration = forward + backward")) if p in set(summary["phase"])]
    serial = "serial_bound_cycles" in summary.columns
    dense = ("the bit-parallel array of the same peak and memory, no skipping, dense values, dense "
             "training's traffic; ideal: every multiplier busy on a bit (term) its value needs, "
             "per filter lane ceil(bits of its multiplications / (lanes x columns))" if serial else
             "same array and memory, no skipping, dense training's traffic; ideal: "
             "ceil(non-zeros / lanes) per filter lane")
    energy = ("; energy: MACs, on-chip buffer and DRAM bytes times the config's per-event energies "
              "(docs/design/energy.md), split shown for the last phase" if "energy_pj" in summary.columns else "")
    lines.append("\n" + "; ".join(sums + [f"summed cycles; dense array: {dense}{energy}. Saved for "
                                           "backward: activations the backward pass keeps "
                                           "(saved inputs as stored, batch-norm inputs dense)."]))
    return "\n".join(lines)


LAYER_COLUMNS = ["layer", "pass", "cycles", "stall_cycles", "speedup", "compute_speedup",
                 "utilization", "bound", "tiling", "dram_read_bytes", "dram_write_bytes"]


def format_layers(results: pd.DataFrame) -> str:
    """One line per (layer, pass) for each network and sparsity: cycles, stalls, speedups,
    utilization, what bounds it, its tiling and its DRAM traffic in kB."""
    blocks = []
    for (net, sparsity), rows in results.groupby(["network", "sparsity"], sort=False):
        table = rows[LAYER_COLUMNS].copy()
        for col in ("dram_read_bytes", "dram_write_bytes"):
            table[col] = (table[col] / 1e3).round(1)
        table = table.rename(columns={"dram_read_bytes": "read_kB", "dram_write_bytes": "write_kB"})
        blocks.append(f"{net} at {sparsity:.0%}, per layer and pass:\n"
                      + table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return "\n\n".join(blocks)


def digest_path(path: str | os.PathLike) -> Path:
    """The record written beside a results file: ``results.csv.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_results(results: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write `results` to `path` as CSV, atomically, then its SHA-256 beside it
    (``<name>.sha256``, as `sha256sum` writes it), so `accelsim report` can tell a
    complete file from one cut anywhere, even at a row boundary."""
    data = results.to_csv(index=False).encode()
    path = write_atomic(path, data)
    write_atomic(digest_path(path), f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
    return path


def check_digest(path: str | os.PathLike, data: bytes) -> None:
    """ValueError if `path` has a ``.sha256`` record that `data` (its bytes) does not
    match: the file was cut or changed after accelsim wrote it. No record: nothing to say
    (a file from another tool, or written before records existed)."""
    record = digest_path(path)
    try:
        st = os.lstat(record)
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode) or st.st_size > 1024:
        raise ValueError(f"{record.name}: expected the digest record accelsim writes")
    with open(record, "rb") as f:
        text = f.read(st.st_size).decode("ascii", "replace")
    expected = text.split()[0] if text.split() else ""
    if hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(f"does not match {record.name} (it was cut or changed after accelsim "
                         f"wrote it: run again, or delete {record.name} to use it as it is)")
