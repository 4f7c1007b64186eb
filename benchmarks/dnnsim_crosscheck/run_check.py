#!/usr/bin/env python3
"""Validate accelsim's BitTactical forward compute cycles against DNNsim (isakedo/DNNsim @ 4748a60).

Run everything:   python3 run_check.py all          (about 25 min on 2 cores, after the build)
Steps (each can be run alone, in this order):
  build    - extract DNNsim 4748a60 from the local git mirror twice: DNNsim/ (unmodified) and
             DNNsim-fix/ (+ `fix_requested_range`, an activation-address bookkeeping fix), and build both with cmake (Release, -O3), make -j1. Needs apt packages
             cmake g++ protobuf-compiler libprotobuf-dev.
  export   - generate accelsim's synthetic ResNet-50 tensors (sparsity 0.8, 0.9; seed 0; batch 1) and
             write them as DNNsim inputs: DNNsim/models/<net>/model.csv and
             DNNsim/net_traces/<net>/{wgt-<layer>.npy, act-<layer>-0.npy}  (shared with DNNsim-fix)
  dnnsim   - write the batch files (the BitTactical example's experiment, model CSV; plus the same with
             tactical: false = DaDianNao dense baseline) and run both DNNsim binaries on them
  accelsim - accelsim run <this checkout>/configs/dnnsim.yaml --out accelsim -q
  compare  - compute_cycles from DNNsim's results CSVs vs accelsim's results.csv -> compare.csv,
             orig_vs_fix.csv
  perlayer - extra check: the unmodified DNNsim on each sparsity-0.9 layer alone -> orig_perlayer_s90.csv

Data mode: DNNsim 4748a60's "Float" data_type cannot run (sys/src/Batch.cpp sets data_width = 32 for
Float and then rejects any data_width > 16), so the runs use data_type "Fixed" with quantised: true,
which converts each value by a plain (int) cast (base/src/Array.cpp float_to_int). Only zero / non-zero
matters for these cycle counts, so every tensor is written as an integer-valued float32 array with
exactly the same zero pattern as accelsim's tensor: v -> sign(v) * clip(round(|v| * 64), 1, 32767) for
v != 0 (asserted in to_int_coded).
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

# work directory (builds, traces, logs: several GB): $DNNSIM_CHECK_DIR or /tmp/dnnsim_check
HERE = Path(os.environ.get("DNNSIM_CHECK_DIR", "/tmp/dnnsim_check")).resolve()
HERE.mkdir(parents=True, exist_ok=True)
# a clone or bare mirror of github.com/isakedo/DNNsim holding 4748a60: $DNNSIM_GIT_DIR
MIRROR = os.environ.get("DNNSIM_GIT_DIR", "/work/.mirror/isakedo+DNNsim/repo/.git")
COMMIT = "4748a60"
BUILDS = {"orig": HERE / "DNNsim", "fix": HERE / "DNNsim-fix"}
MAIN = Path(__file__).resolve().parents[2]  # the accelsim checkout this script lives in


def fix_requested_range(tree: Path) -> None:
    """The one fix DNNsim-fix carries (core/src/WindowFirstOutS.cpp, both the conv and the
    linear walk): the activation-address range a tile requests starts at the furthest row
    requested so far, which can lie beyond the current row's end when tiles advance at
    different speeds; then DNNsim builds a vector from a start past its end and aborts
    ("cannot create std::vector larger than max_size()", exit code 0, no results; seen at
    90% on layer3/layer4 convs). Clamp the start to the end and keep the furthest row.
    Address bookkeeping only: compute_cycles are unchanged wherever the unmodified build
    runs (compare step)."""
    src = tree / "core" / "src" / "WindowFirstOutS.cpp"
    text = src.read_text()
    for buf in ("window_address_buffer", "window_bank_buffer"):
        old = f"this->{buf}.begin() + this->requested,"
        new = f"this->{buf}.begin() + std::min<int>(this->requested, set_time + num_act_rows),"
        assert text.count(old) == 2, (buf, text.count(old))
        text = text.replace(old, new)
    old = "this->requested = set_time + num_act_rows;"
    assert text.count(old) == 2
    text = text.replace(old, "this->requested = std::max<int>(this->requested, set_time + num_act_rows);")
    src.write_text(text)
SPARSITIES = [0.8, 0.9]
ARCHS = {"BitTactical": "true", "DaDianNao": "false"}  # tag -> tactical flag

BATCH_TEMPLATE = """simulate {{
    network: "{net}"
    model: "CSV"
    data_type: "Fixed"
    quantised: true
    batch: 0
    experiment {{
        architecture: "DaDianNao"
        task: "Cycles"
        dataflow: "WindowFirstOutS"

        lanes: 16
        columns: 1
        rows: 16
        tiles: 16
        pe_width: 16
        tactical: {tactical}
        lookahead_h: 2
        lookaside_d: 5
        search_shape: 'T'

        cpu_clock_freq: "1GHz"
        dram_conf: "DDR4_3200"
        dram_size: "16GiB"
        dram_start_act_address: 0x80000000
        dram_start_wgt_address: 0x00000000

        gbuffer_act_levels: 1
        gbuffer_wgt_levels: 1
        gbuffer_act_size: "1GiB"
        gbuffer_wgt_size: "1GiB"
        gbuffer_act_banks: 32
        gbuffer_wgt_banks: 256
        gbuffer_act_bank_width: 256
        gbuffer_wgt_bank_width: 256
        gbuffer_act_read_delay: 2
        gbuffer_act_write_delay: 2
        gbuffer_wgt_read_delay: 2

        abuffer_rows: 2
        abuffer_read_delay: 1
        wbuffer_rows: 2
        wbuffer_read_delay: 1
        obuffer_rows: 2
        obuffer_write_delay: 1

        ppu_inputs: 16
        ppu_delay: 1
    }}
}}
"""


def net_name(s: float) -> str:
    return f"resnet50_s{int(round(s * 100))}"


def nice(cmd: list[str]) -> list[str]:
    return ["nice", "-n", "10", *cmd]


# ----------------------------------------------------------------------------------------- build
def extract(dest: Path) -> None:
    """Write the files of COMMIT into dest (a plain `git worktree add` fails on one missing blob,
    DRAMSim2/traces/k6_aoe_02_short.trc.gz, a DRAMSim2 example trace DNNsim never reads)."""
    git = ["git", "--git-dir", MIRROR]
    listing = subprocess.check_output(git + ["ls-tree", "-r", "-z", COMMIT]).decode()
    for entry in filter(None, listing.split("\0")):
        meta, path = entry.split("\t", 1)
        mode, kind, sha = meta.split()
        out = dest / path
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            out.write_bytes(subprocess.check_output(git + ["cat-file", "blob", sha], stderr=subprocess.DEVNULL))
        except subprocess.CalledProcessError:
            print(f"  missing blob in mirror, skipped: {path}")
            continue
        if mode == "100755":
            out.chmod(0o755)


def build() -> None:
    for which, tree in BUILDS.items():
        if (tree / "DNNsim").exists():
            print(f"{tree}/DNNsim exists, not rebuilding")
            continue
        if not (tree / "CMakeLists.txt").exists():
            extract(tree)
            if which == "fix":
                fix_requested_range(tree)
        subprocess.check_call(nice(["cmake", "-H.", "-Bcmake-build-release", "-DCMAKE_BUILD_TYPE=Release"]),
                              cwd=tree)
        subprocess.check_call(nice(["cmake", "--build", "cmake-build-release/", "--target", "DNNsim",
                                    "--", "-j1"]), cwd=tree)
    # DNNsim-fix reads the same traces
    for sub in ("models", "net_traces"):
        (BUILDS["orig"] / sub).mkdir(exist_ok=True)
        link = BUILDS["fix"] / sub
        if not link.exists():
            link.symlink_to(BUILDS["orig"] / sub)


# ---------------------------------------------------------------------------------------- export
def to_int_coded(x: np.ndarray) -> np.ndarray:
    """Integer-valued float32 with the same zero pattern (survives DNNsim's (int) cast)."""
    mag = np.clip(np.maximum(1.0, np.round(np.abs(x).astype(np.float64) * 64.0)), 1, 32767)
    out = np.where(x != 0, np.sign(x) * mag, 0.0).astype(np.float32)
    assert np.array_equal(out != 0, x != 0)
    assert np.array_equal(out.astype(np.int32) != 0, x != 0)
    return np.ascontiguousarray(out)


def export() -> None:
    sys.path.insert(0, str(MAIN))
    from workloads.networks import build_network
    from workloads.synthetic import synthetic_layers

    net = build_network("resnet50", image_size=224)
    for s in SPARSITIES:
        name = net_name(s)
        mdir = BUILDS["orig"] / "models" / name
        tdir = BUILDS["orig"] / "net_traces" / name
        mdir.mkdir(parents=True, exist_ok=True)
        tdir.mkdir(parents=True, exist_ok=True)
        rows = []
        for lay in synthetic_layers(net, s, 1, 0):
            sp = lay.spec
            assert sp.groups == 1 and sp.dilation == 1 and "/" not in sp.name and "," not in sp.name, sp
            # DNNsim reads conv weights [O, C, Kx, Ky] as wgt->get(m, ch, x, y) and activations
            # [N, C, X, Y]; fc weights [O, C] and activations [N, C]. accelsim's tensors are written
            # in their own layout ([O, C, K, K] / [N, C, H, W]), no transposition.
            w = to_int_coded(lay.weight)
            a = to_int_coded(lay.input)
            assert (w.ndim, a.ndim) == ((2, 2) if sp.kind == "fc" else (4, 4)), sp
            np.save(tdir / f"wgt-{sp.name}.npy", w)
            np.save(tdir / f"act-{sp.name}-0.npy", a)
            rows.append(f"{sp.name},{sp.kind},{sp.stride},{sp.padding}")  # Name,conv|fc,Stride,Padding
        (mdir / "model.csv").write_text("\n".join(rows) + "\n")
        # No precision.txt: generic precision (network width), irrelevant to DaDianNao/BitTactical cycles.
        print(f"exported {name}: {len(rows)} layers")


# ---------------------------------------------------------------------------------------- dnnsim
def batch_file(s: float, tag: str) -> Path:
    bfile = HERE / "batches" / f"{net_name(s)}_{tag}.prototxt"
    bfile.parent.mkdir(exist_ok=True)
    bfile.write_text(BATCH_TEMPLATE.format(net=net_name(s), tactical=ARCHS[tag]))
    return bfile


def result_csv(which: str, s: float, tag: str) -> Path:
    return (BUILDS[which] / "results" / net_name(s) /
            f"{tag}_AM1GiB_WM1GiB_L16_C1_R16_T16_BP16_cycles.csv")


def run_one(which: str, s: float, tag: str) -> bool:
    tree = BUILDS[which]
    res = result_csv(which, s, tag)
    if res.exists():
        res.unlink()
    (HERE / "logs").mkdir(exist_ok=True)
    log_path = HERE / "logs" / f"{which}_{net_name(s)}_{tag}.log"
    t0 = time.time()
    with open(log_path, "w") as log:
        # cwd must be the DNNsim root: it reads models/, net_traces/, ./DRAMSim2/ini, writes results/
        rc = subprocess.call(nice([str(tree / "DNNsim"), str(batch_file(s, tag))]), cwd=tree,
                             stdout=log, stderr=subprocess.STDOUT)
    errors = [l for l in log_path.read_text().splitlines() if "error" in l.lower()]
    ok = rc == 0 and res.exists() and not errors
    print(f"DNNsim[{which}] {net_name(s)} {tag}: rc={rc} {time.time() - t0:.0f}s "
          f"{'ok' if ok else 'FAILED: ' + '; '.join(errors)}", flush=True)
    return ok


def run_dnnsim() -> None:
    """Two processes at a time (2 cores): one worker per sparsity; runs on the same network never
    overlap (they would share DRAMSim2's .vis output file)."""
    status: dict = {}

    def worker(s):
        for which in ("orig", "fix"):
            for tag in ARCHS:
                status[(which, s, tag)] = run_one(which, s, tag)

    threads = [threading.Thread(target=worker, args=(s,)) for s in SPARSITIES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed_fix = [k for k, ok in status.items() if k[0] == "fix" and not ok]
    assert not failed_fix, f"patched DNNsim failed: {failed_fix}"


def run_accelsim() -> None:
    subprocess.check_call(nice(["accelsim", "run", str(MAIN / "configs/dnnsim.yaml"),
                                "--out", str(HERE / "accelsim"), "-q"]), cwd=MAIN)


# --------------------------------------------------------------------------------------- compare
def read_dnnsim_csv(path: Path, stat: str = "compute_cycles") -> dict[str, int]:
    """Per-layer `stat` of sample 0 from DNNsim's sys::Stats CSV ("Per sample scalar results")."""
    out: dict[str, int] = {}
    header = None
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if header is None:
            if cells and cells[0] == "Layer" and stat in cells:
                header = cells
            continue
        if not line.strip():
            break
        rec = dict(zip(header, cells))
        assert rec["Sample"] == "0", line
        out[rec["Layer"]] = int(rec[stat])
    return out


def compare() -> None:
    acc = {}
    with open(HERE / "accelsim" / "results.csv") as f:
        for r in csv.DictReader(f):
            if r["pass"] == "forward":
                acc[(float(r["sparsity"]), r["layer"])] = (int(r["compute_cycles"]),
                                                           int(r["dense_compute_cycles"]))
    # 1) unmodified vs patched DNNsim, wherever the unmodified one finished
    checks = []
    for s in SPARSITIES:
        for tag in ARCHS:
            o = result_csv("orig", s, tag)
            fx = read_dnnsim_csv(result_csv("fix", s, tag))
            if not o.exists():
                checks.append(dict(sparsity=s, arch=tag, layers=0, identical="", note="unmodified DNNsim failed"))
                continue
            for stat in ("compute_cycles", "cycles"):
                a, b = read_dnnsim_csv(o, stat), read_dnnsim_csv(result_csv("fix", s, tag), stat)
                checks.append(dict(sparsity=s, arch=tag, stat=stat, layers=len(a),
                                   identical=sum(a[k] == b.get(k) for k in a),
                                   note="" if a == b else "DIFFERENT"))
            assert read_dnnsim_csv(o) == fx, f"patch changed compute_cycles for {s} {tag}"
    with open(HERE / "orig_vs_fix.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["sparsity", "arch", "stat", "layers", "identical", "note"])
        w.writeheader()
        w.writerows(checks)
    for c in checks:
        print("orig vs fix:", c)

    # 2) DNNsim (patched build; identical compute_cycles to the unmodified one where that runs)
    out_rows = []
    for s in SPARSITIES:
        bt = read_dnnsim_csv(result_csv("fix", s, "BitTactical"))
        dd = read_dnnsim_csv(result_csv("fix", s, "DaDianNao"))
        assert list(bt) == list(dd)
        assert sorted(bt) == sorted(k[1] for k in acc if k[0] == s), "layer sets differ"
        for layer in bt:
            a, ad = acc[(s, layer)]
            out_rows.append(dict(sparsity=s, layer=layer, dnnsim_cycles=bt[layer], accelsim_cycles=a,
                                 dnnsim_dense_cycles=dd[layer], accelsim_dense_cycles=ad))
    with open(HERE / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(out_rows[0]))
        w.writeheader()
        w.writerows(out_rows)
    for s in SPARSITIES:
        rows = [r for r in out_rows if r["sparsity"] == s]
        exact = sum(r["dnnsim_cycles"] == r["accelsim_cycles"] for r in rows)
        exact_d = sum(r["dnnsim_dense_cycles"] == r["accelsim_dense_cycles"] for r in rows)
        rel = [(r["accelsim_cycles"] - r["dnnsim_cycles"]) / r["dnnsim_cycles"] for r in rows]
        i = int(np.argmax(np.abs(rel)))
        tot_d = sum(r["dnnsim_cycles"] for r in rows)
        tot_a = sum(r["accelsim_cycles"] for r in rows)
        print(f"sparsity {s}: BitTactical exact {exact}/{len(rows)}, dense exact {exact_d}/{len(rows)}, "
              f"max |rel diff| {abs(rel[i]):.4%} ({rows[i]['layer']}), "
              f"network total dnnsim {tot_d} accelsim {tot_a} ({(tot_a - tot_d) / tot_d:+.4%})")
        for r, e in zip(rows, rel):
            if e != 0:
                print(f"   {r['layer']}: dnnsim {r['dnnsim_cycles']} accelsim {r['accelsim_cycles']} ({e:+.4%})")


# -------------------------------------------------------------------------------------- perlayer
def perlayer() -> None:
    """Unmodified DNNsim, BitTactical, sparsity 0.9, one single-layer network per layer (one batch file,
    54 `simulate` blocks; DNNsim catches a failing simulate and goes on). Shows which layers crash the
    unmodified build and that every other layer's compute_cycles equals the patched full-network run."""
    s, tag = 0.9, "BitTactical"
    base = net_name(s)
    models, traces = BUILDS["orig"] / "models", BUILDS["orig"] / "net_traces"
    lines = (models / base / "model.csv").read_text().splitlines()
    blocks, nets = [], []
    for i, line in enumerate(lines):
        layer = line.split(",")[0]
        net = f"{base}_L{i:02d}"
        nets.append((net, layer))
        (models / net).mkdir(exist_ok=True)
        (models / net / "model.csv").write_text(line + "\n")
        (traces / net).mkdir(exist_ok=True)
        for f in (f"wgt-{layer}.npy", f"act-{layer}-0.npy"):
            link = traces / net / f
            if not link.is_symlink():
                link.symlink_to(Path("..") / base / f)
        res = BUILDS["orig"] / "results" / net / result_csv("orig", s, tag).name
        if res.exists():
            res.unlink()
        blocks.append(BATCH_TEMPLATE.format(net=net, tactical=ARCHS[tag]))
    bfile = HERE / "batches" / f"{base}_{tag}_perlayer.prototxt"
    bfile.write_text("".join(blocks))
    (HERE / "logs").mkdir(exist_ok=True)
    with open(HERE / "logs" / f"orig_{base}_{tag}_perlayer.log", "w") as log:
        subprocess.call(nice([str(BUILDS["orig"] / "DNNsim"), str(bfile)]), cwd=BUILDS["orig"],
                        stdout=log, stderr=subprocess.STDOUT)
    full = read_dnnsim_csv(result_csv("fix", s, tag))
    rows = []
    for net, layer in nets:
        res = BUILDS["orig"] / "results" / net / result_csv("orig", s, tag).name
        orig = read_dnnsim_csv(res).get(layer) if res.exists() else None
        rows.append(dict(layer=layer, orig_single_layer=orig if orig is not None else "crash",
                         fix_full_network=full[layer],
                         identical="" if orig is None else orig == full[layer]))
    with open(HERE / "orig_perlayer_s90.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    crashed = [r["layer"] for r in rows if r["orig_single_layer"] == "crash"]
    same = sum(r["identical"] is True for r in rows)
    print(f"unmodified DNNsim, s0.9 BitTactical, single-layer runs: {same}/{len(rows) - len(crashed)} "
          f"identical to the patched full run; crashed: {crashed}")


if __name__ == "__main__":
    steps = sys.argv[1:] or ["all"]
    if "all" in steps:
        steps = ["build", "export", "dnnsim", "accelsim", "compare", "perlayer"]
    for st in steps:
        {"build": build, "export": export, "dnnsim": run_dnnsim, "accelsim": run_accelsim,
         "compare": compare, "perlayer": perlayer}[st]()
