"""The energy events of one pass of one layer, and its energy (units: MACs, lane-steps,
bytes; pJ through energy.py's per-event table).

Events counted, for the simulated array and for the dense baseline alike:

- MACs: bit-parallel, the products the multipliers perform: every non-zero of the
  scheduled operand meets every window, `macs` x (1 - scheduled sparsity) (the dense
  array: `macs`), at the operand width `memory.element`; bit-serial, the busy
  multiplier lane-steps (`PassTiming.serial_steps`: each cycle of a step, every lane
  with a value to multiply, also one that has finished its own value's bits and waits
  for the step's slowest, as lockstep columns without clock gating would),
  and its dense baseline the bit-parallel array's `macs` at `bits`-bit integers;
- on-chip buffer reads: the scheduled operand's non-zeros once per window group (each
  window group streams its filters' values again), the broadcast operand's elements once
  per filter group (tiles share a broadcast); the kernel operand sits in the weights
  buffer and the input operand in the activations buffer (memory.buffers_kib);
  outputs are read once from the output buffer as they are written to DRAM;
- on-chip buffer writes: every byte read from DRAM, into the buffer of the operand it
  feeds (partial sums read back, when traffic.py spills them, into the output buffer);
  every output, once, into the output buffer (within a tile the reduction accumulates in
  the PE: output stationary, no partial sums through SRAM);
- DRAM: the pass's bytes read and written (traffic.py).

On-chip values are `element` wide (bit-serial: `bits`); compression metadata on chip, the
front-end's schedule, register files, wires and leakage are not counted
(docs/design/energy.md).
"""

from __future__ import annotations

from .array import PassTiming
from .config import Architecture, Memory
from .energy import EnergyTable, pass_energy
from .formats import ELEMENT_BITS
from .lowering import PASS_TENSORS, LoweredPass
from .traffic import PassTraffic

SPLIT = ("energy_mac_pj", "energy_sram_pj", "energy_dram_pj")


def _events(lowered: LoweredPass, traffic: PassTraffic, arch: Architecture, memory: Memory,
            scheduled_density: float, columns: int, serial_steps: float | None) -> dict:
    serial = serial_steps is not None
    element = f"int{arch.bits}" if arch.bit_serial else memory.element
    size = ELEMENT_BITS[element] / 8
    groups, kernel_rows, input_rows = lowered.out_shape
    filters, windows = (kernel_rows, input_rows) if lowered.scheduled == "kernel" else (input_rows, kernel_rows)
    macs = lowered.macs
    filter_groups = groups * -(-filters // (arch.tiles * arch.rows))
    window_groups = -(-windows // columns)
    per_window = macs / max(1, groups * filters * windows)  # the reduction length K
    scheduled_reads = scheduled_density * groups * filters * per_window * window_groups * size
    broadcast_reads = filter_groups * windows * per_window * size
    outputs = groups * kernel_rows * input_rows * size
    sched_buf, bcast_buf = (("weights", "activations") if lowered.scheduled == "kernel"
                            else ("activations", "weights"))
    kernel_tensor = PASS_TENSORS[lowered.pass_name][0]
    kernel_fill = traffic.reads.get(kernel_tensor, 0)
    psum_fill = sum(b for t, b in traffic.reads.items()  # partial sums read back: the output's reads
                    if t in traffic.writes and t not in PASS_TENSORS[lowered.pass_name])
    return {
        "mac_count": 0.0 if serial else macs * scheduled_density,
        "element": element, "serial_steps": float(serial_steps or 0.0), "bits": arch.bits,
        "sram_reads": {sched_buf: scheduled_reads, bcast_buf: broadcast_reads,
                       "outputs": float(traffic.write_bytes)},
        "sram_writes": {"weights": float(kernel_fill),
                        "activations": float(traffic.read_bytes - kernel_fill - psum_fill),
                        "outputs": outputs + psum_fill},
        "buffer_kib": {"weights": memory.weight_buffer_kib, "activations": memory.activation_buffer_kib,
                       "outputs": memory.output_buffer_kib},
        "dram_bytes": float(traffic.read_bytes + traffic.write_bytes)}


def energy_columns(table: EnergyTable, lowered: LoweredPass, timing: PassTiming, scheduled_sparsity: float,
                   traffic: PassTraffic, dense_traffic: PassTraffic, arch: Architecture,
                   memory: Memory) -> dict:
    """A row's energy columns: `energy_pj` and its split (`energy_mac_pj`, `energy_sram_pj`,
    `energy_dram_pj`), the same for the dense baseline (`dense_energy_*`: the bit-parallel
    array of the same peak, dense values, dense training's traffic), and
    `energy_efficiency` = dense_energy_pj / energy_pj."""
    simulated = pass_energy(table, **_events(
        lowered, traffic, arch, memory, 1.0 - scheduled_sparsity, arch.columns,
        timing.serial_steps if arch.bit_serial else None))
    dense = pass_energy(table, **_events(lowered, dense_traffic, arch, memory, 1.0, arch.parallel_columns, None))
    row = dict(simulated)
    row.update({f"dense_{k}": v for k, v in dense.items()})
    row["energy_efficiency"] = dense["energy_pj"] / simulated["energy_pj"] if simulated["energy_pj"] else 1.0
    return row
