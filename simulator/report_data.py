"""The input of `simulator.report`: reading and checking a `results.csv`, and splitting
its rows into configurations (one per network, front-end and swept value).

`load_results(path)` reads the file exactly (never to EOF: a special file that claims to be
empty is not read), checks its digest, columns, values and shape, and raises `ConfigError`
(one line naming the file and what was expected) for anything `accelsim run` cannot write.
`configurations(df)` / `_split(df)` split the rows of a merged sweep per configuration;
`frontend_cap` is the h+1 a front-end `T<h,d>` / `L<h,d>` can reach by skipping alone.
"""

from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path

import numpy as np
import pandas as pd

from .config import ConfigError
from .results import COLUMNS, check_digest, check_rows, numbers
from .safe_yaml import cut

PASSES = ("forward", "input_grad", "weight_grad")
PHASES = ("forward", "backward", "iteration")
NUMERIC = ["sparsity", "cycles", "compute_cycles", "stall_cycles", "dense_cycles",
           "dense_compute_cycles", "ideal_cycles", "speedup", "compute_speedup", "utilization",
           "dram_read_bytes", "dram_write_bytes", "weight_bytes", "activation_bytes",
           "saved_activation_bytes", "gradient_bytes", "dense_dram_bytes",
           "activation_memory_bytes", "dense_activation_memory_bytes"]
REQUIRED = ["network", "layer", "pass", "frontend", *NUMERIC]
FRONTEND = re.compile(r"^\s*([A-Za-z]+)\s*<\s*(\d{1,4})\s*,\s*(\d{1,4})\s*>(\s*\S.*)?$")  # T<2,5> [detail]


# ---------------------------------------------------------------------------- input

MAX_RESULTS_BYTES = 1 << 30  # a results.csv larger than this is not ours (a 10^4-point sweep: ~100 MB)
MAX_LAYERS = 1_000  # per network; real networks have at most a few hundred
MAX_SPARSITIES = 50  # per network: one plot panel (or heat-map row) each
MAX_ROWS = 6_000  # per configuration (layer passes x sparsities): a minute of drawing
MAX_NAME = 200  # characters of a network, layer or front-end name (tick labels, titles)


def _q(path) -> str:
    """A path as messages quote it: on one line, at most 200 characters."""
    return cut(str(path), 200)


