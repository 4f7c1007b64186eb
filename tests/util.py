"""Shared test helpers."""

from simulator.trace import LayerSpec, conv_output_size


def layer_spec(cin, cout, k=1, stride=1, padding=0, dilation=1, groups=1, hw=4, kind="conv"):
    """A square conv LayerSpec named 'c' (its output size computed), or an fc one named 'fc'."""
    if kind == "fc":
        return LayerSpec("fc", "fc", cin, cout)
    out = conv_output_size(hw, k, stride, padding, dilation)
    return LayerSpec("c", "conv", cin, cout, k, stride, padding, dilation, groups, (hw, hw), (out, out))
