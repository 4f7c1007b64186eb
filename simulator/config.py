"""Run configuration: YAML (`simulator.safe_yaml`) into validated, frozen dataclasses.

Every problem is reported as one `ConfigError` line naming the file, the key path and
what was expected, e.g. ``configs/x.yaml: architecture.tiles: expected an integer >= 1,
got -3``. Units: `frequency_mhz` in MHz; array sizes in multipliers; `image_size` in
pixels; `sparsity` as a fraction of zeros in [0, 1).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


from . import safe_yaml
from .energy import EnergyTable
from .formats import ELEMENT_BITS, FORMATS
from .frontend import PATTERNS, SCHEDULERS, SHAPES, Frontend, FrontendError, connectivity
from .lowering import FIRST_LAYER_MAPPINGS, INPUT_GRAD_LOWERINGS, OPERANDS, PASSES, TAP_ORDERS
BACKENDS = ("bit-parallel", "tclp", "tcle")
BIT_SERIAL = ("tclp", "tcle")  # back-ends that process the broadcast operand bit by bit
SERIAL_BITS = (8, 16)          # their operand widths (simulator/quantize.py)
MAX_IMAGE_SIZE = 4096  # pixels; larger inputs would need tens of GB of synthetic activations
# Largest values the parser accepts; far beyond any array built (Bit-Tactical: 16 x 16 x 16
# with T<2,5>; a TPU-like 256 x 256), small enough that validation and the per-step
# schedule stay cheap. Memory is checked separately, from the workload (`footprint.py`).
MAX_ARRAY_SIDE = 1024  # tiles, rows, lanes, columns
MAX_LOOKAHEAD = 16     # h: steps a value may be promoted from (the shipped sweep goes to 8)
MAX_LOOKASIDE = 64     # d: lateral connections (also at most lanes * h - 1, see frontend.py)
# memory ranges: 1 byte to 1 TiB of buffer; 1 MB/s to 1 PB/s of DRAM (or .inf); latency
# up to 1 s; clock from 1 kHz to 1 THz (outside these the timing model's integers overflow)
BUFFER_KIB = {"low": 1 / 1024, "high": 2.0 ** 30}
MAX_SPARSITIES = 1000  # values of workload.sparsity, each a whole simulation of the network


class ConfigError(ValueError):
    """A user mistake in a config file; `str()` is the one-line message to print."""


class CombinationError(ConfigError):
    """Values that are each valid but do not go together (a back-end's bits and the
    array's columns, a bit-serial back-end's memory element): a sweep skips such a point."""


@dataclass(frozen=True)
class Architecture:
    """The PE array: `tiles` x `rows` filter lanes x `lanes` weight lanes x `columns` windows.

    Peak MACs per cycle = tiles * rows * lanes * columns, divided by `bits` for the
    bit-serial back-ends (`tclp`, `tcle`: a column takes a `bits`-bit broadcast value one
    bit or term per cycle, so `bits` columns match one bit-parallel column; see
    simulator/bitserial.py). Defaults: the 16-tile DaDianNao-style array Bit-Tactical
    builds on (16 filters x 16 weights per tile, one window per cycle in bit-parallel
    mode: 4096 MACs/cycle), T<2,5>, 1 GHz; bit-serial back-ends default to 16 bits and
    16 columns.
    """

    tiles: int = 16
    rows: int = 16
    lanes: int = 16
    columns: int = 1
    frequency_mhz: float = 1000.0
    frontend: Frontend = field(default_factory=Frontend)
    backend: str = "bit-parallel"
    lockstep: bool = True
    bits: int = 16  # the broadcast operand's width on a bit-serial back-end
    trailing_zeros: bool = False  # TCLp: also skip each group's trailing zero bits

    @property
    def bit_serial(self) -> bool:
        return self.backend in BIT_SERIAL

    @property
    def parallel_columns(self) -> int:
        """Columns of the bit-parallel array with the same peak (the dense baseline)."""
        return self.columns // self.bits if self.bit_serial else self.columns

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.tiles * self.rows * self.lanes * self.parallel_columns


@dataclass(frozen=True)
class Workload:
    """Either a synthetic workload (`network` set) or a trace directory (`trace` set).

    `dense_layers`: layer names left dense by the sparsifier; None means the first
    conv (as SWAT-U does). `num_classes`/`image_size` None mean the network's default.
    """

    network: str | None = None
    trace: str | None = None
    image_size: int | None = None
    batch: int = 1
    sparsity: tuple[float, ...] = (0.0,)
    seed: int = 0
    dense_layers: tuple[str, ...] | None = None
    num_classes: int | None = None


DEFAULT_OPERANDS = {"forward": "weights", "input_grad": "weights", "weight_grad": "activations"}


@dataclass(frozen=True)
class Lowering:
    """How the passes are lowered onto the array (see lowering.py).

    `scheduled_operand[pass]`: weights (the lowered convolution's kernel: W, or dY for
    the weight gradient), activations (its input: X, dY for the input gradient, the
    saved X for the weight gradient) or auto (the sparser tensor). Defaults follow SWAT.
    `input_grad_lowering`: phase (sub-kernel decomposition) or zero-insert.
    `first_layer_input_grad`: simulate the gradient of the network's input image.
    `first_layer`: pad (stream it like any layer) or space-to-depth (a strided first
    layer's forward pass as a stride-1 conv over s*s*C channels, as DNNsim does).
    `tap_order`: row-major (kernel taps with v fastest) or column-major (u fastest, DNNsim's).
    """

    scheduled_operand: dict = field(default_factory=lambda: dict(DEFAULT_OPERANDS))
    input_grad_lowering: str = "phase"
    first_layer_input_grad: bool = False
    first_layer: str = "pad"
    tap_order: str = "row-major"


TENSOR_CLASSES = ("weights", "activations", "saved_activations", "gradients")


@dataclass(frozen=True)
class Memory:
    """DRAM and on-chip buffers (see formats.py, traffic.py, memory.py).

    `element`: value width in DRAM (fp32, bf16, fp16, int16, int8); `formats`: storage
    format per tensor class (dense, bitmap, coordinate, rle, ideal or best);
    `run_length_bits`: rle run field; buffers in KiB (each double-buffered);
    `bandwidth_gbps` in GB/s (10^9 bytes/s, `inf` for unlimited); `latency_ns` per
    transfer. Defaults: fp32 (SWAT trains in fp32); `best` per tensor; a 5-bit run field
    (Eyeriss's run-length coder); 512 KiB weight, 1 MiB activation and 256 KiB output
    buffers (our choice: 1.75 MiB of SRAM; sweep it); one DDR4-2400 64-bit channel,
    2400 MT/s x 8 B = 19.2 GB/s; 100 ns, a loaded DDR4 access through its controller.
    """

    element: str = "fp32"
    formats: dict = field(default_factory=lambda: dict.fromkeys(TENSOR_CLASSES, "best"))
    run_length_bits: int = 5
    weight_buffer_kib: float = 512.0
    activation_buffer_kib: float = 1024.0
    output_buffer_kib: float = 256.0
    bandwidth_gbps: float = 19.2
    latency_ns: float = 100.0

    @property
    def element_bits(self) -> int:
        return ELEMENT_BITS[self.element]


@dataclass(frozen=True)
class Output:
    dir: str | None = None  # None: reports/<config name>


@dataclass(frozen=True)
class Config:
    name: str
    architecture: Architecture
    workload: Workload
    passes: tuple[str, ...]
    output: Output
    lowering: Lowering = field(default_factory=Lowering)
    memory: Memory = field(default_factory=Memory)
    energy: EnergyTable = field(default_factory=EnergyTable)
    source: str = "<config>"  # the file it came from, for error messages

    @property
    def output_dir(self) -> Path:
        return Path(self.output.dir) if self.output.dir else Path("reports") / self.name

    def error(self, key: str, expected: str, got: Any = None) -> ConfigError:
        """A ConfigError about `key` of this config (for checks that need a workload)."""
        return _error(self.source, key, expected, got)


def _error(source: str, key: str, expected: str, got: Any = None) -> ConfigError:
    tail = "" if got is None else f", got {safe_yaml.cut(repr(got))}"
    return ConfigError(f"{source}: {key}: expected {expected}{tail}")


class _Section:
    """Reads one mapping of the YAML, remembering which keys were used."""

    def __init__(self, source: str, path: str, data: Any, allowed: tuple[str, ...]):
        self.source, self.path = source, path
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise _error(source, path or "(top level)", "a mapping", data)
        unknown = [k for k in data if k not in allowed]
        if unknown:
            raise _error(source, self.key(repr(unknown[0]) if not isinstance(unknown[0], str)
                                          or not unknown[0].isprintable() else unknown[0]),
                         f"one of the known keys ({', '.join(allowed)}); unknown key")
        self.data = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, expected: str, got: Any = None) -> ConfigError:
        return _error(self.source, self.key(name), expected, got)

    def int(self, name: str, default: int | None, minimum: int | None = None,
            maximum: int = 2 ** 31 - 1) -> int | None:
        """An integer in [minimum, maximum]; no count or size a config holds needs more than
        2**31 - 1 (larger ones are refused here rather than failing an allocation later)."""
        v = self.data.get(name, default)
        if v is None and default is None:
            return None
        want = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        if isinstance(v, bool) or not isinstance(v, int) or (minimum is not None and v < minimum):
            raise self.fail(name, want, v)
        if v > maximum:
            raise self.fail(name, f"an integer <= {maximum:,}", v)
        return v

    def positive_number(self, name: str, default: float, infinite: bool = False,
                        low: float = sys.float_info.min, high: float = 1e12) -> float:
        """A number in [low, high] (by default > 0, not subnormal, at most 1e12: no clock,
        bandwidth or buffer here means more, and larger ones overflow the timing model);
        `infinite` also allows YAML `.inf` (unlimited)."""
        v = self.data.get(name, default)
        ok = (not isinstance(v, bool) and isinstance(v, (int, float))
              and (low <= v <= high or (infinite and v == float("inf"))))
        if not ok:
            rng = f"a number from {low:g} to {high:g}"
            raise self.fail(name, rng + (" (.inf for unlimited)" if infinite else ""), v)
        return float(v)

    def number(self, name: str, default: float, minimum: float, maximum: float = 1e12) -> float:
        v = self.data.get(name, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not minimum <= v <= maximum:
            raise self.fail(name, f"a number from {minimum:g} to {maximum:g}", v)
        return float(v)

    def choice(self, name: str, default: str | None, choices: tuple[str, ...]) -> str | None:
        v = self.data.get(name, default)
        if v is None and default is None:
            return None
        if not isinstance(v, str) or v not in choices:
            raise self.fail(name, f"one of {', '.join(choices)}", v)
        return v

    def string(self, name: str, default: str | None) -> str | None:
        """A non-empty string; an explicit null only where the key is optional (default None)."""
        v = self.data.get(name, default)
        if (v is None and default is not None) or (v is not None and (not isinstance(v, str)
                                                                      or not v)):
            raise self.fail(name, "a non-empty string", "null" if v is None else v)
        if v is not None and safe_yaml.has_control_characters(v):
            raise self.fail(name, "a string without control characters", v)
        return v


def _architecture(source: str, data: Any) -> Architecture:
    names = tuple(f.name for f in fields(Architecture))
    sec = _Section(source, "architecture", data, names)
    d = Architecture()
    backend = sec.choice("backend", d.backend, BACKENDS)
    serial = backend in BIT_SERIAL
    bits = d.bits
    if "bits" in sec.data:
        if not serial:
            raise CombinationError(str(sec.fail("bits", f"no value with backend {backend} (bits is "
                                                "the bit-serial back-ends' operand width)")))
        bits = sec.int("bits", d.bits, 1)
        if bits not in SERIAL_BITS:
            raise sec.fail("bits", f"one of {', '.join(map(str, SERIAL_BITS))}", bits)
    trailing = sec.data.get("trailing_zeros", False)
    if not isinstance(trailing, bool):
        raise sec.fail("trailing_zeros", "true (TCLp skips trailing zero bits too) or false", trailing)
    if trailing and backend != "tclp":
        raise CombinationError(str(sec.fail("trailing_zeros", f"false with backend {backend} (only "
                                            "TCLp detects precision from bits)", trailing)))
    columns = sec.int("columns", bits if serial else d.columns, 1, MAX_ARRAY_SIDE)
    if serial and columns % bits:
        raise CombinationError(str(sec.fail(
            "columns", f"a multiple of bits ({bits}) for backend {backend}: {bits} bit-serial "
            "columns match one bit-parallel column", columns)))
    frontend = _frontend(source, sec.data.get("frontend"))
    lockstep = sec.data.get("lockstep", d.lockstep)
    if not isinstance(lockstep, bool):
        raise sec.fail("lockstep", "true (tiles wait for the slowest) or false (decoupled tiles)",
                       lockstep)
    arch = Architecture(
        tiles=sec.int("tiles", d.tiles, 1, MAX_ARRAY_SIDE), rows=sec.int("rows", d.rows, 1, MAX_ARRAY_SIDE),
        lanes=sec.int("lanes", d.lanes, 1, MAX_ARRAY_SIDE),
        columns=columns,
        frequency_mhz=sec.positive_number("frequency_mhz", d.frequency_mhz, low=1e-3, high=1e6),
        frontend=frontend, backend=backend, lockstep=lockstep, bits=bits, trailing_zeros=trailing)
    try:
        connectivity(frontend, arch.lanes)
    except FrontendError as e:
        raise ConfigError(f"{source}: architecture.frontend.{e}") from None
    return arch


def _frontend(source: str, data: Any) -> Frontend:
    """architecture.frontend: shape, lookahead, lookaside, pattern, scheduler, or custom
    lateral `offsets` (with a lookahead; shape custom or absent, no lookaside/pattern)."""
    d = Frontend()
    sec = _Section(source, "architecture.frontend", data,
                   ("shape", "lookahead", "lookaside", "pattern", "offsets", "scheduler"))
    scheduler = sec.choice("scheduler", d.scheduler, SCHEDULERS)
    if "offsets" in sec.data:
        offsets = sec.data["offsets"]
        if sec.data.get("shape", "custom") != "custom":
            raise sec.fail("shape", "custom or no shape with 'offsets' (the offsets are the "
                           "connectivity)", sec.data["shape"])
        for key in ("lookaside", "pattern"):
            if key in sec.data:
                raise sec.fail(key, "no value with 'offsets' (the offsets fix the lateral "
                               "connections)")
        if not isinstance(offsets, list):
            raise sec.fail("offsets", "a list of [dt, dl] pairs (lateral connections)", offsets)
        if len(offsets) > MAX_LOOKASIDE:
            raise sec.fail("offsets", f"at most {MAX_LOOKASIDE:,} lateral connections",
                           f"{len(offsets):,} of them")
        pairs = tuple(tuple(o) if isinstance(o, list) else o for o in offsets)
        h = sec.int("lookahead", d.lookahead, 1, MAX_LOOKAHEAD)
        return Frontend("custom", h, len(pairs), "spread", pairs, scheduler)
    shape = sec.choice("shape", d.shape, SHAPES)
    default_h = 0 if shape == "none" else d.lookahead
    default_d = 0 if shape == "none" else d.lookaside
    return Frontend(shape, sec.int("lookahead", default_h, 0, MAX_LOOKAHEAD),
                    sec.int("lookaside", default_d, 0, MAX_LOOKASIDE),
                    sec.choice("pattern", d.pattern, PATTERNS), None, scheduler)


def _workload(source: str, data: Any) -> Workload:
    names = tuple(f.name for f in fields(Workload))
    sec = _Section(source, "workload", data, names)
    network, trace = sec.string("network", None), sec.string("trace", None)
    if (network is None) == (trace is None):
        raise _error(source, "workload", "exactly one of 'network' (synthetic workload) or "
                     "'trace' (a trace directory)")
    sp = sec.data.get("sparsity", [0.0])
    if isinstance(sp, (int, float)) and not isinstance(sp, bool):
        sp = [sp]
    if not isinstance(sp, list) or not sp:
        raise sec.fail("sparsity", "a number or a non-empty list of numbers in [0, 1)", sp)
    if len(sp) > MAX_SPARSITIES:
        raise sec.fail("sparsity", f"at most {MAX_SPARSITIES:,} values (each is a whole run of "
                       "the network)", f"{len(sp):,} of them")
    values = []
    for i, v in enumerate(sp):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise sec.fail(f"sparsity[{i}]", "a number in [0, 1)", v)
        values.append(float(v))
    if len(set(values)) != len(values):
        raise sec.fail("sparsity", "distinct values", sp)
    dense = sec.data.get("dense_layers")
    if dense is not None:
        if not isinstance(dense, list) or not all(isinstance(x, str) for x in dense):
            raise sec.fail("dense_layers", "a list of layer names", dense)
        dense = tuple(dense)
    if trace is not None:
        for k in ("image_size", "num_classes", "dense_layers", "sparsity", "batch", "seed"):
            if k in sec.data:
                raise sec.fail(k, "no value: it applies to synthetic workloads, and the trace "
                               "fixes the shapes, batch and sparsity")
    image_size = sec.int("image_size", None, 8)
    if image_size is not None and image_size > MAX_IMAGE_SIZE:
        raise sec.fail("image_size", f"an integer <= {MAX_IMAGE_SIZE}", image_size)
    return Workload(network=network, trace=trace, image_size=image_size,
                    batch=sec.int("batch", 1, 1), sparsity=tuple(values),
                    seed=sec.int("seed", 0, 0, 2 ** 63 - 1), dense_layers=dense,
                    num_classes=sec.int("num_classes", None, 1))


def _lowering(source: str, data: Any) -> Lowering:
    sec = _Section(source, "lowering", data, ("scheduled_operand", "input_grad_lowering",
                                              "first_layer_input_grad", "first_layer", "tap_order"))
    ops = _Section(source, "lowering.scheduled_operand", sec.data.get("scheduled_operand"), PASSES)
    first = sec.data.get("first_layer_input_grad", False)
    if not isinstance(first, bool):
        raise sec.fail("first_layer_input_grad", "true or false", first)
    return Lowering(
        scheduled_operand={p: ops.choice(p, DEFAULT_OPERANDS[p], OPERANDS) for p in PASSES},
        input_grad_lowering=sec.choice("input_grad_lowering", "phase", INPUT_GRAD_LOWERINGS),
        first_layer_input_grad=first,
        first_layer=sec.choice("first_layer", "pad", FIRST_LAYER_MAPPINGS),
        tap_order=sec.choice("tap_order", "row-major", TAP_ORDERS))


def _memory(source: str, data: Any) -> Memory:
    d = Memory()
    sec = _Section(source, "memory", data, ("element", "formats", "run_length_bits", "buffers_kib",
                                            "dram"))
    fmt = _Section(source, "memory.formats", sec.data.get("formats"), TENSOR_CLASSES)
    buf = _Section(source, "memory.buffers_kib", sec.data.get("buffers_kib"),
                   ("weights", "activations", "outputs"))
    dram = _Section(source, "memory.dram", sec.data.get("dram"), ("bandwidth_gbps", "latency_ns"))
    run_bits = sec.int("run_length_bits", d.run_length_bits, 1)
    if run_bits > 32:
        raise sec.fail("run_length_bits", "an integer from 1 to 32", run_bits)
    return Memory(
        element=sec.choice("element", d.element, tuple(ELEMENT_BITS)),
        formats={c: fmt.choice(c, d.formats[c], FORMATS) for c in TENSOR_CLASSES},
        run_length_bits=run_bits,
        weight_buffer_kib=buf.positive_number("weights", d.weight_buffer_kib, **BUFFER_KIB),
        activation_buffer_kib=buf.positive_number("activations", d.activation_buffer_kib, **BUFFER_KIB),
        output_buffer_kib=buf.positive_number("outputs", d.output_buffer_kib, **BUFFER_KIB),
        bandwidth_gbps=dram.positive_number("bandwidth_gbps", d.bandwidth_gbps, infinite=True,
                                            low=1e-3, high=1e6),
        latency_ns=dram.number("latency_ns", d.latency_ns, 0.0, 1e9))


def _energy(source: str, data: Any) -> EnergyTable:
    """energy: per-event energies in pJ (simulator/energy.py; defaults Horowitz, ISSCC 2014,
    45 nm). `mac_pj`: any subset of the elements overrides their defaults;
    `sram_pj_per_byte`: buffer KiB -> pJ per byte read, at least one point, replaces the
    default points; `sram_write_factor`: a write costs this times a read; `dram_pj_per_byte`."""
    d = EnergyTable()
    pj = {"low": 1e-6, "high": 1e9}  # 1 aJ to 1 mJ per event: far outside any process
    sec = _Section(source, "energy", data, tuple(f.name for f in fields(EnergyTable)))
    macs = _Section(source, "energy.mac_pj", sec.data.get("mac_pj"), tuple(ELEMENT_BITS))
    points = d.sram_pj_per_byte
    sram = sec.data.get("sram_pj_per_byte")
    if sram is not None:
        if not isinstance(sram, dict) or not sram:
            raise sec.fail("sram_pj_per_byte", "a mapping of buffer KiB to pJ per byte read, "
                           "at least one point", sram)
        for kib in sram:  # unique: safe_yaml refuses a repeated key, 8 and 8.0 alike
            if (isinstance(kib, bool) or not isinstance(kib, (int, float))
                    or not BUFFER_KIB["low"] <= kib <= BUFFER_KIB["high"]):
                raise sec.fail("sram_pj_per_byte", f"buffer sizes in KiB from "
                               f"{BUFFER_KIB['low']:g} to {BUFFER_KIB['high']:g}", kib)
        pts = _Section(source, "energy.sram_pj_per_byte", sram, tuple(sram))
        points = tuple(sorted((float(k), pts.positive_number(k, None, **pj)) for k in sram))
        for (k0, e0), (k1, e1) in zip(points, points[1:]):
            if e1 < e0:
                raise pts.fail(f"{k1:g}", f"pJ per byte not decreasing as the buffer grows "
                               f"({e0:g} at {k0:g} KiB)", e1)
    return EnergyTable(
        mac_pj={e: macs.positive_number(e, d.mac_pj[e], **pj) for e in ELEMENT_BITS},
        sram_pj_per_byte=points,
        sram_write_factor=sec.positive_number("sram_write_factor", d.sram_write_factor,
                                              low=1e-3, high=1e3),
        dram_pj_per_byte=sec.positive_number("dram_pj_per_byte", d.dram_pj_per_byte, **pj))


def _passes(source: str, data: Any) -> tuple[str, ...]:
    if data is None:
        return PASSES
    if not isinstance(data, list) or not data:
        raise _error(source, "passes", f"a non-empty list drawn from {', '.join(PASSES)}", data)
    for i, p in enumerate(data):
        if p not in PASSES:
            raise _error(source, f"passes[{i}]", f"one of {', '.join(PASSES)}", p)
    return tuple(dict.fromkeys(data))


def parse_config(data: Any, source: str = "<config>", name: str | None = None) -> Config:
    """Validate an already-parsed YAML mapping into a `Config`."""
    top = _Section(source, "", data, ("name", "architecture", "workload", "passes", "lowering",
                                      "memory", "energy", "output"))
    derived = "".join(c for c in (name or Path(source).stem) if c.isalnum() or c in "-_.")
    cfg_name = top.string("name", derived.lstrip(".") or "config")
    if not all(c.isalnum() or c in "-_." for c in cfg_name) or cfg_name.startswith("."):
        raise top.fail("name", "letters, digits, '-', '_' or '.' (it names the output "
                       "directory reports/<name>)", cfg_name)
    out = _Section(source, "output", top.data.get("output"), ("dir",))
    arch = _architecture(source, top.data.get("architecture"))
    return Config(name=cfg_name, architecture=arch,
                  workload=_workload(source, top.data.get("workload")),
                  passes=_passes(source, top.data.get("passes")),
                  output=Output(dir=out.string("dir", None)),
                  lowering=_lowering(source, top.data.get("lowering")),
                  memory=_serial_memory(source, arch, top.data.get("memory")),
                  energy=_energy(source, top.data.get("energy")), source=source)


def _serial_memory(source: str, arch: Architecture, data: Any) -> Memory:
    """memory, with a bit-serial back-end's values `int<bits>` wide in DRAM and on chip:
    the default there, and any other `memory.element` refused."""
    memory = _memory(source, data)
    if not arch.bit_serial:
        return memory
    element = f"int{arch.bits}"
    if isinstance(data, dict) and "element" in data and memory.element != element:
        raise CombinationError(str(_error(source, "memory.element", f"{element} with backend "
                                          f"{arch.backend} at {arch.bits} bits (its values are "
                                          f"{arch.bits}-bit integers)", memory.element)))
    return replace(memory, element=element)


def read_yaml(path: str | os.PathLike, missing: str | None = None) -> Any:
    """The YAML data of `path` (`simulator.safe_yaml`: a regular file of at most 1 MiB, no
    duplicate keys, aliases or absurd nesting); a one-line ConfigError if it cannot be read
    or parsed (`missing`, if given, is the message when there is no such file)."""
    source = safe_yaml.cut(path, 200)
    try:
        return safe_yaml.load(path)
    except FileNotFoundError:
        raise ConfigError(missing or f"{source}: no such file") from None
    except IsADirectoryError as e:
        raise ConfigError(missing or f"{source}: cannot read ({e.strerror})") from None
    except OSError as e:
        raise ConfigError(f"{source}: cannot read ({e.strerror})") from None
    except safe_yaml.YAMLInputError as e:
        raise ConfigError(f"{source}: {e}") from None
    except ValueError as e:  # a NUL in the path
        raise ConfigError(f"{source}: cannot read ({safe_yaml.cut(e)})") from None


def refuse_sweep_file(data: Any, source: str) -> None:
    """A one-line ConfigError pointing at `accelsim sweep` if the YAML `data` of the file
    `source` is a sweep file (top-level base: and sweep:) rather than a run config."""
    if isinstance(data, dict) and "sweep" in data and "base" in data:
        raise ConfigError(f"{source}: expected a run config (architecture, workload, ...), got a "
                          f"sweep file (top-level base: and sweep:); run it with "
                          f"`accelsim sweep {source}`")


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a YAML config. Relative `workload.trace` paths are taken from the
    current directory if they exist there, else from the config file's directory."""
    path = Path(path)
    source = safe_yaml.cut(path, 200)
    data = read_yaml(path)
    refuse_sweep_file(data, source)
    cfg = parse_config(data, source)
    trace = cfg.workload.trace
    if trace and not Path(trace).is_absolute() and not Path(trace).exists():
        alt = path.parent / trace
        if alt.exists():
            cfg = replace(cfg, workload=replace(cfg.workload, trace=str(alt)))
    return cfg
