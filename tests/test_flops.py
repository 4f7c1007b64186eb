"""The analytic training-FLOP model (SWAT A.3) and `accelsim flops`."""

from __future__ import annotations

import pytest

from simulator.cli import main
from simulator.flops import (METHODS, dense_pass_macs, layer_flops, pass_densities,
                             summarize_flops, training_flop_reduction)
from simulator.trace import LayerSpec, conv_output_size
from tests.util import one_line_error
from workloads.networks import build_network


@pytest.fixture(scope="module")
def resnet50():
    return build_network("resnet50").layers  # ImageNet shapes, 224x224


def wide_resnet50_2() -> list[LayerSpec]:
    """torchvision wide_resnet50_2: ResNet-50 with the bottleneck's inner width doubled."""
    layers, hw = [], 224

    def conv(name, cin, cout, k, s, p, hw):
        out = conv_output_size(hw, k, s, p, 1)
        layers.append(LayerSpec(name, "conv", cin, cout, k, s, p, in_hw=(hw, hw), out_hw=(out, out)))
        return out

    hw = conv("conv1", 3, 64, 7, 2, 3, hw)
    hw = conv_output_size(hw, 3, 2, 1, 1)  # max-pool
    cin = 64
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for i in range(count):
            s, width, out, p = (2 if stage > 1 and i == 0 else 1), 2 * planes, 4 * planes, f"layer{stage}.{i}"
            conv(f"{p}.conv1", cin, width, 1, 1, 0, hw)
            h2 = conv(f"{p}.conv2", width, width, 3, s, 1, hw)
            conv(f"{p}.conv3", width, out, 1, 1, 0, h2)
            if s != 1 or cin != out:
                conv(f"{p}.downsample.0", cin, out, 1, s, 0, hw)
            hw, cin = h2, out
    layers.append(LayerSpec("fc", "fc", 2048, 1000))
    return layers


# --- the paper's numbers -------------------------------------------------------------------------

@pytest.mark.parametrize("sparsity, paper", [(0.8, 0.761), (0.9, 0.856)])
def test_resnet50_swat_u_matches_table3(resnet50, sparsity, paper):
    r = training_flop_reduction(resnet50, sparsity, "swat-u")
    assert abs(r - paper) < 0.02  # the bound
    assert abs(r - paper) < 0.0005  # and in fact the table to its decimal (76.12%, 85.63%)


@pytest.mark.parametrize("sparsity, paper", [(0.8, 0.786), (0.9, 0.884)])
def test_wrn50_2_swat_u_matches_table3(sparsity, paper):
    """An independent row of Table 3 confirms the counting convention, not just ResNet-50."""
    assert abs(training_flop_reduction(wide_resnet50_2(), sparsity, "swat-u") - paper) < 0.0006


@pytest.mark.parametrize("sparsity, paper", [(0.8, 0.777), (0.9, 0.874)])
def test_forward_reduction_matches_table3_inference_column(resnet50, sparsity, paper):
    s = summarize_flops(layer_flops(resnet50, sparsity, "swat-u"))
    assert abs(s.loc["forward", "reduction"] - paper) < 0.0006


@pytest.mark.parametrize("sparsity", [0.8, 0.9])
def test_true_counting_is_also_within_two_points(resnet50, sparsity):
    r = training_flop_reduction(resnet50, sparsity, "swat-u", counting="true")
    paper = {0.8: 0.761, 0.9: 0.856}[sparsity]
    assert 0.0 < r - paper < 0.02  # 77.69% / 87.40%: every pass equal to the forward MACs


# --- the model's structure -----------------------------------------------------------------------

def test_dense_method_and_zero_sparsity_reduce_nothing(resnet50):
    for method, s in [("dense", 0.9), ("swat-u", 0.0), ("saw", 0.0), ("meprop", 0.0)]:
        summary = summarize_flops(layer_flops(resnet50, s, method))
        assert (summary["reduction"].abs() < 1e-12).all(), (method, s)
        assert (summary["sparse_macs"] == summary["dense_macs"]).all()


