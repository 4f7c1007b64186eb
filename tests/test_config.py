"""YAML configs: the shipped files load as documented, and every mistake is one clear line."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from simulator.config import ConfigError, load_config
from simulator.frontend import max_lookaside

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# A small valid config; every error case below is one mutation of it.
BASE = {
    "architecture": {"tiles": 2, "rows": 4, "lanes": 16, "columns": 1, "frequency_mhz": 1000,
                     "frontend": {"shape": "T", "lookahead": 2, "lookaside": 5},
                     "backend": "bit-parallel"},
    "workload": {"network": "resnet18-cifar", "image_size": 8, "batch": 1,
                 "sparsity": [0.0, 0.8], "seed": 0},
    "passes": ["forward"],
}


def write(tmp_path: Path, data, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def assert_one_line_about(msg: str, path: Path, *fragments: str) -> None:
    assert "\n" not in msg and "\r" not in msg, msg
    assert msg.startswith(f"{path}: "), msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"


# --- the shipped configs ------------------------------------------------------------------------

def test_tactical_yaml():
    cfg = load_config(CONFIGS / "tactical.yaml")
    arch, wl = cfg.architecture, cfg.workload
    assert cfg.name == "tactical"
    assert arch.tiles == 16 and arch.rows == 16 and arch.lanes == 16 and arch.columns == 1
    assert (arch.frontend.shape, arch.frontend.lookahead, arch.frontend.lookaside) == ("T", 2, 5)
    assert str(arch.frontend) == "T<2,5>"
    assert arch.backend == "bit-parallel"
    assert arch.peak_macs_per_cycle == 16 * 16 * 16
    assert wl.network == "resnet50" and wl.trace is None
    assert wl.image_size == 224 and wl.batch == 1
    assert wl.sparsity == (0.0, 0.8, 0.9)
    assert wl.dense_layers is None  # the default: first conv dense
    assert cfg.passes == ("forward", "input_grad", "weight_grad")
    assert cfg.lowering.scheduled_operand == {"forward": "weights", "input_grad": "weights",
                                              "weight_grad": "activations"}
    assert cfg.lowering.input_grad_lowering == "phase"
    assert cfg.lowering.first_layer_input_grad is False
    assert cfg.output.dir is None
    assert cfg.output_dir == Path("reports") / "tactical"
    m = cfg.memory  # written out in full, with the defaults
    assert (m.element, m.run_length_bits, m.bandwidth_gbps, m.latency_ns) == ("fp32", 5, 19.2, 100)
    assert set(m.formats.values()) == {"best"}
    assert (m.weight_buffer_kib, m.activation_buffer_kib, m.output_buffer_kib) == (512, 1024, 256)


def test_dense_yaml_is_tactical_without_frontend():
    dense, tactical = load_config(CONFIGS / "dense.yaml"), load_config(CONFIGS / "tactical.yaml")
    assert dense.name == "dense"
    assert dense.architecture.frontend.shape == "none"
    assert str(dense.architecture.frontend) == "none"
    assert dense.output_dir == Path("reports") / "dense"
    # same array and workload otherwise: the baseline for tactical.yaml
    assert dense.workload == tactical.workload
    for attr in ("tiles", "rows", "lanes", "columns", "frequency_mhz", "backend"):
        assert getattr(dense.architecture, attr) == getattr(tactical.architecture, attr)
    # the same memory system, every tensor stored dense: dense training's traffic
    assert set(dense.memory.formats.values()) == {"dense"}
    for attr in ("element", "weight_buffer_kib", "activation_buffer_kib", "output_buffer_kib",
                 "bandwidth_gbps", "latency_ns"):
        assert getattr(dense.memory, attr) == getattr(tactical.memory, attr)


def test_name_is_file_stem_and_output_dir_follows(tmp_path):
    path = tmp_path / "my-experiment.yaml"
    shutil.copy(CONFIGS / "tactical.yaml", path)
    cfg = load_config(path)
    assert cfg.name == "my-experiment"
    assert cfg.output_dir == Path("reports") / "my-experiment"
    assert cfg.source == str(path)


def test_explicit_name_and_output_dir(tmp_path):
    data = copy.deepcopy(BASE)
    data["name"] = "sweep"
    cfg = load_config(write(tmp_path, data, "file-stem.yaml"))
    assert cfg.name == "sweep" and cfg.output_dir == Path("reports") / "sweep"
    data["output"] = {"dir": "somewhere/else"}
    cfg = load_config(write(tmp_path, data, "file-stem.yaml"))
    assert cfg.output_dir == Path("somewhere/else")


def test_base_config_is_valid_and_defaults(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.architecture.tiles == 2 and cfg.architecture.rows == 4
    assert cfg.workload.sparsity == (0.0, 0.8)
    # sections left out take their defaults
    minimal = load_config(write(tmp_path, {"workload": {"network": "resnet18-cifar"}}, "m.yaml"))
    assert minimal.architecture.tiles == 16 and str(minimal.architecture.frontend) == "T<2,5>"
    assert minimal.passes == ("forward", "input_grad", "weight_grad")
    assert minimal.workload.sparsity == (0.0,)
    assert minimal.workload.batch == 1


def test_scalar_sparsity_and_none_frontend_defaults(tmp_path):
    data = copy.deepcopy(BASE)
    data["workload"]["sparsity"] = 0.5
    data["architecture"]["frontend"] = {"shape": "none"}
    cfg = load_config(write(tmp_path, data))
    assert cfg.workload.sparsity == (0.5,)
    fe = cfg.architecture.frontend
    assert (fe.shape, fe.lookahead, fe.lookaside) == ("none", 0, 0)


# --- one-line errors ----------------------------------------------------------------------------

def _set(*keys_and_value):
    """A mutation setting BASE[k1][k2]... = value (creating mappings on the way)."""
    *keys, value = keys_and_value

    def mutate(d):
        for k in keys[:-1]:
            d = d.setdefault(k, {})
        d[keys[-1]] = value
    return mutate


def _delete(*keys):
    def mutate(d):
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
    return mutate


def _both(*mutations):
    def mutate(d):
        for m in mutations:
            m(d)
    return mutate


T_MAX = max_lookaside("T", 2, 16)
L_MAX = max_lookaside("L", 1, 16)

ERRORS = [
    ("scheduler-unknown", _set("architecture", "frontend", "scheduler", "optimal"),
     ["architecture.frontend.scheduler", "in-order, dnnsim, fewest-candidates, matching", "'optimal'"]),
    ("pattern-unknown", _set("architecture", "frontend", "pattern", "trident"),
     ["architecture.frontend.pattern", "spread, dnnsim", "'trident'"]),
    ("dnnsim-pattern-too-wide", _set("architecture", "frontend", {"shape": "T", "lookahead": 8,
                                                                  "lookaside": 16, "pattern": "dnnsim"}),
     ["architecture.frontend.lookaside", "T<8,16> dnnsim-pattern", "expected lookaside <= 15"]),
    ("offsets-dt-beyond-lookahead", _set("architecture", "frontend",
                                         {"lookahead": 2, "offsets": [[1, -1], [3, 1]]}),
     ["architecture.frontend.offsets[1]", "dt in 1..2", "[3, 1]"]),
    ("offsets-zero-lane-shift", _set("architecture", "frontend", {"lookahead": 2, "offsets": [[1, 16]]}),
     ["architecture.frontend.offsets[0]", "not 0 mod 16", "[1, 16]"]),
    ("offsets-duplicate-mod-lanes", _set("architecture", "frontend",
                                         {"lookahead": 1, "offsets": [[1, 3], [1, -13]]}),
     ["architecture.frontend.offsets[1]", "no duplicate", "[1, -13]"]),
    ("offsets-not-pairs", _set("architecture", "frontend", {"lookahead": 1, "offsets": [[1]]}),
     ["architecture.frontend.offsets[0]", "[dt, dl]", "[1]"]),
    ("offsets-not-a-list", _set("architecture", "frontend", {"lookahead": 1, "offsets": "T"}),
     ["architecture.frontend.offsets", "a list of [dt, dl] pairs", "'T'"]),
    ("offsets-with-lookaside", _set("architecture", "frontend",
                                    {"lookahead": 1, "lookaside": 2, "offsets": [[1, 1]]}),
     ["architecture.frontend.lookaside", "no value with 'offsets'"]),
    ("offsets-with-shape-T", _set("architecture", "frontend", {"shape": "T", "offsets": [[1, 1]]}),
     ["architecture.frontend.shape", "custom or no shape", "'T'"]),
    ("lockstep-string", _set("architecture", "lockstep", "yes"),
     ["architecture.lockstep", "true (tiles wait for the slowest) or false", "'yes'"]),
    ("first-layer-unknown", _set("lowering", "first_layer", "im2col"),
     ["lowering.first_layer", "pad, space-to-depth", "'im2col'"]),
    ("tap-order-unknown", _set("lowering", "tap_order", "zigzag"),
     ["lowering.tap_order", "row-major, column-major", "'zigzag'"]),
    ("tiles-negative", _set("architecture", "tiles", -3),
     ["architecture.tiles", "expected an integer >= 1", "-3"]),
    ("lanes-zero", _set("architecture", "lanes", 0),
     ["architecture.lanes", "expected an integer >= 1", "got 0"]),
    ("rows-string", _set("architecture", "rows", "16"),
     ["architecture.rows", "expected an integer", "'16'"]),
    ("columns-float", _set("architecture", "columns", 1.5),
     ["architecture.columns", "expected an integer", "1.5"]),
    ("frequency-zero", _set("architecture", "frequency_mhz", 0),
     ["architecture.frequency_mhz", "expected a number from 0.001 to 1e+06", "got 0"]),
    ("frequency-negative", _set("architecture", "frequency_mhz", -250.0),
     ["architecture.frequency_mhz", "expected a number from 0.001 to 1e+06", "-250"]),
    ("frequency-string", _set("architecture", "frequency_mhz", "1GHz"),
     ["architecture.frequency_mhz", "expected a number from 0.001 to 1e+06", "'1GHz'"]),
    ("unknown-top-level-key", _set("architecure", {"tiles": 2}),
     ["architecure", "unknown key", "architecture"]),
    ("unknown-architecture-key", _set("architecture", "tile", 2),
     ["architecture.tile", "unknown key", "tiles"]),
    ("unknown-frontend-key", _set("architecture", "frontend", "lookahed", 2),
     ["architecture.frontend.lookahed", "unknown key", "lookahead"]),
    ("unknown-workload-key", _set("workload", "sparsities", [0.5]),
     ["workload.sparsities", "unknown key"]),
    ("unknown-output-key", _set("output", "directory", "x"),
     ["output.directory", "unknown key"]),
    ("architecture-not-mapping", _set("architecture", [16, 16]),
     ["architecture", "expected a mapping"]),
    ("frontend-shape-X", _set("architecture", "frontend", "shape", "X"),
     ["architecture.frontend.shape", "T, L, none", "'X'"]),
    ("T-lookahead-0", _set("architecture", "frontend", "lookahead", 0),
     ["architecture.frontend.lookahead", ">= 1", "shape T", "0"]),
    ("none-with-lookahead", _set("architecture", "frontend", {"shape": "none", "lookahead": 2}),
     ["architecture.frontend.lookahead", "expected 0", "shape none"]),
    ("none-with-lookaside", _set("architecture", "frontend", {"shape": "none", "lookaside": 3}),
     ["architecture.frontend.", "lookaside", "expected 0", "shape none"]),
    ("lookaside-negative", _set("architecture", "frontend", "lookaside", -1),
     ["architecture.frontend.lookaside", "expected an integer >= 0", "-1"]),
    ("T-lookaside-unplaceable",
     _set("architecture", "frontend", {"shape": "T", "lookahead": 2, "lookaside": 20}),
     ["architecture.frontend.lookaside", "T<2,20>", "16 lanes", f"lookaside <= {T_MAX}"]),
    ("L-lookaside-unplaceable",
     _set("architecture", "frontend", {"shape": "L", "lookahead": 1, "lookaside": 16}),
     ["architecture.frontend.lookaside", "L<1,16>", "16 lanes", f"lookaside <= {L_MAX}"]),
    ("bits-on-bit-parallel", _set("architecture", "bits", 8),
     ["architecture.bits", "no value with backend bit-parallel"]),
    ("bits-12", _set("architecture", {"backend": "tclp", "bits": 12}),
     ["architecture.bits", "one of 8, 16", "12"]),
    ("trailing-on-tcle", _set("architecture", {"backend": "tcle", "trailing_zeros": True}),
     ["architecture.trailing_zeros", "false with backend tcle"]),
    ("trailing-not-bool", _set("architecture", {"backend": "tclp", "trailing_zeros": "yes"}),
     ["architecture.trailing_zeros", "true", "'yes'"]),
    ("tclp-columns-not-a-multiple", _set("architecture", {"backend": "tclp", "columns": 12}),
     ["architecture.columns", "a multiple of bits (16)", "12"]),
    ("backend-foo", _set("architecture", "backend", "foo"),
     ["architecture.backend", "bit-parallel, tclp, tcle", "'foo'"]),
    ("sparsity-1.5", _set("workload", "sparsity", 1.5),
     ["workload.sparsity", "[0, 1)", "1.5"]),
    ("sparsity-1.0", _set("workload", "sparsity", [0.0, 1.0]),
     ["workload.sparsity[1]", "[0, 1)", "1.0"]),
    ("sparsity-negative-in-list", _set("workload", "sparsity", [0.5, -0.1]),
     ["workload.sparsity[1]", "[0, 1)", "-0.1"]),
    ("sparsity-string", _set("workload", "sparsity", "high"),
     ["workload.sparsity", "number", "'high'"]),
    ("sparsity-empty", _set("workload", "sparsity", []),
     ["workload.sparsity", "non-empty"]),
    ("sparsity-duplicates", _set("workload", "sparsity", [0.0, 0.8, 0.8]),
     ["workload.sparsity", "distinct"]),
    ("sparsity-duplicates-int-float", _set("workload", "sparsity", [0, 0.0]),
     ["workload.sparsity", "distinct"]),
    ("network-and-trace", _set("workload", "trace", "traces/some-run"),
     [": workload: ", "exactly one of", "network", "trace"]),
    ("neither-network-nor-trace", _delete("workload", "network"),
     [": workload: ", "exactly one of", "network", "trace"]),
    ("no-workload-section", _delete("workload"),
     [": workload: ", "exactly one of"]),
    ("network-empty-string", _set("workload", "network", ""),
     ["workload.network", "non-empty string"]),
    ("batch-0", _set("workload", "batch", 0),
     ["workload.batch", "expected an integer >= 1", "got 0"]),
    ("image_size-with-trace",
     _both(_delete("workload", "network"), _set("workload", "trace", "traces/some-run"),
           _delete("workload", "sparsity")),
     ["workload.image_size", "synthetic"]),
    ("passes-backward", _set("passes", ["backward"]),
     ["passes[0]", "forward", "'backward'"]),
    ("passes-not-a-list", _set("passes", "forward"),
     ["passes", "list", "'forward'"]),
    ("passes-empty", _set("passes", []),
     ["passes", "non-empty list"]),
    ("lowering-unknown-key", _set("lowering", {"input_grad_lowerin": "phase"}),
     ["lowering.input_grad_lowerin", "unknown key"]),
    ("lowering-bad-input-grad", _set("lowering", {"input_grad_lowering": "im2col"}),
     ["lowering.input_grad_lowering", "phase, zero-insert", "'im2col'"]),
    ("lowering-bad-operand", _set("lowering", {"scheduled_operand": {"weight_grad": "gradients"}}),
     ["lowering.scheduled_operand.weight_grad", "weights, activations, auto", "'gradients'"]),
    ("lowering-unknown-pass", _set("lowering", {"scheduled_operand": {"backward": "auto"}}),
     ["lowering.scheduled_operand.backward", "unknown key"]),
    ("lowering-first-layer-not-bool", _set("lowering", {"first_layer_input_grad": "yes"}),
     ["lowering.first_layer_input_grad", "true or false", "'yes'"]),
    ("dense_layers-not-a-list", _set("workload", "dense_layers", "conv1"),
     ["workload.dense_layers", "list of layer names", "'conv1'"]),
    ("dense_layers-not-strings", _set("workload", "dense_layers", ["conv1", 3]),
     ["workload.dense_layers", "list of layer names"]),
    ("output-dir-not-string", _set("output", "dir", 5),
     ["output.dir", "non-empty string", "5"]),
    ("memory-not-mapping", _set("memory", [1]), ["memory", "expected a mapping"]),
    ("memory-unknown-key", _set("memory", {"bandwidth": 8}), ["memory.bandwidth", "unknown key", "dram"]),
    ("memory-element", _set("memory", {"element": "fp8"}),
     ["memory.element", "fp32, bf16, fp16, int16, int8", "'fp8'"]),
    ("memory-format", _set("memory", {"formats": {"weights": "csr"}}),
     ["memory.formats.weights", "dense, bitmap, coordinate, rle, ideal, best", "'csr'"]),
    ("memory-format-class", _set("memory", {"formats": {"biases": "dense"}}),
     ["memory.formats.biases", "unknown key", "saved_activations"]),
    ("memory-run-bits", _set("memory", {"run_length_bits": 0}),
     ["memory.run_length_bits", "integer >= 1", "got 0"]),
    ("memory-run-bits-large", _set("memory", {"run_length_bits": 40}),
     ["memory.run_length_bits", "from 1 to 32", "40"]),
    ("memory-buffer-zero", _set("memory", {"buffers_kib": {"weights": 0}}),
     ["memory.buffers_kib.weights", "a number from 0.000976562 to 1.07374e+09", "got 0"]),
    ("memory-buffer-inf", _set("memory", {"buffers_kib": {"outputs": float("inf")}}),
     ["memory.buffers_kib.outputs", "a number from 0.000976562 to 1.07374e+09", "inf"]),
    ("memory-bandwidth-string", _set("memory", {"dram": {"bandwidth_gbps": "19.2 GB/s"}}),
     ["memory.dram.bandwidth_gbps", "a number from 0.001 to 1e+06 (.inf for unlimited)", "'19.2 GB/s'"]),
    ("memory-latency-negative", _set("memory", {"dram": {"latency_ns": -5}}),
     ["memory.dram.latency_ns", "a number from 0 to 1e+09", "-5"]),
]


def test_memory_defaults_and_unlimited_bandwidth(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    m = cfg.memory
    assert (m.element, m.element_bits, m.run_length_bits) == ("fp32", 32, 5)
    assert m.formats == dict.fromkeys(("weights", "activations", "saved_activations", "gradients"), "best")
    assert (m.weight_buffer_kib, m.activation_buffer_kib, m.output_buffer_kib) == (512, 1024, 256)
    assert (m.bandwidth_gbps, m.latency_ns) == (19.2, 100)
    text = yaml.safe_dump(BASE) + "memory: {dram: {bandwidth_gbps: .inf, latency_ns: 0}, element: bf16}\n"
    m = load_config(write(tmp_path, text)).memory
    assert m.bandwidth_gbps == float("inf") and m.latency_ns == 0 and m.element_bits == 16


@pytest.mark.parametrize("mutate, fragments", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_error_is_one_line_naming_key_and_expectation(tmp_path, mutate, fragments):
    data = copy.deepcopy(BASE)
    mutate(data)
    path = write(tmp_path, data)
    assert_one_line_about(error_of(path), path, *fragments)


BOOLEANS = [
    (("architecture", "tiles"), "architecture.tiles"),
    (("architecture", "lanes"), "architecture.lanes"),
    (("architecture", "frequency_mhz"), "architecture.frequency_mhz"),
    (("architecture", "frontend", "lookahead"), "architecture.frontend.lookahead"),
    (("workload", "batch"), "workload.batch"),
    (("workload", "image_size"), "workload.image_size"),
    (("workload", "sparsity"), "workload.sparsity"),
]


@pytest.mark.parametrize("keys, key_path", BOOLEANS, ids=[b[1] for b in BOOLEANS])
def test_booleans_are_not_numbers(tmp_path, keys, key_path):
    # In Python True == 1, so a lax isinstance(v, int) check would accept `tiles: true`.
    data = copy.deepcopy(BASE)
    _set(*keys, True)(data)
    path = write(tmp_path, data)
    text = path.read_text()
    assert "true" in text  # YAML spelled it as a boolean
    assert_one_line_about(error_of(path), path, key_path, "True")


def test_boolean_in_sparsity_list(tmp_path):
    data = copy.deepcopy(BASE)
    data["workload"]["sparsity"] = [0.5, False]
    path = write(tmp_path, data)
    assert_one_line_about(error_of(path), path, "workload.sparsity[1]", "False")


@pytest.mark.parametrize("shape, lookahead", [("T", 2), ("L", 1), ("T", 1), ("L", 3)])
def test_max_lookaside_is_the_boundary(tmp_path, shape, lookahead):
    """The largest lookaside the message promises loads; one more is refused."""
    d = max_lookaside(shape, lookahead, 16)
    assert d >= 1
    data = copy.deepcopy(BASE)
    data["architecture"]["frontend"] = {"shape": shape, "lookahead": lookahead, "lookaside": d}
    cfg = load_config(write(tmp_path, data))
    assert str(cfg.architecture.frontend) == f"{shape}<{lookahead},{d}>"
    data["architecture"]["frontend"]["lookaside"] = d + 1
    path = write(tmp_path, data)
    assert_one_line_about(error_of(path), path, "architecture.frontend.lookaside",
                          f"lookaside <= {d}")


def test_lookaside_limit_depends_on_lanes(tmp_path):
    # On fewer lanes fewer distinct lateral shifts exist: T<2,5> fits 16 lanes but not 2.
    assert max_lookaside("T", 2, 2) < 5 <= max_lookaside("T", 2, 16)
    data = copy.deepcopy(BASE)
    data["architecture"]["lanes"] = 2
    path = write(tmp_path, data)
    assert_one_line_about(error_of(path), path, "architecture.frontend.lookaside", "2 lanes",
                          f"lookaside <= {max_lookaside('T', 2, 2)}")


# --- errors of the file itself ------------------------------------------------------------------

def test_invalid_yaml_names_the_line(tmp_path):
    text = ("architecture:\n"
            "  tiles: 2\n"
            "workload:\n"
            "  network: resnet18-cifar\n"
            "  sparsity: [0.0, 0.8\n"      # unclosed flow sequence ...
            "  batch: 1\n")                # ... the parser notices here, on line 6
    path = write(tmp_path, text)
    msg = error_of(path)
    assert_one_line_about(msg, path, "not valid YAML", "line ")
    line = int(msg.split("line ")[1].split(":")[0])
    assert line in (5, 6)


def test_bad_indentation_names_the_line(tmp_path):
    text = "architecture:\n  tiles: 2\n lanes: 16\nworkload:\n  network: resnet18-cifar\n"
    path = write(tmp_path, text)
    assert_one_line_about(error_of(path), path, "not valid YAML", "line 3")


def test_missing_file(tmp_path):
    path = tmp_path / "does-not-exist.yaml"
    assert_one_line_about(error_of(path), path, "no such file")


def test_directory_instead_of_file(tmp_path):
    path = tmp_path / "adir.yaml"
    path.mkdir()
    assert_one_line_about(error_of(path), path, "cannot read")


def test_top_level_list(tmp_path):
    path = write(tmp_path, "- architecture\n- workload\n")
    assert_one_line_about(error_of(path), path, "(top level)", "expected a mapping")


def test_top_level_scalar(tmp_path):
    path = write(tmp_path, "just a string\n")
    assert_one_line_about(error_of(path), path, "(top level)", "expected a mapping")


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# --- regressions: bugs found by these tests and fixed ------------------------------------------

def test_non_utf8_file_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\nworkload:\n  network: resnet18-cifar\n".encode("latin-1"))
    assert_one_line_about(error_of(path), path)


def test_control_character_error_is_one_line(tmp_path):
    path = tmp_path / "ctrl.yaml"
    path.write_bytes(b"name: a\x07b\nworkload:\n  network: resnet18-cifar\n")
    assert_one_line_about(error_of(path), path, "not valid YAML")


def test_unknown_key_with_newline_is_one_line(tmp_path):
    path = write(tmp_path, '"work\\nload": 1\nworkload:\n  network: resnet18-cifar\n')
    assert_one_line_about(error_of(path), path, "unknown key")


def test_fidelity_keys_parse(tmp_path):
    data = yaml.safe_load((CONFIGS / "tactical.yaml").read_text())
    data["architecture"]["frontend"] = {"lookahead": 2, "offsets": [[1, -1], [2, 3]],
                                        "scheduler": "matching"}
    data["architecture"]["lockstep"] = False
    data["lowering"]["first_layer"] = "space-to-depth"
    data["lowering"]["tap_order"] = "column-major"
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    cfg = load_config(p)
    fe = cfg.architecture.frontend
    assert (fe.shape, fe.lookahead, fe.lookaside, fe.offsets, fe.scheduler) == (
        "custom", 2, 2, ((1, -1), (2, 3)), "matching")
    assert str(fe) == "custom<2,2>[1:-1 2:+3]"
    assert cfg.architecture.lockstep is False
    assert (cfg.lowering.first_layer, cfg.lowering.tap_order) == ("space-to-depth", "column-major")


def test_shipped_configs_state_their_front_end_choices():
    for path in sorted(CONFIGS.glob("*.yaml")):
        text = path.read_text()
        if "sweep:" in text:
            continue
        for key in ("scheduler:", "pattern:", "first_layer:", "lockstep:"):
            assert key in text, (path.name, key)
