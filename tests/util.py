"""Shared test helpers."""

import contextlib
import io

from simulator.cli import main
from simulator.trace import LayerSpec, conv_output_size


def one_line_error(err: str, *fragments: str) -> None:
    """Assert that `err` is one `accelsim: error:` line holding every fragment."""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("accelsim: error: ")
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def run_main(argv) -> tuple[int, str, str]:
    """main(argv) with stdout/stderr captured (for module-scoped fixtures, which cannot use capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def layer_spec(cin, cout, k=1, stride=1, padding=0, dilation=1, groups=1, hw=4, kind="conv"):
    """A square conv LayerSpec named 'c' (its output size computed), or an fc one named 'fc'."""
    if kind == "fc":
        return LayerSpec("fc", "fc", cin, cout)
    out = conv_output_size(hw, k, stride, padding, dilation)
    return LayerSpec("c", "conv", cin, cout, k, stride, padding, dilation, groups, (hw, hw), (out, out))