@pytest.mark.parametrize("method", METHODS)
def test_reduction_is_monotonic_in_sparsity(resnet50, method):
    rs = [training_flop_reduction(resnet50, s, method) for s in (0.0, 0.3, 0.5, 0.8, 0.9, 0.99)]
    if method == "dense":
        assert rs == [0.0] * len(rs)
    else:
        assert all(a < b for a, b in zip(rs, rs[1:])), rs


def test_first_layer_is_dense_in_every_pass(resnet50):
    df = layer_flops(resnet50, 0.9, "swat-u")
    first = df[df["layer"] == "conv1"]
    assert list(first["pass"]) == ["forward", "input_grad", "weight_grad"]
    assert (first["density"] == 1.0).all() and not first["sparse"].any()
    rest = df[df["layer"] != "conv1"]
    assert (abs(rest["density"] - 0.1) < 1e-12).all()
    # with nothing kept dense, SWAT-U removes exactly S of every pass
    all_sparse = summarize_flops(layer_flops(resnet50, 0.9, "swat-u", dense_layers=()))
    assert all_sparse["reduction"].sub(0.9).abs().max() < 1e-12
    assert training_flop_reduction(resnet50, 0.9, "swat-u") < 0.9 - 0.03


def test_more_dense_layers_reduce_less(resnet50):
    base = training_flop_reduction(resnet50, 0.8, "swat-u")
    more = training_flop_reduction(resnet50, 0.8, "swat-u", dense_layers=("conv1", "fc"))
    assert more < base
    with pytest.raises(ValueError, match="dense_layers"):
        layer_flops(resnet50, 0.8, dense_layers=("nope",))


def test_pass_counting(resnet50):
    conv1 = resnet50[0]  # 7x7 stride 2: the input gradient over the 224x224 input is 4x
    assert (conv1.stride, conv1.in_hw, conv1.out_hw) == (2, (224, 224), (112, 112))
    assert dense_pass_macs(conv1, "input_grad", counting="a3") == 4 * conv1.macs()
    assert dense_pass_macs(conv1, "weight_grad", counting="a3") == conv1.macs()
    for lay in resnet50:
        assert dense_pass_macs(lay, "forward", 3) == lay.macs(3)
        assert dense_pass_macs(lay, "input_grad", counting="true") == lay.macs()
        if lay.stride == 1:
            assert dense_pass_macs(lay, "input_grad") == lay.macs()
    fc = resnet50[-1]
    assert fc.kind == "fc" and dense_pass_macs(fc, "input_grad") == 2048 * 1000


def test_first_layer_input_grad_can_be_left_out(resnet50):
    df = layer_flops(resnet50, 0.8, first_layer_input_grad=False)
    assert ((df["layer"] == "conv1") & (df["pass"] == "input_grad")).sum() == 0
    assert len(df) == 3 * len(resnet50) - 1
    # leaving the dense 4x input gradient out raises the reduction
    assert training_flop_reduction(resnet50, 0.8, first_layer_input_grad=False) > \
        training_flop_reduction(resnet50, 0.8)


def test_summary_sums_and_units(resnet50):
    df = layer_flops(resnet50, 0.8, batch=2)
    s = summarize_flops(df)
    assert s.loc["forward", "dense_macs"] == 2 * sum(lay.macs() for lay in resnet50)
    assert s.loc["backward", "sparse_macs"] == pytest.approx(
        s.loc["input_grad", "sparse_macs"] + s.loc["weight_grad", "sparse_macs"])
    assert s.loc["training", "dense_macs"] == df["dense_macs"].sum()
    assert (s["dense_flops"] == 2 * s["dense_macs"]).all()
    assert (s["sparse_flops"] == 2 * s["sparse_macs"]).all()
    # the batch scales every count, not the reduction
    assert training_flop_reduction(resnet50, 0.8, batch=2) == pytest.approx(
        training_flop_reduction(resnet50, 0.8, batch=1))


