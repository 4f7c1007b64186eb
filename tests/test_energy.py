"""The energy model's per-event table (simulator/energy.py) and the `energy:` config section."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from simulator import energy
from simulator.config import ConfigError, load_config, parse_config
from simulator.energy import EnergyTable, pass_energy

T = EnergyTable()
SIZES = {"weights": 512.0, "activations": 1024.0, "outputs": 256.0}


def raises_one_line(fn, *fragments, error=ValueError):
    with pytest.raises(error) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


# --- the defaults are the cited figures ----------------------------------------------------------

def test_source_figures_are_horowitz_isscc_2014():
    assert energy.INT_ADD == {8: 0.03, 32: 0.1}
    assert energy.INT_MULT == {8: 0.2, 32: 3.1}
    assert energy.FP_ADD == {16: 0.4, 32: 0.9}
    assert energy.FP_MULT == {16: 1.1, 32: 3.7}
    assert energy.SRAM_PJ_PER_64_BITS == {8: 10.0, 32: 20.0, 1024: 100.0}
    assert 1300.0 <= energy.DRAM_PJ_PER_64_BITS <= 2600.0


def test_default_macs():
    assert list(T.mac_pj) == ["fp32", "bf16", "fp16", "int16", "int8"]
    assert T.mac("fp32") == 3.7 + 0.9
    assert T.mac("fp16") == 1.1 + 0.4
    assert T.mac("bf16") == T.mac("fp16")
    assert T.mac("int16") == pytest.approx(0.2 * 4 + 0.1)   # 16-bit mult + 32-bit add
    assert T.mac("int8") == pytest.approx(0.2 + 0.03 * 2)   # 8-bit mult + 16-bit add
    assert T.mac("int8") < T.mac("int16") < T.mac("fp16") < T.mac("fp32")


def test_default_sram_and_dram():
    # 64-bit reads: 10 pJ at 8 KB, 20 pJ at 32 KB, 100 pJ at 1 MB -> per byte
    assert T.sram_pj_per_byte == ((8.0, 10 / 8), (32.0, 20 / 8), (1024.0, 100 / 8))
    assert T.sram_write_factor == 1.0
    assert T.dram_pj_per_byte == 1300 / 8  # the low end of 1.3-2.6 nJ per 64 bits
    # Han et al. (NIPS 2015) reproduce them per 32 bits: SRAM 5 pJ, DRAM 640 pJ
    assert 4 * T.sram_read(8) == 5.0
    assert 4 * T.dram_pj_per_byte == pytest.approx(640, rel=0.02)


# --- scaling rules -------------------------------------------------------------------------------

def test_width_scaling_multiplier_squared_adder_linear():
    assert energy._scaled(energy.INT_MULT, 16, 2) == pytest.approx(0.2 * 4)
    assert energy._scaled(energy.INT_ADD, 16, 1) == pytest.approx(0.03 * 2)
    assert energy._scaled(energy.INT_MULT, 8, 2) == 0.2
    assert energy._scaled(energy.INT_MULT, 32, 2) == 3.1
    assert energy._scaled(energy.INT_ADD, 64, 1) == pytest.approx(0.2)  # above: from 32 bits
    assert energy._scaled(energy.INT_MULT, 4, 2) == pytest.approx(0.05)  # below: from 8 bits


def test_sram_hits_the_points_exactly():
    for kib, pj in T.sram_pj_per_byte:
        assert T.sram_read(kib) == pj
        assert T.sram_write(kib) == pj


def test_sram_log_log_interpolation_and_extrapolation():
    assert T.sram_read(16) == pytest.approx(math.sqrt(1.25 * 2.5))  # geometric mean
    slope = math.log(5) / math.log(32)                              # 32 KiB -> 1 MiB
    assert T.sram_read(512) == pytest.approx(12.5 * 0.5 ** slope)
    assert T.sram_read(4096) == pytest.approx(12.5 * 4 ** slope)      # beyond: last slope
    assert T.sram_read(2) == pytest.approx(1.25 * (2 / 8) ** 0.5)    # below: first slope


def test_sram_is_monotone_between_and_beyond_the_points():
    sizes = np.geomspace(1 / 1024, 2.0 ** 30, 2001)
    values = [T.sram_read(float(k)) for k in sizes]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert all(v > 0 for v in values)


def test_sram_single_point_is_flat_and_write_factor():
    flat = EnergyTable(sram_pj_per_byte=((64.0, 3.0),), sram_write_factor=1.5)
    assert flat.sram_read(1) == flat.sram_read(64) == flat.sram_read(1e6) == 3.0
    assert flat.sram_write(7) == 4.5


def test_serial_step_times_bits_is_one_mac():
    assert T.serial_step(16) * 16 == pytest.approx(T.mac("int16"))
    assert T.serial_step(8) * 8 == pytest.approx(T.mac("int8"))
    assert T.serial_step(16) == pytest.approx(0.9 / 16)


# --- pass_energy ---------------------------------------------------------------------------------

def test_pass_energy_split_by_hand():
    e = pass_energy(T, mac_count=1000, element="fp32",
                    sram_reads={"weights": 100, "activations": 8}, sram_writes={"outputs": 10},
                    buffer_kib=SIZES, dram_bytes=50)
    assert set(e) == {"energy_mac_pj", "energy_sram_pj", "energy_dram_pj", "energy_pj"}
    assert e["energy_mac_pj"] == pytest.approx(1000 * 4.6)
    assert e["energy_sram_pj"] == pytest.approx(100 * T.sram_read(512) + 8 * 12.5
                                                + 10 * T.sram_read(256))
    assert e["energy_dram_pj"] == pytest.approx(50 * 162.5)
    assert e["energy_pj"] == e["energy_mac_pj"] + e["energy_sram_pj"] + e["energy_dram_pj"]
    assert all(isinstance(v, float) for v in e.values())


def test_pass_energy_serial_steps_and_write_factor():
    table = EnergyTable(sram_write_factor=2.0)
    e = pass_energy(table, mac_count=0, element="int16", serial_steps=160, bits=16,
                    sram_reads={}, sram_writes={"outputs": 4}, buffer_kib={"outputs": 32},
                    dram_bytes=0)
    assert e["energy_mac_pj"] == pytest.approx(10 * T.mac("int16"))  # 160 steps = 10 MACs
    assert e["energy_sram_pj"] == pytest.approx(4 * 2.0 * 2.5)
    assert e["energy_dram_pj"] == 0.0
    both = pass_energy(T, mac_count=3, element="int8", serial_steps=8, bits=8, sram_reads={},
                       sram_writes={}, buffer_kib={}, dram_bytes=0)
    assert both["energy_pj"] == pytest.approx(4 * T.mac("int8"))


def test_pass_energy_zero_and_numpy_counts():
    zero = pass_energy(T, mac_count=0, element="bf16", sram_reads={"weights": 0}, sram_writes={},
                       buffer_kib=SIZES, dram_bytes=0)
    assert zero == dict.fromkeys(zero, 0.0)
    e = pass_energy(T, mac_count=np.int64(2), element="fp16",
                    sram_reads={"weights": np.float64(8)}, sram_writes={},
                    buffer_kib={"weights": np.float64(8)}, dram_bytes=np.int64(8))
    assert e["energy_pj"] == pytest.approx(2 * 1.5 + 8 * 1.25 + 8 * 162.5)


def _call(**over):
    args = dict(mac_count=1, element="fp32", sram_reads={"weights": 1}, sram_writes={},
                buffer_kib=dict(SIZES), dram_bytes=1)
    args.update(over)
    return lambda: pass_energy(T, **args)


@pytest.mark.parametrize("over, fragments", [
    ({"mac_count": -1}, ["mac_count", ">= 0", "-1"]),
    ({"mac_count": True}, ["mac_count", "True"]),
    ({"serial_steps": float("nan")}, ["serial_steps", "nan"]),
    ({"dram_bytes": float("inf")}, ["dram_bytes", "inf"]),
    ({"dram_bytes": "8"}, ["dram_bytes", "'8'"]),
    ({"element": "fp8"}, ["element", "fp32, bf16, fp16, int16, int8", "'fp8'"]),
    ({"bits": 32}, ["bits", "8, 16", "32"]),
    ({"sram_reads": {"psums": 4}}, ["sram_reads", "weights, activations, outputs", "'psums'"]),
    ({"sram_writes": {"outputs": -2}}, ["sram_writes['outputs']", ">= 0", "-2"]),
    ({"sram_writes": [4]}, ["sram_writes", "mapping"]),
    ({"buffer_kib": {"weights": 512, "psums": 8}}, ["buffer_kib", "'psums'"]),
    ({"buffer_kib": {"weights": 0}}, ["buffer_kib['weights']", "positive", "0"]),
    ({"buffer_kib": {"outputs": 256}}, ["buffer_kib", "'weights'", "sram_reads"]),
])
def test_pass_energy_errors_are_one_line(over, fragments):
    raises_one_line(_call(**over), *fragments)


def test_table_errors_are_one_line():
    raises_one_line(lambda: T.mac("int32"), "element", "'int32'")
    raises_one_line(lambda: T.serial_step(True), "bits")
    raises_one_line(lambda: T.sram_read(0), "KiB", "0")
    raises_one_line(lambda: T.sram_read(float("nan")), "KiB", "nan")
    raises_one_line(lambda: EnergyTable(mac_pj={"fp32": 4.6}), "mac_pj", "int8")
    raises_one_line(lambda: EnergyTable(mac_pj=dict(T.mac_pj, int8=-1)), "mac_pj['int8']", "-1")
    raises_one_line(lambda: EnergyTable(sram_pj_per_byte=()), "sram_pj_per_byte", "at least one")
    raises_one_line(lambda: EnergyTable(sram_pj_per_byte=((32.0, 2.5), (8.0, 1.25))),
                    "strictly increasing")
    raises_one_line(lambda: EnergyTable(sram_pj_per_byte=((8.0, 1.25), (8.0, 2.5))),
                    "strictly increasing")
    raises_one_line(lambda: EnergyTable(sram_pj_per_byte=((8.0, 3.0), (32.0, 2.5))),
                    "not decreasing")
    raises_one_line(lambda: EnergyTable(dram_pj_per_byte=float("inf")), "dram_pj_per_byte")
    raises_one_line(lambda: EnergyTable(sram_write_factor=0), "sram_write_factor")


def test_table_keeps_its_own_copy():
    macs = dict(T.mac_pj)
    table = EnergyTable(mac_pj=macs)
    macs["fp32"] = 99.0
    assert table.mac("fp32") == 3.7 + 0.9


# --- the energy: config section ------------------------------------------------------------------

BASE = {"workload": {"network": "resnet18-cifar", "image_size": 8}, "passes": ["forward"]}


def write(tmp_path: Path, data, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def with_energy(section) -> dict:
    data = copy.deepcopy(BASE)
    data["energy"] = section
    return data


def test_config_defaults_when_absent_or_null(tmp_path):
    assert load_config(write(tmp_path, BASE)).energy == EnergyTable()
    assert load_config(write(tmp_path, with_energy(None))).energy == EnergyTable()
    assert parse_config(with_energy({"mac_pj": None})).energy == EnergyTable()


def test_config_overrides(tmp_path):
    text = yaml.safe_dump(BASE) + (
        "energy:\n"
        "  mac_pj: {int8: 0.3, fp32: 5}\n"
        "  sram_pj_per_byte: {1024: 12.5, 8: 1.25, 0.5: 0.5}\n"
        "  sram_write_factor: 1.2\n"
        "  dram_pj_per_byte: 325\n")
    e = load_config(write(tmp_path, text)).energy
    assert e.mac_pj == dict(T.mac_pj, int8=0.3, fp32=5.0)  # the rest keep their defaults
    assert e.sram_pj_per_byte == ((0.5, 0.5), (8.0, 1.25), (1024.0, 12.5))  # sorted
    assert (e.sram_write_factor, e.dram_pj_per_byte) == (1.2, 325.0)
    assert e.sram_write(8) == pytest.approx(1.5)


CONFIG_ERRORS = [
    ("mac-unknown-element", {"mac_pj": {"int9": 1}}, ["energy.mac_pj.int9", "unknown key", "int8"]),
    ("mac-zero", {"mac_pj": {"fp32": 0}}, ["energy.mac_pj.fp32", "a number from", "got 0"]),
    ("mac-bool", {"mac_pj": {"int16": True}}, ["energy.mac_pj.int16", "True"]),
    ("mac-inf", {"mac_pj": {"bf16": float("inf")}}, ["energy.mac_pj.bf16", "inf"]),
    ("mac-not-mapping", {"mac_pj": [1.5]}, ["energy.mac_pj", "a mapping"]),
    ("sram-empty", {"sram_pj_per_byte": {}}, ["energy.sram_pj_per_byte", "at least one point"]),
    ("sram-list", {"sram_pj_per_byte": [[8, 1.25]]}, ["energy.sram_pj_per_byte", "a mapping"]),
    ("sram-size-zero", {"sram_pj_per_byte": {0: 1}}, ["energy.sram_pj_per_byte", "KiB", "got 0"]),
    ("sram-size-string", {"sram_pj_per_byte": {"8KB": 1}}, ["energy.sram_pj_per_byte", "'8KB'"]),
    ("sram-energy-negative", {"sram_pj_per_byte": {8: -1}}, ["energy.sram_pj_per_byte.8", "-1"]),
    ("sram-decreasing", {"sram_pj_per_byte": {8: 2, 32: 1}},
     ["energy.sram_pj_per_byte.32", "not decreasing", "got 1"]),
    ("write-factor-zero", {"sram_write_factor": 0}, ["energy.sram_write_factor", "got 0"]),
    ("dram-string", {"dram_pj_per_byte": "160 pJ"}, ["energy.dram_pj_per_byte", "'160 pJ'"]),
    ("unknown-key", {"leakage_mw": 1}, ["energy.leakage_mw", "unknown key", "dram_pj_per_byte"]),
    ("not-mapping", [1], ["energy", "a mapping"]),
]


@pytest.mark.parametrize("section, fragments", [e[1:] for e in CONFIG_ERRORS],
                         ids=[e[0] for e in CONFIG_ERRORS])
def test_config_errors_are_one_line(tmp_path, section, fragments):
    path = write(tmp_path, with_energy(section))
    msg = raises_one_line(lambda: load_config(path), *fragments, error=ConfigError)
    assert msg.startswith(f"{path}: "), msg


def test_config_repeated_sram_size_is_refused(tmp_path):
    path = write(tmp_path, yaml.safe_dump(BASE) + "energy:\n  sram_pj_per_byte: {8: 1, 8.0: 2}\n")
    msg = raises_one_line(lambda: load_config(path), "duplicate key", error=ConfigError)
    assert msg.startswith(f"{path}: "), msg