def _read_exactly(path: Path, what: str) -> bytes:
    """The bytes of the regular file at `path` (a symlink is followed), reading exactly its
    size and never to EOF: a file that says it is empty is empty (/proc/kmsg says so, and a
    read would block forever). ConfigError (one line) for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"{_q(path)}: expected {what}, but it does not exist") from None
    except (OSError, ValueError) as e:  # ENAMETOOLONG, EACCES, ELOOP, a NUL in the path
        raise ConfigError(f"{_q(path)}: expected {what}, but it cannot be read "
                          f"({getattr(e, 'strerror', None) or e})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{_q(path)}: expected {what}, but it is a directory")
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block the reader forever
            raise ConfigError(f"{_q(path)}: expected {what}, but it is not a regular file")
        if st.st_size > MAX_RESULTS_BYTES:
            raise ConfigError(f"{_q(path)}: expected {what} of at most {MAX_RESULTS_BYTES >> 30} "
                              f"GiB, got {st.st_size / (1 << 30):,.1f} GiB")
        if st.st_size == 0:
            raise ConfigError(f"{_q(path)}: expected {what}, but the file is empty")
        chunks, left = [], st.st_size
        while left:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                raise ConfigError(f"{_q(path)}: expected {what}, but it shrank while being read")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError as e:  # EAGAIN from a special file that claims to be regular, EIO
        raise ConfigError(f"{_q(path)}: expected {what}, but it cannot be read "
                          f"({e.strerror or e})") from None
    finally:
        os.close(fd)


def _name(values) -> str:
    text = " ".join(str(values).split())
    return repr(text if len(text) <= 60 else text[:57] + "...")


def load_results(path: str | Path) -> pd.DataFrame:
    """Read and check a results.csv; raises `ConfigError` (one line naming the file and
    what was expected) if it is missing, not a CSV, lacks the columns the plots use, holds
    a value `accelsim run` cannot write (see `simulator.results.check_rows`), or more than
    MAX_LAYERS layers or MAX_SPARSITIES sparsities per network or MAX_ROWS rows per
    configuration (plots that would take minutes to draw)."""
    path = Path(path)
    what = "the results.csv that `accelsim run` writes"
    data = _read_exactly(path, what)
    try:
        check_digest(path, data)
    except ValueError as e:
        raise ConfigError(f"{_q(path)}: {e}") from None
    try:
        df = pd.read_csv(io.BytesIO(data))
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{_q(path)}: expected {what}, but the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OverflowError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{_q(path)}: expected {what}, but it is not a readable CSV "
                          f"({cut(first, 200)})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ConfigError(f"{_q(path)}: expected the columns of `accelsim run`'s results.csv; missing "
                          f"{', '.join(missing)}")
    if df.empty:
        raise ConfigError(f"{_q(path)}: expected at least one result row, got none")
    for col in ("network", "sparsity", "layer", "pass", "frontend"):
        if df[col].isna().any():
            i = int(np.flatnonzero(df[col].isna().to_numpy())[0])
            raise ConfigError(f"{_q(path)}: column {col}: expected a value in every row, "
                              f"data row {i + 1} has none")
        if col != "sparsity":
            df[col] = df[col].astype(str)
            long = df[col].str.len() > MAX_NAME
            if long.any():
                i = int(np.flatnonzero(long.to_numpy())[0])
                raise ConfigError(f"{_q(path)}: column {col}: expected at most {MAX_NAME} "
                                  f"characters, got {len(df[col].iloc[i]):,} (data row {i + 1})")
            control = df[col].str.contains(r"[\x00-\x1f\x7f]", regex=True)
            if control.any():
                i = int(np.flatnonzero(control.to_numpy())[0])
                raise ConfigError(f"{_q(path)}: column {col}: expected a name without control "
                                  f"characters, got {df[col].iloc[i]!r} (data row {i + 1})")
    try:
        check_rows(df)
    except ValueError as e:
        raise ConfigError(f"{_q(path)}: {e}") from None
    for col in NUMERIC:  # checked: finite numbers
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            df[col] = numbers(df[col])[0]
    unknown = sorted(set(df["pass"]) - set(PASSES))
    if unknown:
        raise ConfigError(f"{_q(path)}: column pass: expected {', '.join(PASSES)}, got {_name(unknown[0])}")
    for fe in dict.fromkeys(df["frontend"]):
        try:
            frontend_cap(fe)
        except ValueError as e:
            raise ConfigError(f"{_q(path)}: column frontend: {cut(str(e), 300)}") from None
    for col, limit, unit in (("layer", MAX_LAYERS, "layers"), ("sparsity", MAX_SPARSITIES, "sparsities")):
        counts = df.groupby("network", sort=False)[col].nunique()
        if counts.max() > limit:
            network = counts.idxmax()
            raise ConfigError(f"{_q(path)}: expected at most {limit:,} {unit} per network, got "
                              f"{counts.max():,} for {_name(network)}")
    try:
        _check_configurations(df)
    except ValueError as e:
        raise ConfigError(f"{_q(path)}: {e}") from None
    if not data.endswith(b"\n"):  # to_csv ends every row with a newline
        raise ConfigError(f"{_q(path)}: expected complete rows, but the last row ends without a "
                          "newline (a truncated file? run `accelsim run` again)")
    return df


def _check_configurations(df: pd.DataFrame) -> None:
    """ValueError unless each configuration (`configurations`) has one row per (sparsity,
    layer, pass), at most MAX_ROWS rows, and the same (layer, pass) rows at every sparsity,
    as `accelsim run` writes them: a file cut at a row boundary fails this. Vectorized: a
    file of thousands of configurations is checked in well under a second."""
    keys = _config_keys(df)
    by = ["network", *keys]
    dup = df.duplicated([*by, "sparsity", "layer", "pass"])
    if dup.any():
        r = df[dup].iloc[0]
        label = _label(keys, [r[k] for k in keys])
        raise ValueError(f"expected one row per (network, sparsity, layer, pass), got "
                         f"several for ({cut(r['network'], 60)}, {r['sparsity']:g}, "
                         f"{cut(r['layer'], 60)}, {r['pass']})"
                         f"{' in ' + cut(label, 100) if label else ''}")
    cid = df.groupby(by, sort=False, dropna=False).ngroup().to_numpy()
    sizes = np.bincount(cid)
    if sizes.max() > MAX_ROWS:
        r = df.iloc[int(np.flatnonzero(cid == int(sizes.argmax()))[0])]
        label = _label(keys, [r[k] for k in keys])
        raise ValueError(f"expected at most {MAX_ROWS:,} rows (layer passes x sparsities) per "
                         f"network and configuration, got {sizes.max():,} for {_name(r['network'])}"
                         f"{' (' + cut(label, 100) + ')' if label else ''}")
    rows = pd.DataFrame({"cid": cid, "sparsity": df["sparsity"].to_numpy(),
                         "layer": df["layer"].to_numpy(), "pass": df["pass"].to_numpy()})
    pairs = np.bincount(rows.drop_duplicates(["cid", "layer", "pass"])["cid"], minlength=len(sizes))
    per_sparsity = rows.groupby(["cid", "sparsity"], sort=False).size()
    short = per_sparsity.to_numpy() != pairs[per_sparsity.index.get_level_values("cid")]
    if short.any():  # the message names the sparsity with the most rows, as before
        bad = int(per_sparsity.index.get_level_values("cid")[np.flatnonzero(short)[0]])
        part = df[cid == bad]
        r = part.iloc[0]
        label = _label(keys, [r[k] for k in keys])
        have = {s: set(zip(g["layer"], g["pass"])) for s, g in part.groupby("sparsity", sort=False)}
        most = max(have, key=lambda s: len(have[s]))
        s = next(s for s in have if have[s] != have[most])
        raise ValueError(f"expected the same layer passes at every sparsity, but "
                         f"{cut(r['network'], 60)}{' (' + cut(label, 100) + ')' if label else ''} has "
                         f"{len(have[s])} at {s:g} and {len(have[most])} at {most:g} "
                         "(a truncated file? run `accelsim run` again)")


def frontend_cap(frontend: str) -> int:
    """The most skipping alone can speed up a layer: h+1 for `T<h,d>` / `L<h,d>`, 1 for `none`."""
    text = str(frontend).strip()
    if text == "none":
        return 1
    m = FRONTEND.match(text)
    if not m:
        raise ValueError(f"expected a front-end like 'T<2,5>', 'L<1,3>' or 'none', got {text!r}")
    return int(m.group(2)) + 1


def configurations(df: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """Split rows into (network, configuration label, rows) with one row per (sparsity,
    layer, pass) each. A plain run has one configuration per network (label ""). A merged
    sweep is split by its front-end, when that varies, and by every extra column (one not
    in `COLUMNS`, e.g. a swept key) that still varies within a (network, sparsity, front-end):
    a swept lookahead is told by the front-end, a swept tile count by its own column."""
    return [(network, _label(keys, values), part) for network, keys, values, part in _split(df)]


def _config_keys(df: pd.DataFrame) -> list[str]:
    """The columns besides `network` that tell configurations apart (see `configurations`)."""
    keys = ["frontend"] if df["frontend"].nunique() > 1 else []
    for c in (c for c in df.columns if c not in COLUMNS):
        groups = df.groupby(["network", "sparsity", *keys], sort=False, dropna=False)
        if groups[c].nunique(dropna=False).max() > 1:
            keys.append(c)
    return keys


def _count(df: pd.DataFrame) -> int:
    """How many configurations `df` holds."""
    return df.groupby(["network", *_config_keys(df)], sort=False, dropna=False).ngroups


def _split(df: pd.DataFrame):
    """(network, keys, values, rows) per configuration, networks in order of first
    appearance and each network's configurations likewise; ValueError if a configuration
    has two rows for one (sparsity, layer, pass)."""
    keys = _config_keys(df)
    dup = df.duplicated(["network", *keys, "sparsity", "layer", "pass"])
    if dup.any():
        _check_configurations(df)  # raises the message
    order = {n: i for i, n in enumerate(dict.fromkeys(df["network"]))}
    out = [(values[0], values[1:], part)
           for values, part in df.groupby(["network", *keys], sort=False, dropna=False)]
    out.sort(key=lambda t: order.get(t[0], len(order)))  # stable: within a network, as they come
    return [(str(network), keys, values, part) for network, values, part in out]


def _label(keys, values) -> str:
    return ", ".join(f"front-end {v}" if k == "frontend" else f"{k}={v}" for k, v in zip(keys, values))


def _slug(keys, values) -> str:
    """File-name part of a configuration: T<2,5> -> T2-5, architecture.tiles=8 -> as is."""
    parts = [re.sub(r"[<>]", "", str(v)).replace(",", "-") if k == "frontend" else f"{k}={v}"
             for k, v in zip(keys, values)]
    return "_".join(re.sub(r"[^A-Za-z0-9.+=-]+", "-", p).strip("-") for p in parts)
