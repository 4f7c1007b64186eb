"""Timing of DRAM and compute overlap: a SimPy model, one event chain per tile.

Units: cycles at the array clock; bytes; GB/s = 10^9 bytes/s; ns.

The passes of one training iteration run in order on the array (forward through the
layers, then input and weight gradient of each layer in reverse order). Each pass is
cut into `tiles` equal tiles (traffic.py says how many): a tile's reads, its compute
cycles (from the array model) and its writes are the pass's totals divided evenly.

    DRAM       one channel (a SimPy Resource): a transfer of b bytes holds it for
               ceil(b / bytes_per_cycle) cycles; a read's data arrives `latency` cycles
               after its transfer ends (latency is pipelined: it does not hold the channel).
    loader     prefetches tile after tile into the double-buffered input buffers (two
               slots: it waits for the array to free one), reads in program order.
    array      takes the next loaded tile once an output slot is free, computes it, frees
               its input slot and hands its results to the drainer. Time it spends
               waiting is the stall of the tile's pass.
    drainer    writes results back (two output slots), sharing the channel with the loader
               first come, first served.

Per pass: stall_cycles; cycles = compute_cycles + stall_cycles. The wait for the last
results to reach DRAM after the array has finished is a stall of the last pass, so the
passes' cycles add up to the iteration's makespan. A pass is memory-bound when its own
DRAM transfer time exceeds its compute cycles (a roofline view, whatever the overlap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import simpy


@dataclass(frozen=True)
class PassWork:
    """One pass as the timing model sees it (cycles, bytes, tile count >= 1)."""

    compute_cycles: int
    read_bytes: int
    write_bytes: int
    tiles: int = 1


@dataclass(frozen=True)
class Dram:
    """The DRAM channel at the array clock: bytes per cycle (inf: unlimited) and read
    latency in cycles."""

    bytes_per_cycle: float
    latency_cycles: int

    @classmethod
    def from_config(cls, bandwidth_gbps: float, latency_ns: float, frequency_mhz: float) -> "Dram":
        return cls(bandwidth_gbps * 1e3 / frequency_mhz, math.ceil(latency_ns * frequency_mhz / 1e3))

    def transfer_cycles(self, nbytes: int) -> int:
        return math.ceil(nbytes / self.bytes_per_cycle) if nbytes else 0


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def time_passes(work: list[PassWork], dram: Dram) -> list[int]:
    """Stall cycles of each pass of `work` (in execution order)."""
    tiles = []  # (pass index, read bytes, compute cycles, write bytes)
    for i, w in enumerate(work):
        n = max(1, w.tiles)
        tiles.extend(zip([i] * n, _split(w.read_bytes, n), _split(w.compute_cycles, n),
                         _split(w.write_bytes, n)))
    stalls = [0] * len(work)
    if not tiles:
        return stalls
    env = simpy.Environment()
    channel = simpy.Resource(env, capacity=1)
    free_in = simpy.Container(env, capacity=2, init=2)
    free_out = simpy.Container(env, capacity=2, init=2)
    loaded = [env.event() for _ in tiles]  # tile i's data is on chip
    computed = simpy.Store(env)
    array_done = []

    def transfer(nbytes: int):
        with channel.request() as req:
            yield req
            yield env.timeout(dram.transfer_cycles(nbytes))

    def arrive(i: int):  # the data lands `latency` after its transfer; the channel moves on
        yield env.timeout(dram.latency_cycles)
        loaded[i].succeed()

    def loader():
        for i, (_, read, _, _) in enumerate(tiles):
            yield free_in.get(1)
            if read:
                yield from transfer(read)
                env.process(arrive(i))
            else:
                loaded[i].succeed()

    def array():
        for i, (index, _, compute, _) in enumerate(tiles):
            start = env.now
            yield loaded[i]
            yield free_out.get(1)
            stalls[index] += env.now - start
            yield env.timeout(compute)
            yield free_in.put(1)
            yield computed.put(i)
        array_done.append(env.now)

    def drainer():
        for _, _, _, write in tiles:
            yield computed.get()
            if write:
                yield from transfer(write)
            yield free_out.put(1)

    env.process(loader())
    env.process(array())
    env.process(drainer())
    env.run()
    stalls[tiles[-1][0]] += int(env.now) - array_done[0]  # the last writes reach DRAM
    return [int(s) for s in stalls]


def is_memory_bound(w: PassWork, dram: Dram) -> bool:
    """Whether the pass's DRAM transfer time exceeds its compute cycles."""
    return dram.transfer_cycles(w.read_bytes + w.write_bytes) > w.compute_cycles
