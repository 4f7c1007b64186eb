"""Trained traces against the synthetic workload: speedups, DRAM traffic and what differs
in the tensors.

Usage:
    python benchmarks/trained_vs_synthetic.py TRACE_DIR [TRACE_DIR ...]
        [--configs configs/tactical.yaml configs/table11-closest.yaml]
        [--out reports/trained] [--plot docs/img/trained-vs-synthetic.png]

For every trace (from `accelsim trace-from-training`, e.g. ResNet-50 with SWAT-U at 80% and
90%, recorded at 224x224 on one sample) and every config, it simulates the trace, and the
synthetic workload of the same network, image size, batch and sparsity (the config's
synthetic generator, seed 0), and compares forward / backward / iteration speedups over
the dense array, compute only and with memory, and DRAM traffic. A trace directory with
`iter-*` subdirectories (several `--trace-at` iterations) is taken iteration by iteration,
which shows whether the masks have settled as far as the accelerator can tell.

Tensor statistics per trace and for its synthetic twin (`tensor_stats`): weight
sparsity; the spread of per-filter density (coefficient of variation of the non-zero
fraction of each output channel's weights, over the sparse layers); dead input channels
(channels of a conv layer's saved input that are zero for every sample and position);
how unevenly the saved activations' non-zeros fall on channels (median over conv layers
of the coefficient of variation of per-channel non-zero counts); for a series of traced
iterations, the fraction of each iteration's kept weights still kept at the last one;
the spread of per-layer weight sparsity (standard deviation over layers);
activation sparsity (the forward input), saved-activation sparsity and output-gradient
sparsity, each as the fraction of zeros over all elements of the sparse layers (the
first conv, dense in SWAT-U, left out).

Writes OUT/speedups.csv, OUT/tensors.csv, prints Markdown tables for the README and draws
the plot. Not a test: it runs full ResNet-50 simulations (about a minute per trace and
config on the 2-core machine).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import simulator  # noqa: E402
from simulator.config import Workload  # noqa: E402
from simulator.results import summarize  # noqa: E402
from simulator.trace import read_trace  # noqa: E402
from workloads.networks import build_network  # noqa: E402
from workloads.synthetic import synthetic_layers  # noqa: E402


def trace_dirs(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        subs = sorted(d for d in p.glob("iter-*") if (d / "manifest.yaml").is_file())
        out.extend(subs or [p])
    return out


def tensor_stats(layers) -> dict:
    """Zero fractions and structure of the sparse layers' tensors (first conv left out)."""
    layers = list(layers)[1:]
    zeros = {k: [0, 0] for k in ("weight", "input", "input_saved", "grad_output")}
    cvs, dead, channels, layer_sparsity, act_cvs = [], 0, 0, [], []
    for lay in layers:
        for k in zeros:
            a = getattr(lay, k)
            zeros[k][0] += int(a.size - np.count_nonzero(a))
            zeros[k][1] += a.size
        layer_sparsity.append(1 - np.count_nonzero(lay.weight) / lay.weight.size)
        w = lay.weight.reshape(lay.weight.shape[0], -1)
        density = np.count_nonzero(w, axis=1) / w.shape[1]
        if density.mean() > 0:
            cvs.append(density.std() / density.mean())
        if lay.spec.kind != "conv":  # an fc input's "channels" are features, Top-K'd one by one
            continue
        x = lay.input_saved
        per_channel = np.count_nonzero(x.reshape(x.shape[0], x.shape[1], -1), axis=(0, 2))
        dead += int((per_channel == 0).sum())
        if per_channel.mean() > 0:
            act_cvs.append(per_channel.std() / per_channel.mean())
        channels += per_channel.size
    return {"weight_sparsity": zeros["weight"][0] / zeros["weight"][1],
            "layer_sparsity_std": float(np.std(layer_sparsity)),
            "filter_density_cv": float(np.median(cvs)) if cvs else 0.0,
            "dead_input_channels": dead / max(channels, 1),
            "saved_channel_density_cv": float(np.median(act_cvs)) if act_cvs else 0.0,
            "activation_sparsity": zeros["input"][0] / zeros["input"][1],
            "saved_activation_sparsity": zeros["input_saved"][0] / zeros["input_saved"][1],
            "grad_output_sparsity": zeros["grad_output"][0] / zeros["grad_output"][1]}


