"""Energy columns of the result rows (simulator/energy_events.py): the split adds up, the
dense baseline is what a dense pass costs, skipping only saves, and the summary and the
report carry energy."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from simulator.config import Architecture, Lowering, Memory
from simulator.energy import EnergyTable
from simulator.energy_plot import has_energy
from simulator.frontend import Frontend
from simulator.results import summarize, format_summary
from simulator.serial_streaming import CodedLayer
from simulator.simulate import PassPlan, simulate_layers
from simulator.trace import TraceLayer
from tests.test_streaming import LAYERS, PASSES, sparse_layer

ARCH = Architecture(tiles=2, rows=2, lanes=4, columns=1, frontend=Frontend("T", 2, 1))
SPLIT = ("energy_mac_pj", "energy_sram_pj", "energy_dram_pj")


def _rows(layers, arch, memory=Memory(), energy=None):
    plan = PassPlan(PASSES, Lowering())
    return simulate_layers(layers, arch, plan, "toy", 0.5, memory, energy=energy)


def test_split_adds_up_and_efficiency_is_the_ratio():
    rows = _rows([sparse_layer(spec, batch, seed=i) for i, (spec, batch) in enumerate(LAYERS)], ARCH)
    for r in rows:
        assert r["energy_pj"] == pytest.approx(sum(r[c] for c in SPLIT))
        assert r["dense_energy_pj"] == pytest.approx(sum(r["dense_" + c] for c in SPLIT))
        assert min(r[c] for c in SPLIT) >= 0 and r["energy_pj"] > 0
        assert r["energy_efficiency"] == pytest.approx(r["dense_energy_pj"] / r["energy_pj"])
        # sparse weights: fewer MACs performed than the dense array's
        if r["pass"] == "forward":
            assert r["energy_mac_pj"] < r["dense_energy_mac_pj"]


def test_a_dense_layer_without_skipping_costs_what_the_dense_baseline_costs():
    rng = np.random.default_rng(0)
    spec, batch = LAYERS[0]
    layer = TraceLayer(spec, rng.standard_normal(spec.weight_shape).astype(np.float32) + 5,
                       rng.random(spec.input_shape(batch)).astype(np.float32) + 1, None,
                       rng.random(spec.output_shape(batch)).astype(np.float32) + 1)
    memory = Memory(formats=dict.fromkeys(("weights", "activations", "saved_activations", "gradients"), "dense"))
    for r in _rows([layer], replace(ARCH, frontend=Frontend("none", 0, 0)), memory):
        assert r["energy_pj"] == pytest.approx(r["dense_energy_pj"]), r["pass"]


def test_energies_scale_with_the_table():
    layers = [sparse_layer(*LAYERS[1], seed=3)]
    base = _rows(layers, ARCH)
    doubled = _rows(layers, ARCH, energy=EnergyTable(dram_pj_per_byte=2 * EnergyTable().dram_pj_per_byte))
    for a, b in zip(base, doubled):
        assert b["energy_dram_pj"] == pytest.approx(2 * a["energy_dram_pj"])
        assert b["energy_mac_pj"] == a["energy_mac_pj"] and b["energy_sram_pj"] == a["energy_sram_pj"]


def test_bit_serial_rows_charge_lane_steps_against_a_bit_parallel_baseline():
    arch = Architecture(tiles=2, rows=2, lanes=4, columns=8, frontend=Frontend("T", 2, 1), backend="tclp",
                        bits=8)
    table = EnergyTable()
    layers = [CodedLayer(sparse_layer(spec, batch, seed=i), "tclp", 8) for i, (spec, batch) in enumerate(LAYERS)]
    rows = _rows(layers, arch, Memory(element="int8"))
    for r in rows:
        # every busy lane-step costs mac(int8) / 8; the dense baseline's MACs mac(int8) each
        assert r["dense_energy_mac_pj"] == pytest.approx(r["macs"] * table.mac("int8"))
        assert r["energy_mac_pj"] <= 8 * r["macs"] * table.serial_step(8) + 1e-9
        assert r["compute_cycles"] <= r["serial_bound_cycles"]
        assert r["backend"] == "tclp-8"
    summary = summarize(pd.DataFrame(rows))
    assert {"energy_efficiency", "serial_bound_cycles"} <= set(summary.columns)
    text = format_summary(summary, "toy")
    assert "energy in mJ" in text and "bit-parallel array of the same peak" in text
    assert has_energy(pd.DataFrame(rows))


def test_partial_sums_read_back_go_to_the_output_buffer():
    from simulator.energy_events import _events
    from simulator.lowering import lowered_pass
    from simulator.traffic import PassTraffic
    spec, batch = LAYERS[0]
    lowered = lowered_pass(spec, batch, "forward", "kernel", [])
    spilled = PassTraffic({"weight": 100, "input": 300, "output": 40}, {"output": 90, "input_saved": 10},
                          {}, {}, "none", 1)
    events = _events(lowered, spilled, ARCH, Memory(), 0.5, 1, None)
    assert events["sram_writes"]["weights"] == 100 and events["sram_writes"]["activations"] == 300
    assert events["sram_writes"]["outputs"] == pytest.approx(40 + np.prod(lowered.out_shape) * 4)
    assert events["sram_reads"]["outputs"] == 100 and events["dram_bytes"] == 540


def test_result_checks_accept_an_empty_serial_bound_and_refuse_a_negative_one():
    from simulator.results import check_rows
    check_rows(pd.DataFrame({"serial_bound_cycles": [np.nan, 12.0], "energy_pj": [1.0, 2.0]}))
    with pytest.raises(ValueError, match=r"column serial_bound_cycles: expected a number in \[0, 10\^18\] or empty"):
        check_rows(pd.DataFrame({"serial_bound_cycles": [-1.0]}))
    with pytest.raises(ValueError, match="column energy_pj"):
        check_rows(pd.DataFrame({"energy_pj": [np.inf]}))


def test_energy_plot_stacks_the_split_per_pass_and_iteration():
    from simulator import report
    from simulator.energy_plot import energy_split
    layers = [sparse_layer(spec, batch, seed=i) for i, (spec, batch) in enumerate(LAYERS[:3])]
    df = pd.DataFrame(_rows(layers, ARCH))
    fig = energy_split(df, report._figure)
    (ax,) = [a for a in fig.axes if a.containers]
    labels = [c.get_label() for c in ax.containers]
    assert labels == ["MACs (ours)", "on-chip buffers (ours)", "DRAM (ours)", "MACs (dense)",
                      "on-chip buffers (dense)", "DRAM (dense)"]
    bars = ax.containers[2]  # DRAM (ours), the top of our stack: forward, input_grad, weight_grad, iteration
    assert len(bars) == 4
    ours = [r.get_y() + r.get_height() for r in bars]
    totals = df.groupby("pass")["energy_pj"].sum() / 1e9
    assert ours[:3] == pytest.approx([totals[p] for p in PASSES])
    assert ours[3] == pytest.approx(df["energy_pj"].sum() / 1e9)
    written = [t.get_text() for t in ax.texts]
    assert written[3] == f"{df['dense_energy_pj'].sum() / df['energy_pj'].sum():.2f}x"
