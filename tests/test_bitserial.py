"""TCLp and TCLe (simulator/bitserial.py): per-value costs, the Booth-like recoding, the
numba kernels against their NumPy reference, the hand-worked cases of
docs/design/bit-serial-backends.md (section 4) and the bit-serial functional check."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from simulator import bitserial as B
from simulator.array import schedule_offsets
from simulator.config import Architecture, Lowering
from simulator.frontend import Frontend
from simulator.scheduler import schedule_tiles
from simulator.simulate import PassPlan, check_layers
from simulator.verify_serial import recompute_serial, quantized_layer
from simulator.lowering import reference
from tests.test_streaming import LAYERS, PASSES, sparse_layer

REPO = Path(__file__).resolve().parents[1]

SCHEDULERS = ("in-order", "dnnsim", "fewest-candidates", "matching", "nearest-matching")


def test_booth_recoding_sums_to_the_value_and_matches_the_design_note():
    for n in range(B.MAGNITUDES):
        digits = B.booth_digits(n) if n % 97 == 0 or n < 1024 else None
        if digits is not None:
            assert sum(s << p for p, s in digits) == n
            assert B.TERMS[n] == len(digits)
    # section 6.3: 27 -> {0,1,3,4}; 7 -> {0,3}; 255 -> {0,8}; 32767 -> 2 terms; 40 -> {3,5}
    assert sorted(p for p, _ in B.booth_digits(27)) == [0, 1, 3, 4]
    assert B.booth_digits(7) == [(3, 1), (0, -1)]
    assert B.booth_digits(255) == [(8, 1), (0, -1)]
    assert B.TERMS[32767] == 2 and sorted(p for p, _ in B.booth_digits(40)) == [3, 5]
    assert B.TERMS.max() == 10 and B.TERMS[:128].max() == 5  # 16-bit and 8-bit magnitudes
    with pytest.raises(ValueError, match="magnitude"):
        B.booth_digits(1 << 15)


def test_value_costs_follow_the_width_and_term_rules():
    q = np.array([0, 3, 12, -5, -1, 1, -32767, 32767, 8, -8])
    # signed tensor: two's complement width, max(1, bitlen(x) + 1), x = -q-1 for q < 0
    assert B.value_costs(q, "tclp", True).tolist() == [0, 3, 5, 4, 1, 2, 16, 16, 5, 4]
    assert B.value_costs(np.abs(q), "tclp", False).tolist() == [0, 2, 4, 3, 1, 1, 15, 15, 4, 4]
    assert B.value_costs(q, "tcle", True).tolist() == [0, 2, 2, 2, 1, 1, 2, 2, 1, 1]
    every = np.arange(-32767, 32768)
    width, terms = B.value_costs(every, "tclp", True), B.value_costs(every, "tcle", True)
    assert (terms <= width).all() and width.max() == 16 and ((width == 0) == (every == 0)).all()
    with pytest.raises(ValueError, match="backend"):
        B.value_costs(q, "tclx", True)


@pytest.mark.parametrize("backend", ["tclp", "tcle"])
@pytest.mark.parametrize("signed", [True, False])
def test_a_value_is_exact_after_exactly_its_cost_in_cycles(backend, signed):
    q = np.arange(-32767 if signed else 1, 32768)
    q = q[q != 0]
    cost = B.value_costs(q, backend, signed).astype(np.int64)
    assert np.array_equal(B.serial_value(q, cost, backend, signed), q)
    assert np.array_equal(B.serial_value(q, np.full_like(cost, 16), backend, signed), q)
    assert not (B.serial_value(q, cost - 1, backend, signed) == q).any()  # one cycle short: wrong


def test_group_max_takes_each_slot_over_the_windows_of_a_group():
    costs = np.arange(2 * 5 * 3 * 2, dtype=np.uint8).reshape(2, 5, 3, 2) % 7
    out = B.group_max(costs, 2)
    assert out.shape == (2, 3, 3, 2)
    assert np.array_equal(out[:, 0], np.maximum(costs[:, 0], costs[:, 1]))
    assert np.array_equal(out[:, 2], costs[:, 4])  # the last group holds one window


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_kernels_equal_the_numpy_reference_and_stream_in_pieces(scheduler):
    rng = np.random.default_rng(7)
    arch = Architecture(rows=3, lanes=4, frontend=Frontend(lookaside=3, scheduler=scheduler))
    offsets = schedule_offsets(arch)
    nz = (rng.random((5, 3, 17, 4)) < 0.3).astype(np.uint8)
    frame = rng.integers(0, 17, (3, 17, 4)).astype(np.uint8)
    cycles, lane_cycles = B.serial_units(nz, frame, offsets, 2, scheduler)
    front, sources, _ = schedule_tiles(nz, offsets, 2, True, scheduler)
    assert np.array_equal(cycles, B.unit_costs_reference(sources, front, frame))
    assert (front[:, None] <= cycles).all() and (cycles <= 16 * front[:, None]).all()
    busy = (sources >= 0).sum(axis=(1, 3))  # [U, S]: multipliers busy per cycle
    assert (lane_cycles >= busy.sum(axis=1)[:, None]).all()
    stream = B.SerialStream(5, 3, 4, 3, offsets, 2, scheduler)
    cuts = [0, 1, 2, 7, 17]
    for a, b in zip(cuts, cuts[1:]):
        stream.feed(nz[:, :, a:b], frame[:, a:b], final=b == 17)
    assert np.array_equal(stream.cycles, cycles) and np.array_equal(stream.lane_cycles, lane_cycles)


def test_design_note_example_4_4_through_the_schedule():
    """L = 2, R = 1, h = 1, S = 3, two windows in one column group (section 4.4)."""
    nz = np.array([[[[1, 0], [0, 1], [1, 0]]]], dtype=np.uint8)  # [U=1, R=1, S=3, L=2]
    arch = Architecture(rows=1, lanes=2, frontend=Frontend("L", 1, 0))
    offsets = schedule_offsets(arch)
    cycles, sources, bases = schedule_tiles(nz, offsets, 1, True)
    assert cycles[0] == 2 and bases[0, :2].tolist() == [0, 2]
    assert sources[0, 0, :2].tolist() == [[0, 3], [4, -1]]
    windows = np.array([[3, 0, 5, 12, 1, 2], [-7, 1, 0, 0, 0, 0]])
    for backend, expected in (("tclp", 7), ("tcle", 3)):
        costs = B.value_costs(windows, backend, True).reshape(1, 2, 3, 2)
        frame = B.group_max(costs, 2)[0]
        got, _ = B.serial_units(nz, frame, offsets, 1, "in-order")
        assert got.tolist() == [[expected]]
    assert 7 <= 16 * 2 <= 16 * 3  # the front-end bound and the bit-serial dense bound


@pytest.mark.parametrize("backend", ["tclp", "tcle", "tclp-trailing"])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("operand", ["weights", "activations"])
def test_functional_check_passes_on_every_pass(backend, bits, operand):
    arch = Architecture(tiles=2, rows=2, lanes=4, columns=bits, frontend=Frontend("T", 2, 1),
                        backend=backend[:4], bits=bits, trailing_zeros=backend.endswith("trailing"))
    plan = PassPlan(PASSES, Lowering(scheduled_operand=dict.fromkeys(PASSES, operand)))
    layers = [sparse_layer(spec, batch, seed=i) for i, (spec, batch) in enumerate(LAYERS)]
    results = list(check_layers(layers, arch, plan))
    assert len(results) == 3 * len(LAYERS) - 1  # the first layer's input gradient is skipped
    assert all(r.ok for r in results), [r.message for r in results if not r.ok]


def test_functional_check_catches_a_step_too_short():
    """With the broadcast tensor's sign ignored, TCLp's widths are a bit short for the
    negative values: the replay's result differs from the quantised reference."""
    arch = Architecture(tiles=2, rows=2, lanes=4, columns=8, frontend=Frontend("T", 2, 1),
                        backend="tclp", bits=8)
    spec, batch = LAYERS[0]
    q, coded = quantized_layer(sparse_layer(spec, batch, seed=1), 8)
    plan = PassPlan(PASSES, Lowering())
    lowered = plan.lower(q, "input_grad", arch.lanes, 1)  # broadcasts the signed gradient
    assert coded.signed["grad_output"]
    assert recompute_serial(lowered, arch, reference(q, "input_grad"), True).ok
    bad = recompute_serial(lowered, arch, reference(q, "input_grad"), False)
    assert not bad.ok and "quantised reference" in bad.message
    assert recompute_serial(lowered, replace(arch, backend="tcle"), reference(q, "input_grad"), True).ok


