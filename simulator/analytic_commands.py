"""The `accelsim flops` and `accelsim topk-overhead` commands: argument checks and tables.

The models themselves are `flops.py` (SWAT A.3) and `topk_overhead.py` (SWAT A.4); this
module turns options into their inputs (one-line `ConfigError`s for bad values, exit 2 in
`cli.main`; batches, image sizes and periods at most 2**31-1, MAC counts at most 2**60 so
that the A.3 sums stay exact; `--measure` refused before allocating when its tensors
would not fit in memory, `simulator.resources`) and prints their tables. `--measure`
times our Top-K on this machine through `workloads.topk_timing`.
"""

from __future__ import annotations

import textwrap

from .config import ConfigError


def _number(option: str, text: str, low: float = 0.0, high: float | None = 1.0,
            high_open: bool = True, integer: bool = False):
    """`text` as a number in [low, high) (or [low, high]); a one-line ConfigError otherwise."""
    if high is None:
        expected = f"{'an integer' if integer else 'a number'} >= {low:g}"
    else:
        expected = f"a number in [{low:g}, {high:g}{')' if high_open else ']'}"
    try:
        v = int(text) if integer else float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{option}: expected {expected}, got {_cut(str(text))}") from None
    if not (v >= low and v < float("inf")) or (high is not None and not (v < high if high_open else v <= high)):
        raise ConfigError(f"{option}: expected {expected}, got {_cut(str(text))}")
    return v


MAX_VALUES = 100  # comma-separated values of one option: each is a row of the table


def _numbers(option: str, text: str, **kw) -> list:
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if len(parts) > MAX_VALUES:
        raise ConfigError(f"{option}: expected at most {MAX_VALUES} comma-separated values, got "
                          f"{len(parts):,}")
    values = [_number(option, t, **kw) for t in parts]
    if not values:
        raise ConfigError(f"{option}: expected one or more comma-separated numbers, got "
                          f"{_cut(repr(text))}")
    return values


def _cut(text: str) -> str:
    from .safe_yaml import cut

    return cut(text)


MAX_BATCH = 2**31 - 1
MAX_REPEAT = 100
MAX_MS = 1e12          # --step-ms, --topk-ms: about 30 years
MAX_MACS = 2**60       # MACs of one pass of a batch: every pass of the A.3 model stays exact in int64


def _network(name: str, image_size: str | None, option: str = "NETWORK"):
    from workloads.networks import NETWORKS, build_network

    if name not in NETWORKS:
        raise ConfigError(f"{option}: expected one of {', '.join(NETWORKS)}, got {name!r}")
    size = None if image_size is None else _number("--image-size", image_size, 1, None, integer=True)
    if size is not None and size > MAX_BATCH:
        raise ConfigError(f"--image-size: expected an integer in 1..{MAX_BATCH}, got {image_size}")
    try:
        return build_network(name, image_size=size)
    except ValueError as e:
        raise ConfigError(f"--image-size: {e}") from None


def _batch(text: str | None, default: int) -> int:
    if text is None:
        return default
    batch = _number("--batch", text, 1, None, integer=True)
    if batch > MAX_BATCH:
        raise ConfigError(f"--batch: expected an integer in 1..{MAX_BATCH}, got {text}")
    return batch


def _check_macs(net, batch: int) -> None:
    """Refuse sizes whose MAC counts would leave exact 64-bit integer arithmetic."""
    macs = net.macs(batch)
    if macs > MAX_MACS:
        raise ConfigError(f"--batch/--image-size: {net.name} at {net.image_size}x{net.image_size}, "
                          f"batch {batch:,} is {macs:.3g} MACs per pass, more than the {MAX_MACS:.3g} "
                          "this model counts exactly; lower --batch or --image-size")


