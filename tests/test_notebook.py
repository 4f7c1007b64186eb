"""reports/speedup.ipynb: committed with its outputs cleared, runs top to bottom with nbclient
on the results of a small run (any cell error fails the test), and without results its first
cell says what to run. The kernel runs on this interpreter (a kernelspec written for
sys.executable, so another `python3` kernelspec on the machine cannot be picked up)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import simulator

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "reports" / "speedup.ipynb"
CONFIG = {  # resnet18-cifar at 16x16 on 2 tiles x 4 filter lanes: about a second
    "architecture": {"tiles": 2, "rows": 4, "lanes": 16,
                     "frontend": {"shape": "T", "lookahead": 2, "lookaside": 5}},
    "workload": {"network": "resnet18-cifar", "image_size": 16, "batch": 1,
                 "sparsity": [0.0, 0.8, 0.9], "seed": 0},
    "passes": ["forward", "input_grad", "weight_grad"],
}


def _execute(tmp_path: Path, monkeypatch, results: Path):
    """Run the notebook in a kernel on this interpreter, started in reports/ as Jupyter
    would, with ACCELSIM_RESULTS=results; returns the executed notebook."""
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as e:
        pytest.skip(f"nbclient/nbformat not importable ({e}): pip install -e '.[notebook]'")
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernels = tmp_path / "kernels"
    write_kernel_spec(kernels / "accelsim-test")  # argv: [sys.executable, -m, ipykernel_launcher, ...]
    spec = json.loads((kernels / "accelsim-test" / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    monkeypatch.setenv("ACCELSIM_RESULTS", str(results))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    km = KernelManager(kernel_name="accelsim-test",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    client = NotebookClient(nb, km=km, timeout=300, startup_timeout=120,
                            resources={"metadata": {"path": str(REPO / "reports")}})
    return nb, client


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    markdown = [c for c in nb["cells"] if c["cell_type"] == "markdown"]
    for plot in ("layer_speedup", "speedup_vs_sparsity", "dram_traffic", "utilization_map"):
        i = next(i for i, c in enumerate(nb["cells"]) if f"report.{plot}(" in "".join(c["source"]))
        assert nb["cells"][i - 1]["cell_type"] == "markdown", f"no markdown cell before {plot}"
        assert "What to read" in "".join(nb["cells"][i - 1]["source"])
    assert len(markdown) >= 6


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    results = tmp_path / "small" / "results.csv"
    simulator.write_results(simulator.run(simulator.parse_config(CONFIG), quiet=True), results)
    nb, client = _execute(tmp_path, monkeypatch, results)
    client.execute()  # raises CellExecutionError on any cell error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert f"{results}: 186 rows; networks resnet18-cifar; sparsities 0%, 80%, 90%" in text
    assert "speedup over the dense array" in text  # the Table-11 summary
    assert text.rstrip().splitlines()[-1] == sys.executable  # the kernel ran on this interpreter
    tables = [o["data"]["text/plain"] for o in outputs if o.output_type == "execute_result"]
    assert len(tables) == 1 and "SWAT Table 11" in tables[0] and "5.6" in tables[0] and "6.3" in tables[0]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o["data"]]
    assert len(images) == 4  # one per plot of simulator.report
    errors = [o for o in outputs if o.output_type == "stream" and o.name == "stderr"
              and ("Traceback" in o.text or "Error" in o.text)]
    assert not errors, errors


def test_first_cell_says_to_run_the_tactical_config(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "results.csv"
    nb, client = _execute(tmp_path, monkeypatch, missing)  # skips if nbclient is missing
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError) as e:
        client.execute()
    first = next(c for c in nb.cells if c.cell_type == "code")
    error, = [o for o in first.outputs if o.output_type == "error"]
    assert error.ename == "FileNotFoundError"
    assert error.evalue.startswith(
        f"{missing} does not exist: run `accelsim run configs/tactical.yaml` first")
    assert "accelsim run configs/tactical.yaml" in str(e.value)


def test_notebook_extra_installs_what_jupyter_execute_needs():
    """`pip install -e '.[notebook]'` then `jupyter execute reports/speedup.ipynb`: the extra
    names nbclient (the `jupyter-execute` command), jupyter_core (the `jupyter` front
    command), jupyter_client and ipykernel (the python3 kernel) and nbformat."""
    import re
    import tomllib
    from importlib.metadata import entry_points

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["notebook"]
    names = {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower().replace("-", "_") for r in extra}
    assert names >= {"nbclient", "nbformat", "jupyter_client", "jupyter_core", "ipykernel"}
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    if "jupyter-execute" not in scripts:
        pytest.skip("the notebook extra is not installed")
    assert scripts["jupyter-execute"].startswith("nbclient")
