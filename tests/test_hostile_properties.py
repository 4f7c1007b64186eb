"""Property-based hostile input (hypothesis): configs, YAML text, trace manifests and sweep
files generated around their schemas must end in exactly one of two outcomes: accepted,
or one ConfigError/TraceError line (which `accelsim` prints as one line and exit 2).

No traceback of any other type, no multi-line message, no message that quotes an
unbounded value. The examples are derandomized (the same on every run, so CI is
reproducible) and bounded so the module runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis", reason="the test extra installs hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from simulator import safe_yaml  # noqa: E402
from simulator.api import _workloads  # noqa: E402
from simulator.config import ConfigError, load_config, parse_config  # noqa: E402
from simulator.trace import TraceError, read_trace  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "traces" / "example-simple-cnn-swat-u-80"
MAX_MESSAGE = 400  # characters: a message quotes at most ~80 of any value it was given

SETTINGS = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))

BASE = {
    "name": "fuzz",
    "architecture": {"tiles": 2, "rows": 4, "lanes": 16, "columns": 1, "frequency_mhz": 1000,
                     "frontend": {"shape": "T", "lookahead": 2, "lookaside": 5,
                                  "pattern": "spread", "scheduler": "fewest-candidates"},
                     "lockstep": True, "backend": "bit-parallel"},
    "workload": {"network": "simple-cnn", "image_size": 28, "batch": 1,
                 "sparsity": [0.0, 0.8], "seed": 0, "dense_layers": ["conv1"], "num_classes": 10},
    "passes": ["forward", "input_grad", "weight_grad"],
    "lowering": {"scheduled_operand": {"forward": "weights", "input_grad": "weights",
                                       "weight_grad": "activations"},
                 "input_grad_lowering": "phase", "first_layer_input_grad": False,
                 "first_layer": "space-to-depth", "tap_order": "row-major"},
    "memory": {"element": "fp32", "formats": {"weights": "best", "activations": "best",
                                              "saved_activations": "best"},
               "run_length_bits": 4, "buffers_kib": {"weights": 512, "activations": 512,
                                                    "outputs": 512},
               "dram": {"bandwidth_gbps": 64, "latency_ns": 100}},
    "output": {"dir": "reports/fuzz"},
}


def paths(tree, prefix=()):
    """Every key path of a nested mapping (lists count as leaves)."""
    for k, v in tree.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from paths(v, prefix + (k,))


CONFIG_PATHS = list(paths(BASE))

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.sampled_from([0, 1, -1, 2 ** 31, 2 ** 63, 10 ** 30, 10 ** 100]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([5e-324, 1e-310, 1e308, math.nan, math.inf, -math.inf, 0.5, 1.0]),
    st.text(max_size=12),
    st.sampled_from(["", "x" * 5000, "T", "none", "resnet50", "../..", "/dev/zero", "a\x00b",
                     "\u202e", "fp16", "phase", "weights"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=8)


def one_line(message: str) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert 0 < len(message) <= MAX_MESSAGE, message


def set_path(tree: dict, path: tuple, value) -> None:
    node = tree
    for k in path[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[path[-1]] = value


def del_path(tree: dict, path: tuple) -> None:
    node = tree
    for k in path[:-1]:
        node = node.get(k)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(CONFIG_PATHS), values),
    st.tuples(st.just("del"), st.sampled_from(CONFIG_PATHS), st.none()),
    st.tuples(st.just("set"), st.tuples(st.sampled_from(["architecture", "workload", "memory", ""]),
                                        st.text(min_size=1, max_size=8)), values),
    st.tuples(st.just("trace"), st.just(("workload",)), st.one_of(values, st.sampled_from(
        [str(EXAMPLE), "traces", "/dev/zero", "/proc/self", "a\x00b", "missing", "x" * 5000]))),
)


@SETTINGS
@given(st.lists(mutation, min_size=1, max_size=4))
def test_config_mappings_are_accepted_or_refused_in_one_line(mutations):
    data = copy.deepcopy(BASE)
    for op, path, value in mutations:
        path = tuple(p for p in path if p != "")
        if not path:
            continue
        if op == "trace":  # a trace workload instead of a synthetic one
            data["workload"] = {"trace": value}
        elif op == "set":
            set_path(data, path, value)
        else:
            del_path(data, path)
    try:
        cfg = parse_config(data, "fuzz.yaml")
    except ConfigError as e:
        one_line(str(e))
        assert str(e).startswith("fuzz.yaml: "), str(e)
        return
    assert cfg.architecture.lanes <= 1024 and cfg.architecture.frontend.lookahead <= 16
    assert all(0 <= s < 1 for s in cfg.workload.sparsity)
    try:  # what `run` does before simulating: build the network, estimate the memory
        next(_workloads(cfg, max_memory_gib=2.0))
    except ConfigError as e:
        one_line(str(e))


FRAGMENTS = [
    "architecture:\n", "  tiles: 4\n", "  tiles: 3\n", "workload:\n", "  network: simple-cnn\n",
    "  sparsity: [0.5]\n", "a: &x [1, 2]\n", "b: *x\n", "c: *nope\n", "- ", "[" * 40, "]",
    "{" * 40, "9" * 40, "\n", "  ", "\t", "key: .nan\n", "key: 1e400\n", "k: !!python/object:os.system ls\n",
    "k: !!binary aGVsbG8=\n", "<<: *x\n", "? complex\n", "%YAML 1.1\n", "---\n", "...\n",
    "\u00e9\u4e2d: 1\n", "x: '\\x00'\n", "k: \"\\x00\"\n", "\x00", "\ufeff", "~\n", "!!set {a, b}\n",
]


@SETTINGS
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30), st.text(max_size=20))
def test_yaml_text_is_parsed_or_refused_in_one_line(tmp_path_factory, fragments, noise):
    text = "".join(fragments) + noise
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_config(path)
    except ConfigError as e:
        one_line(str(e))
        assert str(e).startswith(f"{path}"), str(e)


# ------------------------------------------------------------------ trace manifests

MANIFEST = safe_yaml.load(EXAMPLE / "manifest.yaml")
LAYER_FIELDS = list(MANIFEST["layers"][0])
TOP_FIELDS = [k for k in MANIFEST if k != "layers"]

manifest_values = st.one_of(values, st.sampled_from(
    ["/etc/passwd", "../000_conv1.npz", "000_conv1.npz", "001_conv2.npz", "missing.npz", ".",
     "float16", "float64", "longdouble", "int8", "conv", "fc", [28, 28], [0, 0], [-1, 28], True]))
manifest_mutation = st.one_of(
    st.tuples(st.just("top"), st.sampled_from(TOP_FIELDS + ["layers", "extra"]), manifest_values),
    st.tuples(st.just("deltop"), st.sampled_from(TOP_FIELDS + ["layers"]), st.none()),
    st.tuples(st.integers(0, len(MANIFEST["layers"]) - 1), st.sampled_from(LAYER_FIELDS),
              manifest_values),
    st.tuples(st.integers(0, len(MANIFEST["layers"]) - 1), st.sampled_from(LAYER_FIELDS), st.just(KeyError)),
)


@pytest.fixture(scope="module")
def trace_copy(tmp_path_factory):
    d = tmp_path_factory.mktemp("trace") / "t"
    shutil.copytree(EXAMPLE, d)
    return d


@settings(SETTINGS, max_examples=150)
@given(st.lists(manifest_mutation, min_size=1, max_size=3))
def test_manifests_are_accepted_or_refused_in_one_line(trace_copy, mutations):
    manifest = copy.deepcopy(MANIFEST)
    for where, key, value in mutations:
        if where == "top":
            manifest[key] = value
        elif where == "deltop":
            manifest.pop(key, None)
        elif isinstance(manifest.get("layers"), list) and where < len(manifest["layers"]) \
                and isinstance(manifest["layers"][where], dict):
            if value is KeyError:
                manifest["layers"][where].pop(key, None)
            else:
                manifest["layers"][where][key] = value
    (trace_copy / "manifest.yaml").write_text(yaml.safe_dump(manifest, allow_unicode=True))
    try:
        trace = read_trace(trace_copy)
    except TraceError as e:
        one_line(str(e))
        return
    for lay in trace.layers:  # what was accepted is what the format promises
        for t in ("weight", "input", "input_saved", "grad_output"):
            a = getattr(lay, t)
            assert a is None or (a.dtype.name in ("float32", "float64") and a.shape[0] >= 1)


# ------------------------------------------------------------------ sweep files

SWEEP_KEYS = [".".join(p) for p in CONFIG_PATHS] + ["workload.sparsity", "nope.key", "", "a..b"]
sweep_lists = st.one_of(st.lists(values, max_size=5), values)
sweep_files = st.fixed_dictionaries(
    {"base": st.one_of(st.just(copy.deepcopy(BASE)), values,
                       st.sampled_from(["missing.yaml", "/dev/zero", "../..", "c.yaml"])),
     "sweep": st.one_of(st.dictionaries(st.sampled_from(SWEEP_KEYS), sweep_lists, max_size=3), values)},
    optional={"name": values, "output": values, "extra": values})


@settings(SETTINGS, max_examples=200)
@given(sweep_files)
def test_sweep_files_are_accepted_or_refused_in_one_line(tmp_path_factory, data):
    from simulator.sweep import load_sweep

    d = tmp_path_factory.mktemp("sweep")
    (d / "c.yaml").write_text(yaml.safe_dump(BASE))
    path = d / "s.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    try:
        sweep = load_sweep(path, max_points=50)
    except ConfigError as e:
        one_line(str(e))
        assert str(e).startswith((str(d), "/dev/zero: ")), str(e)  # the sweep file, or its base
        return
    assert 1 <= len(sweep.points) <= 50