def cmd_flops(args) -> int:
    from .flops import COUNTINGS, METHODS, format_flops, layer_flops, summarize_flops

    if args.method not in METHODS:
        raise ConfigError(f"--method: expected one of {', '.join(METHODS)}, got {args.method!r}")
    if args.counting not in COUNTINGS:
        raise ConfigError(f"--counting: expected one of {', '.join(COUNTINGS)}, got {args.counting!r}")
    sparsities = _numbers("--sparsity", args.sparsity)
    act = (None if args.activation_sparsity is None
           else _number("--activation-sparsity", args.activation_sparsity, high_open=False))
    if act is not None and args.method in ("dense", "meprop"):
        raise ConfigError(f"--activation-sparsity: not used by --method {args.method}")
    batch = _batch(args.batch, 1)
    net = _network(args.network, args.image_size)
    _check_macs(net, batch)
    dense = None
    if args.dense_layers is not None:
        dense = [] if args.dense_layers.strip() == "none" else \
            [n.strip() for n in args.dense_layers.split(",") if n.strip()]
        names = {lay.name for lay in net.layers}
        bad = [n for n in dense if n not in names]
        if bad:
            raise ConfigError(f"--dense-layers: expected layer names of {net.name} or 'none', got "
                              f"{_cut(repr(bad[0]))}")
    for i, s in enumerate(sparsities):
        per_layer = layer_flops(net.layers, s, args.method, activation_sparsity=act, batch=batch,
                                counting=args.counting, dense_layers=dense,
                                first_layer_input_grad=not args.no_first_input_grad)
        dense_names = sorted(set(per_layer.loc[~per_layer["sparse"], "layer"]))
        a = act if act is not None else (0.5 if args.method == "sparse-learning" else s)
        title = (f"{net.name} ({net.image_size}x{net.image_size}, batch {batch}), {args.method} at "
                 f"{s:.0%} sparsity" + ("" if args.method in ("dense", "meprop")
                                        else f", activations {a:.0%}")
                 + f"; dense layers: {', '.join(dense_names) or 'none'}; counting {args.counting}")
        if i:
            print()
        print(format_flops(summarize_flops(per_layer), args.method, title))
        if args.verbose:  # per layer, MMACs dense / sparse of each pass
            short = {"forward": "fwd", "input_grad": "dX", "weight_grad": "dW"}
            print(f"\n{'layer (MMACs)':<28}{'sparse':>7}"
                  + "".join(f"{short[p] + ' dense':>12}{short[p] + ' sparse':>12}" for p in short))
            for name, rows in per_layer.groupby("layer", sort=False):
                by_pass = rows.set_index("pass")
                cells = "".join(
                    f"{by_pass.loc[p, 'dense_macs'] / 1e6:>12.2f}{by_pass.loc[p, 'sparse_macs'] / 1e6:>12.2f}"
                    if p in by_pass.index else f"{'-':>12}{'-':>12}" for p in short)
                print(f"{name:<28}{'yes' if rows['sparse'].iloc[0] else 'no':>7}{cells}")
    if not args.quiet:
        print("\n" + textwrap.fill(
            "MACs per iteration of `batch` samples; FLOPs = 2 MACs. Per pass, the MACs scale "
            "with the density of the operand named (SWAT A.3); BN, pooling and Top-K are not "
            "counted." + (" Counting a3: the input gradient is counted over the input-sized "
                          "gradient, N*C*X*Y outputs x F*R*S (A.3 eq. 5: stride^2 x the forward "
                          "MACs), as SWAT's Table 3 was computed." if args.counting == "a3" else
                          " Counting true: every pass has the forward pass's MACs."), 100))
    return 0


def cmd_topk_overhead(args) -> int:
    from .topk_overhead import (PAPER_PERIOD, PAPER_REDUCTIONS, PAPER_STEP_MS, PAPER_TOPK_MS, Case,
                                format_overhead, overhead_table)

    period = _number("--period", args.period, 1, None, integer=True) if args.period else PAPER_PERIOD
    if period > MAX_BATCH:
        raise ConfigError(f"--period: expected an integer in 1..{MAX_BATCH}, got {args.period}")
    step = _number("--step-ms", args.step_ms, 0.0, None) if args.step_ms else None
    if step is not None and step <= 0:
        raise ConfigError(f"--step-ms: expected a positive number, got {args.step_ms}")
    if step is not None and step > MAX_MS:
        raise ConfigError(f"--step-ms: expected a number in (0, {MAX_MS:g}], got {args.step_ms}")
    if args.topk_ms and _number("--topk-ms", args.topk_ms, 0.0, None) > MAX_MS:
        raise ConfigError(f"--topk-ms: expected a number in [0, {MAX_MS:g}], got {args.topk_ms}")
    reductions = _numbers("--reduction", args.reduction) if args.reduction else None
    sparsities = _numbers("--sparsity", args.sparsity) if args.sparsity else None
    if not args.measure:
        for opt, val in (("--batch", args.batch), ("--image-size", args.image_size),
                         ("--repeat", args.repeat), ("--max-memory", args.max_memory)):
            if val is not None:
                raise ConfigError(f"{opt}: only used with --measure NETWORK")
        topk = _number("--topk-ms", args.topk_ms, 0.0, None) if args.topk_ms else PAPER_TOPK_MS
        if reductions is None:
            if sparsities is not None:
                raise ConfigError("--sparsity: without --measure, give --reduction (the FLOP "
                                  "reductions) instead; --sparsity only labels them")
            sparsities, reductions = list(PAPER_REDUCTIONS), list(PAPER_REDUCTIONS.values())
        if sparsities is not None and len(sparsities) != len(reductions):
            raise ConfigError(f"--sparsity: expected one value per --reduction ({len(reductions)}), "
                              f"got {len(sparsities)}")
        labels = sparsities or [None] * len(reductions)
        step = PAPER_STEP_MS if step is None else step
        cases = [Case(r, step, topk, period, s) for s, r in zip(labels, reductions)]
        if not args.quiet:
            print("Top-K overhead (SWAT A.4, eq. 7-8): speedup = P*T / ((P-1)(1-R)T + (1-R)T + K)")
            print(f"T = {step:g} ms dense step" + (" (SWAT Table 10: ResNet-50, batch 32, RTX 2080 Ti)"
                                                  if not args.step_ms else ""))
            print(f"K = {topk:g} ms per Top-K recomputation" + (
                " (SWAT Table 10: 18 ms weights + 452 ms activations)" if not args.topk_ms else ""))
            print(f"P = {period} iterations between recomputations"
                  + (" (SWAT 4.1, ImageNet)" if not args.period else ""))
            print("R = training-FLOP reduction" + (" (SWAT Table 3, ResNet-50 SWAT-U)"
                                                   if not args.reduction else "") + "\n")
        print(format_overhead(overhead_table(cases)))
        return 0
    return _topk_measure(args, period, step, reductions, sparsities)


