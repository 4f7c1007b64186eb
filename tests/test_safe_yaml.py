"""Hostile YAML: simulator.safe_yaml and the readers that use it (configs, manifests)."""

import os
import re
import subprocess
import sys
import time

import pytest

from simulator import safe_yaml
from simulator.config import ConfigError, load_config, read_yaml
from simulator.trace import TraceError, read_trace


def test_plain_yaml_still_loads():
    assert safe_yaml.loads("a: 1\nb: [1, 2.5, x]\nc: {d: null}\n") == {
        "a": 1, "b": [1, 2.5, "x"], "c": {"d": None}}


def test_duplicate_keys_are_refused_with_their_line():
    with pytest.raises(safe_yaml.YAMLInputError, match=r"^line 3: duplicate key 'tiles'$"):
        safe_yaml.loads("architecture:\n  tiles: 16\n  tiles: 3\n")
    with pytest.raises(safe_yaml.YAMLInputError, match="duplicate key"):
        safe_yaml.loads("{a: 1, a: 2}")
    assert safe_yaml.loads("a: {x: 1}\nb: {x: 1}\n") == {"a": {"x": 1}, "b": {"x": 1}}


def test_aliases_are_refused_before_expanding():
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    t = time.perf_counter()
    with pytest.raises(safe_yaml.YAMLInputError, match=r"^line 2: alias \*a: aliases are not"):
        safe_yaml.loads(laughs)
    assert time.perf_counter() - t < 1


def test_deep_nesting_is_refused_without_a_recursion_error():
    with pytest.raises(safe_yaml.YAMLInputError, match="nested deeper than 32 levels"):
        safe_yaml.loads("[" * 500 + "]" * 500)
    safe_yaml.loads("[" * 30 + "]" * 30)


def test_huge_integers_are_refused():
    with pytest.raises(safe_yaml.YAMLInputError, match="integer of 100000 digits"):
        safe_yaml.loads("tiles: " + "9" * 100_000)
    assert safe_yaml.loads("x: 123456789012345678901234567890") == {"x": int("1234567890" * 3)}


def test_messages_are_one_short_line():
    with pytest.raises(safe_yaml.YAMLInputError) as e:
        safe_yaml.loads("x: [" + "y" * 5000)
    assert "\n" not in str(e.value) and len(str(e.value)) < 200
    with pytest.raises(safe_yaml.YAMLInputError) as e:
        safe_yaml.loads(f"{'k' * 5000}: 1\n{'k' * 5000}: 2\n")
    assert len(str(e.value)) < 120


def test_fifo_device_and_oversized_files_are_refused_before_reading(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)                                   # opening it would block forever
    with pytest.raises(ConfigError, match=r"config\.yaml: expected a regular file, found a FIFO"):
        read_yaml(fifo)
    with pytest.raises(ConfigError, match="found a device"):
        read_yaml("/dev/zero")
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match=r"big\.yaml: 1,048,579 bytes: expected at most 1,048,576"):
        read_yaml(big)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: \xff\n")
    with pytest.raises(ConfigError, match="expected UTF-8 text, found byte 0xff at offset 3"):
        read_yaml(bad)


def test_config_and_manifest_readers_refuse_duplicate_keys(tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("name: a\nname: b\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: line 2: duplicate key 'name'"):
        load_config(cfg)
    trace = tmp_path / "t"
    trace.mkdir()
    (trace / "manifest.yaml").write_text("format_version: 1\nformat_version: 1\n")
    with pytest.raises(TraceError, match=r"manifest\.yaml: line 2: duplicate key"):
        read_trace(trace)


def test_cli_gives_one_line_and_exit_2_for_a_fifo_config(tmp_path):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    out = subprocess.run([sys.executable, "-m", "simulator.cli", "run", str(fifo)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "expected a regular file, found a FIFO" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("text, expected", [
    ("architecture:\n  tiles: 100000000000000000000\n",
     "architecture.tiles: expected an integer <= 1,024, got 100000000000000000000"),
    ("workload:\n  network: resnet18-cifar\n  batch: 100000000000000000000\n",
     "workload.batch: expected an integer <= 2,147,483,647, got 100000000000000000000"),
    ("memory:\n  buffers_kib:\n    weights: 5.0e-324\n",
     "memory.buffers_kib.weights: expected a number from 0.000976562"),
    ("memory:\n  element: x" + "y" * 5000 + "\n", "memory.element: expected one of"),
    ("workload:\n  network: resnet18-cifar\nname: null\n", "name: expected a non-empty string"),
])
def test_config_values_beyond_what_a_field_can_mean_get_one_short_line(tmp_path, text, expected):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(("" if "name:" in text else "name: c\n")
                   + ("" if text.startswith("workload") else "workload:\n  network: resnet18-cifar\n")
                   + text)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    message = str(e.value)
    assert expected in message and "\n" not in message and len(message) < 400


@pytest.mark.parametrize("text, fragment", [
    ("tiles: 1:00\n", "a base-60 number in YAML 1.1"),
    ("f: " + ":".join(["59"] * 300) + ".5\n", "a base-60 number in YAML 1.1"),
    ("tiles: 020\n", "an octal number in YAML 1.1 (it means 16)"),
])
def test_yaml11_number_surprises_are_refused(text, fragment):
    with pytest.raises(safe_yaml.YAMLInputError, match=re.escape(fragment)):
        safe_yaml.loads(text)
    assert safe_yaml.loads("a: 0\nb: 0.5\nc: 1_000\nd: 0x10\n") == {"a": 0, "b": 0.5, "c": 1000, "d": 16}


def test_a_regular_file_that_says_it_is_empty_is_not_read(tmp_path):
    """Files under /proc say 0 bytes and may block (e.g. /proc/kmsg): read as empty."""
    assert safe_yaml.read_text("/proc/self/status") == ""
    link = tmp_path / "c.yaml"
    link.symlink_to("/proc/kmsg")
    assert safe_yaml.read_text(link) == ""
