"""configs/dnnsim.yaml reproduces DNNsim 4748a60's BitTactical forward compute cycles.

The DNNsim numbers here are derived, not copied: tests/dnnsim_port.py transcribes the C++
code's weight-buffer layout (OutputStationary.cpp), first-layer rewrite (Array.cpp),
search map (BitTactical.h), `original_schedule` (BitTactical.cpp) and row walk
(WindowFirstOutS.cpp), and works on the raw weight tensor, not on accelsim's lowered
streams. A C++ build of DNNsim compared every ResNet-50 layer (README, "Validation
against DNNsim"); CI runs this transcription on a few layers.
"""

from pathlib import Path

import numpy as np
import pytest

from simulator.config import load_config
from simulator.simulate import PassPlan, evaluate
from tests.dnnsim_port import forward_cycles, reshape_first_layer_wgt
from workloads.networks import build_network
from workloads.synthetic import synthetic_layers

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup():
    cfg = load_config(ROOT / "configs" / "dnnsim.yaml")
    net = build_network("resnet50", image_size=224)
    return cfg, net


def ours(cfg, layer, index):
    plan = PassPlan(("forward",), cfg.lowering)
    return evaluate(plan.lower(layer, "forward", cfg.architecture.lanes, index), cfg.architecture)[0]


def dnnsim(cfg, layer):
    fe, arch, spec = cfg.architecture.frontend, cfg.architecture, layer.spec
    w = layer.weight if spec.kind == "conv" else layer.weight[:, :, None, None]
    return forward_cycles(w.tolist(), spec.out_hw[0] * spec.out_hw[1] * layer.batch, spec.stride,
                          arch.tiles, arch.rows, arch.lanes, fe.shape, fe.lookahead, fe.lookaside)


def test_config_states_dnnsims_choices(setup):
    cfg, _ = setup
    fe = cfg.architecture.frontend
    assert (fe.shape, fe.lookahead, fe.lookaside, fe.pattern, fe.scheduler) == ("T", 2, 5, "dnnsim", "dnnsim")
    assert (cfg.lowering.first_layer, cfg.lowering.tap_order) == ("space-to-depth", "column-major")
    assert cfg.architecture.lockstep and cfg.passes == ("forward",)


@pytest.mark.parametrize("sparsity", [0.8, 0.9])
def test_forward_cycles_equal_dnnsims_on_resnet50_layers(setup, sparsity):
    cfg, net = setup
    wanted = {"conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.downsample.0",
              "layer2.0.conv2"}
    seen = 0
    for index, layer in enumerate(synthetic_layers(net, sparsity, 1, 0)):
        if layer.spec.name not in wanted:
            continue
        t = ours(cfg, layer, index)
        assert t.cycles == dnnsim(cfg, layer), layer.spec.name
        seen += 1
    assert seen == len(wanted)


def test_conv1_space_to_depth_dense_count(setup):
    # 7x7/2 over 3 channels -> 4x4/1 over 12 channels: 16 taps x 1 lane block = 16 steps,
    # 64 filters in one filter group, 112 x 112 windows: 16 * 12544 = 200,704 dense
    # cycles (DNNsim's count), against 49 * 12544 = 614,656 when padded.
    cfg, net = setup
    layer = next(iter(synthetic_layers(net, 0.8, 1, 0)))
    t = ours(cfg, layer, 0)
    assert t.dense_cycles == 200_704
    assert ours(cfg, layer, 1).dense_cycles == 614_656  # not the first layer: padded
    w = reshape_first_layer_wgt(np.ones((1, 3, 7, 7)).tolist(), 2)
    assert np.array(w).shape == (1, 12, 4, 4)
    # tap row 3 holds only kernel row 6 (phase 0): 3 channels x 7 columns of ones
    assert np.array(w)[0, :, 3, :].sum() == 3 * 7
