"""Python API: run or check a `Config` end to end (the wiring of workloads and simulator).

    import simulator
    cfg = simulator.load_config("configs/tactical.yaml")
    df = simulator.run(cfg)              # one row per (network, sparsity, layer, pass)
    print(simulator.summarize(df))

This module, like the CLI, may import `workloads`; the simulator core may not.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from tqdm.auto import tqdm

from .verify import CheckResult
from .config import Config, ConfigError
from .results import COLUMNS
from .serial_streaming import CodedLayer
from .simulate import PassPlan, check_layers, simulate_points
from .footprint import check_bytes, coded_layer_bytes, largest_pass, streamed_run
from .resources import MemoryLimitError, check_memory, format_bytes
from .safe_yaml import cut
from .trace import TENSORS, TraceError, TraceLayer, read_trace


def _batchnorm_elements(net, batch: int) -> dict:
    """Layer name -> elements of the batch-norm inputs after it (for `batch` samples)."""
    out: dict = {}
    for bn in net.batchnorms:
        out[bn.after] = out.get(bn.after, 0) + batch * bn.channels * bn.hw[0] * bn.hw[1]
    return out


def _trace_batchnorms(trace) -> dict:
    """Batch-norm input sizes of a trace's network, if the zoo knows a network of that name
    with the trace's layer shapes; else none (the tally then lacks batch-norm inputs)."""
    from workloads.networks import build_network

    first = trace.layers[0].spec
    try:
        net = build_network(trace.network, image_size=trace.meta.get("image_size", first.in_hw[0]),
                            num_classes=trace.layers[-1].spec.out_channels)
    except (ValueError, TypeError):
        return {}
    if tuple(net.layers) != tuple(lay.spec for lay in trace.layers):
        return {}
    return _batchnorm_elements(net, trace.layers[0].batch)


def _workloads(config: Config, max_memory_gib: float | None = None, check: bool = False,
               workers: int = 1) -> Iterator[tuple[str, float, int, Iterator[TraceLayer], dict]]:
    """Yield (network, sparsity, layer count, layers, batch-norm elements after each layer)
    per workload point of `config`, after checking that its estimated peak memory fits
    (the machine's limit, or `max_memory_gib` GiB). Synthetic layers come as values for
    `check`, as lazily drawn zero patterns (`SyntheticLayer`) for `run`."""
    wl = config.workload
    if wl.trace is not None:
        try:
            trace = read_trace(wl.trace)
        except TraceError as e:
            raise ConfigError(f"{config.source}: workload.trace: {e}") from None
        backward = [p for p in config.passes if p != "forward"]
        missing = [lay.spec.name for lay in trace.layers if lay.grad_output is None]
        if backward and missing:
            raise ConfigError(f"{config.source}: passes: the {backward[0]} pass needs grad_output, "
                              f"which trace {wl.trace} lacks for layer {missing[0]}; expected "
                              "passes: [forward] for this trace")
        tensors = sum(getattr(lay, t).nbytes for lay in trace.layers for t in TENSORS
                      if getattr(lay, t) is not None)
        _check_memory(config, [lay.spec for lay in trace.layers], trace.layers[0].batch, tensors,
                      f"{config.source}: workload.trace {wl.trace} (batch {trace.layers[0].batch})",
                      "the trace's batch or image size (trace-from-training --trace-batch, "
                      "--trace-image-size) or architecture.lanes", max_memory_gib, check, workers)
        yield (trace.network, trace.sparsity, len(trace.layers), _coded(config, trace.layers, check),
               _trace_batchnorms(trace))
        return
    from workloads.networks import build_network
    from workloads.synthetic import CACHE_BYTES, DrawCache, synthetic_layers, synthetic_patterns

    try:
        net = build_network(wl.network, image_size=wl.image_size, num_classes=wl.num_classes)
    except ValueError as e:
        key = "workload.image_size" if "image_size" in str(e) else "workload.network"
        raise config.error(key, f"a network the zoo can build ({cut(str(e), 200)})") from None
    if wl.dense_layers is not None:
        names = {s.name for s in net.layers}
        unknown = [n for n in wl.dense_layers if n not in names]
        if unknown:
            raise config.error("workload.dense_layers", f"layer names of {net.name} "
                               f"(e.g. {net.first_conv})", unknown[0])
    serial = config.architecture.bit_serial and not check
    shared = 0 if check or serial or len(wl.sparsity) == 1 else CACHE_BYTES  # DrawCache
    if serial:  # whole float layers in flight, one per worker and one more (`_coded`)
        shared = (workers + 1) * max(coded_layer_bytes(spec, wl.batch) for spec in net.layers)
    _check_memory(config, net.layers, wl.batch, shared,
                  f"{config.source}: {net.name} at image_size {wl.image_size or net.layers[0].in_hw[0]}, "
                  f"batch {wl.batch}, {config.architecture.lanes} lanes",
                  "workload.batch, workload.image_size or workload.num_classes (or architecture.lanes)",
                  max_memory_gib, check, workers, synthetic=not serial)
    bns = _batchnorm_elements(net, wl.batch)
    cache = DrawCache() if len(wl.sparsity) > 1 and not serial else None  # the sparsities draw the same tensors
    for s in wl.sparsity:
        layers = (synthetic_layers(net, s, wl.batch, wl.seed, wl.dense_layers) if check or serial else
                  synthetic_patterns(net, s, wl.batch, wl.seed, wl.dense_layers, cache))
        yield net.name, s, len(net.layers), _coded(config, layers, check), bns