def test_config_defaults_columns_to_bits_and_the_peak_to_the_bit_parallel_one():
    from simulator.config import parse_config
    base = {"workload": {"network": "simple-cnn"}}
    tclp = parse_config({**base, "architecture": {"backend": "tclp"}}).architecture
    assert (tclp.bits, tclp.columns, tclp.parallel_columns) == (16, 16, 1)
    assert tclp.peak_macs_per_cycle == parse_config(base).architecture.peak_macs_per_cycle == 4096
    tcle = parse_config({**base, "architecture": {"backend": "tcle", "bits": 8, "columns": 16}}).architecture
    assert (tcle.columns, tcle.parallel_columns, tcle.peak_macs_per_cycle) == (16, 2, 8192)


def test_memory_element_follows_bits_on_a_bit_serial_back_end():
    from simulator.config import CombinationError, parse_config
    base = {"workload": {"network": "simple-cnn"}}
    cfg = parse_config({**base, "architecture": {"backend": "tcle", "bits": 8, "columns": 8}})
    assert cfg.memory.element == "int8"
    assert parse_config(base).memory.element == "fp32"
    with pytest.raises(CombinationError, match=r"memory.element: expected int16 with backend tclp"):
        parse_config({**base, "architecture": {"backend": "tclp"}, "memory": {"element": "fp32"}})