def _topk_measure(args, period, step, reductions, sparsities) -> int:
    from workloads.networks import build_network
    from workloads.topk_timing import time_topk, topk_memory_bytes

    from .flops import training_flop_reduction
    from .resources import check_memory, parse_gib
    from .topk_overhead import PAPER_STEP_MS, Case, format_overhead, overhead_table

    if args.topk_ms:
        raise ConfigError("--topk-ms: not used with --measure (which measures the Top-K time)")
    batch = _batch(args.batch, 32)
    repeat = _number("--repeat", args.repeat, 1, None, integer=True) if args.repeat else 1
    if repeat > MAX_REPEAT:
        raise ConfigError(f"--repeat: expected an integer in 1..{MAX_REPEAT}, got {args.repeat}")
    net = _network(args.measure, args.image_size, "--measure")
    max_memory = None if args.max_memory is None else parse_gib(args.max_memory, "--max-memory")
    check_memory(topk_memory_bytes(net, batch),
                 f"--measure {net.name} at {net.image_size}x{net.image_size}, batch {batch:,}",
                 "--batch or --image-size", max_memory)
    sparsities = sparsities or [0.8, 0.9]
    for s in sparsities:
        if s >= 1.0:
            raise ConfigError(f"--sparsity: expected a number in [0, 1), got {s:g}")
    if reductions is None:
        reductions = [training_flop_reduction(net.layers, s, "swat-u") for s in sparsities]
        source = "accelsim flops, swat-u, counting a3"
    elif len(reductions) != len(sparsities):
        raise ConfigError(f"--reduction: expected one value per --sparsity ({len(sparsities)}), "
                          f"got {len(reductions)}")
    else:
        source = "given"
    if step is None:
        scale = net.macs(batch) / build_network("resnet50").macs(32)
        step = PAPER_STEP_MS * scale
        step_source = "SWAT Table 10: ResNet-50, batch 32, RTX 2080 Ti"
        if scale != 1.0:
            step_source = (f"{PAPER_STEP_MS:g} ms from {step_source}, x {scale:.4g}: this "
                           "network's forward MACs at this batch relative to it")
    else:
        step_source = "given"
    timings = {s: time_topk(net, batch, s, repeat=repeat) for s in sparsities}
    print(f"{net.name} ({net.image_size}x{net.image_size}), batch {batch}: one Top-K recomputation "
          f"on this machine (best of {repeat}), ms")
    print(f"{'sparsity':>9}{'tensor':>12}{'elements':>14}{'np.partition':>14}{'radix select':>14}")
    for s, t in timings.items():
        for kind in ("weight", "activation"):
            part = t[t["tensor"] == kind]
            print(f"{s:>9.0%}{kind + 's':>12}{int(part['elements'].sum()):>14,d}"
                  f"{part['partition_ms'].sum():>14.1f}{part['radix_ms'].sum():>14.1f}")
        print(f"{s:>9.0%}{'total':>12}{int(t['elements'].sum()):>14,d}"
              f"{t['partition_ms'].sum():>14.1f}{t['radix_ms'].sum():>14.1f}")
    if args.verbose:
        for s, t in timings.items():
            print(f"\nper tensor at {s:.0%}:\n" + t.to_string(index=False, float_format="%.2f"))
    for impl, label in (("partition", "np.partition"), ("radix", "radix select")):
        cases = [Case(r, step, float(timings[s][f"{impl}_ms"].sum()), period, s)
                 for s, r in zip(sparsities, reductions)]
        print(f"\nspeedup with K = our {label} time:")
        print(format_overhead(overhead_table(cases)))
    if not args.quiet:
        print("\n" + textwrap.fill(
            f"T = {step:.4g} ms dense step ({step_source}); P = {period}; R = training-FLOP "
            f"reduction ({source}); K = one Top-K recomputation, timed above; speedup = "
            "P*T / ((P-1)(1-R)T + (1-R)T + K), SWAT A.4 eq. 7-8.", 100))
    return 0