def _coded(config: Config, layers, check: bool):
    """`layers` as a bit-serial back-end's `CodedLayer`s (values quantised, then costs) for
    `run`; unchanged for `check` and the bit-parallel back-end. Synthetic layers are then
    drawn whole as values (`synthetic_layers`), not as bits."""
    arch = config.architecture
    if check or not arch.bit_serial:
        return iter(layers)
    return (CodedLayer(layer, arch.backend, arch.bits, arch.trailing_zeros) for layer in layers)


def _check_memory(config: Config, specs, batch: int, tensor_bytes: int, what: str,
                  change: str, max_memory_gib: float | None, check: bool, workers: int = 1,
                  synthetic: bool = False) -> None:
    """Refuse (ConfigError) a workload whose estimated peak memory exceeds the limit
    (`simulator.footprint`, `simulator.resources`; `max_memory_gib` sets it): `check`
    holds whole passes in float32 and float64, `run` streams chunks on `workers` threads;
    `tensor_bytes`: held for the whole run (a loaded trace, the draws sparsities share)."""
    if check:
        largest, layer, pass_name = largest_pass(specs, batch, config.architecture.lanes,
                                                 config.passes, config.lowering)
        estimate = check_bytes(largest, tensor_bytes)
        streams = 4 * largest
    else:
        estimate, layer, pass_name, streams = streamed_run(specs, batch, config.architecture, _plan(config),
                                                           workers, synthetic)
        estimate += tensor_bytes
    what += (f" (largest {'pass' if check else 'chunk'}: {layer} {pass_name}, "
             f"{format_bytes(streams)} of streams)")
    try:
        check_memory(estimate, what, change, max_memory_gib)
    except MemoryLimitError as e:
        raise ConfigError(str(e)) from None


def _plan(config: Config) -> PassPlan:
    return PassPlan(config.passes, config.lowering)


def _progress(layers, total: int, desc: str, quiet: bool):
    return tqdm(layers, total=total, desc=desc, unit="layer", leave=False,
                disable=True if quiet else None)


def run(config: Config, quiet: bool = True, max_memory_gib: float | None = None,
        workers: int = 1) -> pd.DataFrame:
    """Simulate every workload point and pass of `config`; returns the result rows.
    `workers` threads simulate layers at once (the CLI's default: every core).
    A workload whose estimated peak memory exceeds the limit (the machine's available
    memory, or `max_memory_gib`) raises ConfigError before anything large is built."""
    bars = []  # one progress bar per workload point, advanced as its layers finish

    def points():
        for network, sparsity, count, layers, bns in _workloads(config, max_memory_gib, workers=workers):
            bars.append(tqdm(total=count, desc=f"{network} {sparsity:.0%}", unit="layer", leave=False,
                             disable=True if quiet else None))
            yield network, sparsity, layers, bns

    def finished(point: int) -> None:
        bars[point].update()
        if bars[point].n >= bars[point].total:
            bars[point].close()

    try:
        rows = [row for point in simulate_points(points(), config.architecture, _plan(config),
                                                 config.memory, workers, on_layer=finished,
                                                 energy=config.energy)
                for row in point]
    finally:
        for bar in bars:
            bar.close()
    if not rows:
        raise ConfigError(f"{config.source}: passes: expected at least one layer pass to simulate, "
                          "but the workload has none (the first layer's input_grad is skipped "
                          "unless lowering.first_layer_input_grad is true)")
    return pd.DataFrame(rows, columns=COLUMNS)


def check(config: Config, quiet: bool = True, max_memory_gib: float | None = None
          ) -> Iterator[tuple[str, float, CheckResult]]:
    """Functional check of every layer and pass: yields (network, sparsity, result).
    Memory is checked as in `run`, with the check's larger footprint (float64 reference)."""
    for network, sparsity, count, layers, _ in _workloads(config, max_memory_gib, check=True):
        it = _progress(layers, count, f"check {network} {sparsity:.0%}", quiet)
        for result in check_layers(it, config.architecture, _plan(config)):
            yield network, sparsity, result