def test_method_densities():
    assert pass_densities("swat-u", 0.8) == pytest.approx(
        {"forward": 0.2, "input_grad": 0.2, "weight_grad": 0.2})
    assert pass_densities("swat-u", 0.8, 0.5)["weight_grad"] == 0.5
    assert pass_densities("saw", 0.8) == pytest.approx(
        {"forward": 1.0, "input_grad": 0.2, "weight_grad": 0.2})
    # meprop: dY is Top-K'd; both backward passes read it, the forward pass does not
    assert pass_densities("meprop", 0.9) == pytest.approx(
        {"forward": 1.0, "input_grad": 0.1, "weight_grad": 0.1})
    # non-SWAT sparse learning: A.3's default activation sparsity of 50%
    assert pass_densities("sparse-learning", 0.9) == pytest.approx(
        {"forward": 0.1, "input_grad": 0.1, "weight_grad": 0.5})
    assert pass_densities("dense", 0.9) == {"forward": 1.0, "input_grad": 1.0, "weight_grad": 1.0}
    with pytest.raises(ValueError, match="method"):
        pass_densities("rigl", 0.8)
    with pytest.raises(ValueError, match=r"sparsity: expected a number in \[0, 1\)"):
        pass_densities("swat-u", 1.0)
    with pytest.raises(ValueError, match="activation_sparsity"):
        pass_densities("meprop", 0.8, 0.5)
    with pytest.raises(ValueError, match="activation_sparsity"):
        pass_densities("swat-u", 0.8, 1.5)


def test_sparse_learning_is_between_saw_like_and_swat(resnet50):
    sl = training_flop_reduction(resnet50, 0.8, "sparse-learning")
    assert training_flop_reduction(resnet50, 0.8, "saw") < sl < training_flop_reduction(resnet50, 0.8)


# --- the command ---------------------------------------------------------------------------------

def test_cli_flops_resnet50(capsys):
    assert main(["flops", "resnet50", "--sparsity", "0.8,0.9"]) == 0
    out = capsys.readouterr().out
    assert "76.12%" in out and "85.63%" in out
    for word in ("forward", "input_grad", "weight_grad", "backward", "training", "GFLOPs", "conv1"):
        assert word in out


def test_cli_flops_quiet_verbose_and_options(capsys):
    assert main(["flops", "simple-cnn", "--sparsity", "0.5", "-q"]) == 0
    quiet = capsys.readouterr().out
    assert "FLOPs = 2 MACs" not in quiet and "training" in quiet
    assert main(["flops", "simple-cnn", "--sparsity", "0.5", "-v", "--method", "sparse-learning",
                 "--batch", "4", "--counting", "true", "--dense-layers", "none"]) == 0
    out = capsys.readouterr().out
    assert "fc2" in out and "counting true" in out and "dense layers: none" in out
    assert main(["flops", "simple-cnn", "--sparsity", "0.5", "--method", "dense"]) == 0
    assert "0.00%" in capsys.readouterr().out


def test_cli_flops_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["flops", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in ("--sparsity", "--method", "--image-size", "--batch", "-q", "-v"):
        assert word in out


@pytest.mark.parametrize("argv, fragments", [
    (["--sparsity", "1.5"], ["--sparsity: expected a number in [0, 1), got 1.5"]),
    (["--sparsity", "x"], ["--sparsity: expected a number in [0, 1), got x"]),
    (["--sparsity", "0.8", "--method", "rigl"], ["--method: expected one of", "rigl"]),
    (["--sparsity", "0.8", "--batch", "0"], ["--batch: expected an integer >= 1, got 0"]),
    (["--sparsity", "0.8", "--image-size", "0"], ["--image-size: expected an integer >= 1, got 0"]),
    (["--sparsity", "0.8", "--dense-layers", "nope"], ["--dense-layers", "nope"]),
    (["--sparsity", "0.8", "--method", "meprop", "--activation-sparsity", "0.5"],
     ["--activation-sparsity: not used by --method meprop"]),
    (["--sparsity", "0.8", "--counting", "paper"], ["--counting: expected one of a3, true"]),
])
def test_cli_flops_bad_input_is_one_line_exit_2(capsys, argv, fragments):
    assert main(["flops", "resnet50", *argv]) == 2
    one_line_error(capsys.readouterr().err, *fragments)


def test_cli_flops_image_too_small(capsys):
    assert main(["flops", "vgg16", "--sparsity", "0.8", "--image-size", "16"]) == 2
    one_line_error(capsys.readouterr().err, "--image-size", "minimum image size is 32")


def test_cli_flops_unknown_network(capsys):
    assert main(["flops", "resnet51", "--sparsity", "0.8"]) == 2
    one_line_error(capsys.readouterr().err, "NETWORK: expected one of", "resnet51")