def test_trailing_zeros_skip_the_low_bits_of_a_group():
    """Design note 4.1, rule [H] with the minor (trailing) bit: U = {12, 8, 0} unsigned
    costs 2 (bits 2..3), A = {0, 3, 12, -5} signed costs 5 (bits 0..4)."""
    u = B.value_costs(np.array([12, 8, 0]), "tclp", False, trailing=True)
    assert u.dtype == np.uint16 and u[2] == 0
    assert B.own_costs(u, True, 16).tolist() == [2, 1, 0]
    for group, signed, expected in (([12, 8, 0], False, 2), ([0, 3, 12, -5], True, 5), ([0, 0], True, 1)):
        codes = B.value_costs(np.array(group), "tclp", signed, trailing=True).reshape(1, len(group), 1, 1)
        hi, lo = B.frames(codes.reshape(1, 1, len(group), 1), 1, True)  # one window, slots in a row
        sources = np.arange(len(group)).reshape(1, 1, 1, len(group))
        got = B.unit_costs_reference(sources, np.array([1]), hi[0], lo[0], 16)
        assert got.tolist() == [[expected]], group


@pytest.mark.parametrize("signed", [True, False])
def test_a_value_is_exact_from_its_lowest_set_bit(signed):
    q = np.arange(-32767 if signed else 1, 32768)
    q = q[q != 0]
    codes = B.value_costs(q, "tclp", signed, trailing=True)
    width, top = (c.astype(np.int64) for c in B.split_codes(codes, True))
    low = 16 - top
    assert np.array_equal(B.serial_value(q, width - low, "tclp", signed, low), q)
    odd = low == 0
    assert not (B.serial_value(q[~odd], width[~odd] - low[~odd] - 1, "tclp", signed, low[~odd] + 1)
                == q[~odd]).any()  # starting one bit too high loses the lowest set bit


@pytest.mark.parametrize("scheduler", ["in-order", "matching"])
def test_kernels_with_trailing_zeros_equal_the_reference(scheduler):
    rng = np.random.default_rng(3)
    arch = Architecture(rows=3, lanes=4, frontend=Frontend(lookaside=3, scheduler=scheduler))
    offsets = schedule_offsets(arch)
    nz = (rng.random((4, 3, 13, 4)) < 0.4).astype(np.uint8)
    q = rng.integers(-300, 300, (1, 6, 13, 4)) * (rng.random((1, 6, 13, 4)) < 0.7)
    hi, lo = B.frames(B.value_costs(q, "tclp", True, trailing=True), 3, True)
    cycles, _ = B.serial_units(nz, hi[0], offsets, 2, scheduler, lo[0], 16)
    front, sources, _ = schedule_tiles(nz, offsets, 2, True, scheduler)
    assert np.array_equal(cycles, B.unit_costs_reference(sources, front, hi[0], lo[0], 16))
    leading, _ = B.serial_units(nz, hi[0], offsets, 2, scheduler)
    assert (front[:, None] <= cycles).all() and (cycles <= leading).all()
    stream = B.SerialStream(4, 3, 4, 2, offsets, 2, scheduler, trailing=True, bits=16)
    for a, b in ((0, 5), (5, 6), (6, 13)):
        stream.feed(nz[:, :, a:b], hi[0][:, a:b], final=b == 13, lows=lo[0][:, a:b])
    assert np.array_equal(stream.cycles, cycles)


@pytest.mark.parametrize("backend", ["tclp", "tcle"])
def test_a_trace_from_training_runs_and_checks_on_the_bit_serial_back_ends(backend):
    """The committed SWAT-U trace (real training tensors, signed gradients): every row
    within the bit-serial bound, with its energy; and the functional check passes."""
    import simulator
    from simulator.config import parse_config
    from simulator.safe_yaml import load
    data = load(REPO / "configs" / "swat-trace.yaml")
    data["architecture"].update(backend=backend, columns=16)
    data["workload"]["trace"] = str(REPO / data["workload"]["trace"])
    config = parse_config(data, "swat-trace-serial")
    assert config.memory.element == "int16"
    rows = simulator.run(config)
    assert set(rows["pass"]) == {"forward", "input_grad", "weight_grad"}
    assert (rows["backend"] == f"{backend}-16").all()
    assert (rows["ideal_cycles"] <= rows["compute_cycles"]).all()
    assert (rows["compute_cycles"] <= rows["serial_bound_cycles"]).all()
    assert (rows["energy_pj"] > 0).all() and rows["energy_efficiency"].notna().all()
    results = list(simulator.check(config))
    assert results and all(r.ok for _, _, r in results), [r.message for _, _, r in results if not r.ok]
