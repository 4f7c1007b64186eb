"""The dependency direction of DESIGN.md: the simulator core never imports workloads;
workloads import from the simulator only the trace format and the shared file and memory
rules (simulator.outputs, simulator.resources)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIRING = {"api.py", "cli.py", "cli_parser.py", "analytic_commands.py"}  # only these may wire workloads into the simulator


def imports(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_simulator_core_does_not_import_workloads():
    for path in (ROOT / "simulator").glob("*.py"):
        if path.name in WIRING:
            continue
        bad = [n for n in imports(path) if n.split(".")[0] == "workloads"]
        assert not bad, f"{path.name} imports {bad}"


# what workloads may use of the simulator: the trace format, and the file and memory rules
# every command shares (no part of the accelerator model)
SHARED = {"simulator.trace", "simulator.outputs", "simulator.resources"}


def test_workloads_import_only_the_trace_format_and_the_shared_rules():
    for path in (ROOT / "workloads").glob("*.py"):
        bad = [n for n in imports(path) if n.startswith("simulator") and n not in SHARED]
        assert not bad, f"{path.name} imports {bad}"