def mask_kept_at_last(tens: pd.DataFrame) -> list[float]:
    """Per trained row: the fraction of its kept (non-zero) weights, over the sparse
    layers, that are also kept in the last traced iteration of the same run."""
    out = []
    for r in tens.itertuples():
        if r.workload != "trained":
            out.append(np.nan)
            continue
        series = tens[(tens.workload == "trained") & (tens.network == r.network)
                      & (tens.method == r.method) & (tens.sparsity == r.sparsity)]
        last = series.loc[series.iteration.idxmax(), "trace"]
        a, b = read_trace(r.trace).layers[1:], read_trace(last).layers[1:]
        kept = sum(int(np.count_nonzero(x.weight)) for x in a)
        both = sum(int(np.count_nonzero((x.weight != 0) & (y.weight != 0))) for x, y in zip(a, b))
        out.append(both / max(kept, 1))
    return out


def summary_rows(config, label: str, workload: str, meta: dict) -> list[dict]:
    df = simulator.run(config)
    s = summarize(df)
    rows = []
    for _, r in s.iterrows():
        rows.append({"config": label, "workload": workload, **meta, "phase": r["phase"],
                     "speedup": r["speedup"], "compute_speedup": r["compute_speedup"],
                     "ideal_speedup": r["ideal_speedup"], "dram_reduction": r["dram_reduction"]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--configs", nargs="+", default=[str(ROOT / "configs/tactical.yaml"),
                                                      str(ROOT / "configs/table11-closest.yaml")])
    ap.add_argument("--out", default="reports/trained")
    ap.add_argument("--plot", default=None, help="PNG to draw (default OUT/trained-vs-synthetic.png)")
    ap.add_argument("--no-synthetic", action="store_true", help="traces only")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, stats = [], []
    synthetic_done = set()
    for tdir in trace_dirs(args.traces):
        trace = read_trace(tdir)
        size = int(trace.meta.get("image_size", 224))
        batch = int(trace.meta.get("batch", 1))
        meta = {"network": trace.network, "method": trace.method, "sparsity": trace.sparsity,
                "iteration": int(trace.meta.get("iteration", 0)), "trace": str(tdir)}
        stats.append({**meta, "workload": "trained", **tensor_stats(trace.layers)})
        net = build_network(trace.network, image_size=size, num_classes=trace.layers[-1].spec.out_channels)
        key = (trace.network, size, batch, trace.sparsity, trace.layers[-1].spec.out_channels)
        if not args.no_synthetic and key not in synthetic_done:
            stats.append({**meta, "iteration": 0, "trace": "", "workload": "synthetic",
                          **tensor_stats(synthetic_layers(net, trace.sparsity, batch=batch, seed=0))})
        for cpath in args.configs:
            base = simulator.load_config(cpath)
            label = Path(cpath).stem
            print(f"{label}: {tdir}", file=sys.stderr, flush=True)
            cfg = replace(base, workload=Workload(trace=str(tdir)))
            rows += summary_rows(cfg, label, "trained", meta)
            if not args.no_synthetic and key not in synthetic_done:
                syn = replace(base, workload=Workload(network=trace.network, image_size=size, batch=batch,
                                                      sparsity=(trace.sparsity,), seed=0))
                rows += summary_rows(syn, label, "synthetic", {**meta, "iteration": 0, "trace": ""})
        synthetic_done.add(key)
    speed, tens = pd.DataFrame(rows), pd.DataFrame(stats)
    tens["mask_kept_at_last"] = mask_kept_at_last(tens)
    speed.to_csv(out / "speedups.csv", index=False)
    tens.to_csv(out / "tensors.csv", index=False)
    print_tables(speed, tens)
    draw(speed, Path(args.plot) if args.plot else out / "trained-vs-synthetic.png")
    return 0


def final_rows(speed: pd.DataFrame) -> pd.DataFrame:
    """Synthetic rows and, per (network, method, sparsity), the last traced iteration's."""
    keys = ["network", "method", "sparsity"]
    last = speed.groupby(keys + ["workload"]).iteration.transform("max")
    return speed[(speed.workload == "synthetic") | (speed.iteration == last)]


def print_tables(speed: pd.DataFrame, tens: pd.DataFrame) -> None:
    last = final_rows(speed)
    print("| config | method | sparsity | workload | forward | input gradient | weight gradient | backward "
          "| iteration | DRAM reduction (iteration) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (cfg, method, sp, wl), g in last.groupby(["config", "method", "sparsity", "workload"], sort=True):
        cell = {r.phase: f"{r.compute_speedup:.2f}x / {r.speedup:.2f}x" for r in g.itertuples()}
        dram = g[g.phase == "iteration"].dram_reduction.iloc[0]
        print(f"| {cfg} | {method} | {sp:.0%} | {wl} | {cell['forward']} | {cell['input_grad']} | "
              f"{cell['weight_grad']} | {cell['backward']} | "
              f"{cell['iteration']} | {dram:.2f}x |")
    print()
    cols = ["weight_sparsity", "layer_sparsity_std", "filter_density_cv", "mask_kept_at_last",
            "dead_input_channels", "saved_channel_density_cv", "activation_sparsity",
            "saved_activation_sparsity", "grad_output_sparsity"]
    print("| method | sparsity | workload | iteration | " + " | ".join(cols) + " |")
    print("|---|---|---|---|" + "---|" * len(cols))
    for r in tens.sort_values(["method", "sparsity", "workload", "iteration"]).itertuples():
        print(f"| {r.method} | {r.sparsity:.0%} | {r.workload} | {r.iteration} | "
              + " | ".join(f"{getattr(r, c):.3f}" for c in cols) + " |")
    iters = speed[(speed.workload == "trained") & (speed.phase == "iteration")]
    if iters.iteration.nunique() > 1:
        print()
        print("| config | method | sparsity | training iteration | iteration speedup, compute / with memory |")
        print("|---|---|---|---|---|")
        for r in iters.sort_values(["config", "method", "sparsity", "iteration"]).itertuples():
            print(f"| {r.config} | {r.method} | {r.sparsity:.0%} | {r.iteration} | "
                  f"{r.compute_speedup:.2f}x / {r.speedup:.2f}x |")


def draw(speed: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = final_rows(speed)
    last = last[(last.method == "swat-u") | (last.workload == "synthetic")]
    configs = sorted(last.config.unique())
    sparsities = sorted(last.sparsity.unique())
    phases = ["forward", "backward", "iteration"]
    fig, axes = plt.subplots(len(configs), len(sparsities), figsize=(4.2 * len(sparsities), 3.2 * len(configs)),
                             squeeze=False, sharey="row")
    width = 0.2
    for i, cfg in enumerate(configs):
        for j, sp in enumerate(sparsities):
            ax = axes[i][j]
            for k, (wl, col, hatch) in enumerate((("synthetic", "compute_speedup", ""), ("trained", "compute_speedup", ""),
                                                  ("synthetic", "speedup", "//"), ("trained", "speedup", "//"))):
                g = last[(last.config == cfg) & (last.sparsity == sp) & (last.workload == wl)].set_index("phase")
                if g.empty:
                    continue
                vals = [g.loc[p, col] for p in phases]
                ax.bar(np.arange(3) + (k - 1.5) * width, vals, width, hatch=hatch,
                       color="tab:gray" if wl == "synthetic" else "tab:blue", edgecolor="black", linewidth=0.5,
                       label=f"{wl}, {'compute only' if col == 'compute_speedup' else 'with memory'}")
            ax.set_xticks(np.arange(3), phases)
            ax.set_title(f"{cfg}, {sp:.0%} sparsity", fontsize=10)
            ax.axhline(1, color="black", linewidth=0.5)
            if j == 0:
                ax.set_ylabel("speedup over dense (x)")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("ResNet-50, SWAT-U: trained traces against the synthetic workload (224x224, batch 1)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
