"""The network zoo against published parameter and MAC counts, and its shape bookkeeping."""

import pytest

from simulator.trace import conv_output_size
from workloads.networks import NETWORKS, BatchNormSpec, Network, build_network

# Pooling geometries (kernel, stride, padding) the zoo uses between layers.
POOLS = ((3, 2, 1), (2, 2, 0))


@pytest.fixture(scope="module")
def nets() -> dict[str, Network]:
    return {name: build_network(name) for name in NETWORKS}


# --- published numbers (torchvision for ImageNet nets; Zagoruyko & Komodakis for WRN) ---------

@pytest.mark.parametrize("name, params", [
    ("resnet18", 11_689_512),
    ("resnet34", 21_797_672),
    ("resnet50", 25_557_032),
    ("vgg16", 138_357_544),
    ("vgg16-bn", 138_365_992),
    ("mobilenet-v2", 3_504_872),
    ("densenet121", 7_978_856),
])
def test_param_counts_match_torchvision(nets, name, params):
    assert nets[name].image_size == 224 and nets[name].num_classes == 1000
    assert nets[name].param_count == params


@pytest.mark.parametrize("name, macs, rel", [
    ("resnet18", 1.82e9, 0.02),
    ("resnet50", 4.1e9, 0.02),
    ("vgg16", 15.5e9, 0.02),
    ("mobilenet-v2", 0.30e9, 0.05),
    ("densenet121", 2.87e9, 0.03),
])
def test_macs_match_published(nets, name, macs, rel):
    assert nets[name].macs() == pytest.approx(macs, rel=rel)


def test_wrn_16_8_params():
    net = build_network("wrn-16-8")
    assert (net.image_size, net.num_classes) == (32, 10)
    assert net.param_count == pytest.approx(10.96e6, rel=0.01)


def test_cifar_resnet_params():
    # Well-known counts of the CIFAR-stem ResNets with 10 classes.
    assert build_network("resnet18-cifar").param_count == 11_173_962
    assert build_network("resnet50-cifar").param_count == 23_520_842


def test_macs_scale_with_batch(nets):
    net = nets["resnet18"]
    assert net.macs(4) == 4 * net.macs()
    assert net.macs() == sum(lay.macs() for lay in net.layers)


# --- structure ------------------------------------------------------------------------------

def test_resnet50_cifar_stage_sizes():
    net = build_network("resnet50-cifar", 32, 10)
    conv1 = net.layer("conv1")
    assert (conv1.kernel, conv1.stride, conv1.padding, conv1.out_channels) == (3, 1, 1, 64)
    assert conv1.in_hw == conv1.out_hw == (32, 32)
    stage_out = {stage: net.layer(f"layer{stage}.0.conv3").out_hw for stage in (1, 2, 3, 4)}
    assert stage_out == {1: (32, 32), 2: (16, 16), 3: (8, 8), 4: (4, 4)}
    assert net.layer("layer1.0.conv1").in_hw == (32, 32)  # no max-pool
    assert net.layer("fc").in_channels == 2048 and net.layer("fc").out_channels == 10


def test_resnet50_imagenet_geometry(nets):
    net = nets["resnet50"]
    conv1 = net.layer("conv1")
    assert (conv1.kernel, conv1.stride, conv1.padding, conv1.out_hw) == (7, 2, 3, (112, 112))
    assert net.layer("layer1.0.conv1").in_hw == (56, 56)  # after the 3x3/2 max-pool
    # torchvision v1.5: the stride sits on the 3x3 conv, and on the downsample.
    assert net.layer("layer2.0.conv1").stride == 1
    assert net.layer("layer2.0.conv2").stride == 2
    ds = net.layer("layer2.0.downsample.0")
    assert (ds.kernel, ds.stride, ds.in_channels, ds.out_channels) == (1, 2, 256, 512)
    assert net.layer("layer4.2.conv3").out_hw == (7, 7)
    assert not any(lay.bias for lay in net.layers if lay.kind == "conv")
    assert net.layer("fc").bias
    # every conv, downsample included, is followed by a BN over its output
    convs = {lay.name for lay in net.layers if lay.kind == "conv"}
    assert {bn.after for bn in net.batchnorms} == convs
    assert net.first_conv == "conv1"


def test_resnet18_has_downsample_only_where_shape_changes(nets):
    names = [lay.name for lay in nets["resnet18"].layers]
    assert [n for n in names if "downsample" in n] == [
        "layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]


def test_vgg16_classifier_fixed_at_any_size():
    for size in (32, 64, 224, 320):
        net = build_network("vgg16", size)
        fc0 = net.layer("classifier.0")
        assert fc0.in_channels == 512 * 7 * 7 and fc0.out_channels == 4096
        assert net.param_count == 138_357_544
        assert net.layer("features.28").out_hw == (size // 16, size // 16)
    net = build_network("vgg16")
    assert all(lay.bias for lay in net.layers) and not net.batchnorms
    assert [lay.name for lay in net.layers][-3:] == ["classifier.0", "classifier.3", "classifier.6"]
    bn_net = build_network("vgg16-bn")
    assert bn_net.layer("features.3").in_channels == 64  # conv, bn, relu, conv ...
    assert [bn.after for bn in bn_net.batchnorms] == [
        lay.name for lay in bn_net.layers if lay.kind == "conv"]


def test_mobilenet_v2_depthwise_and_names(nets):
    net = nets["mobilenet-v2"]
    depthwise = [lay for lay in net.layers if lay.groups > 1]
    assert len(depthwise) == 17  # one per inverted-residual block
    for lay in depthwise:
        assert lay.groups == lay.in_channels == lay.out_channels
        assert lay.kernel == 3 and lay.padding == 1
    assert net.layer("features.0.0").stride == 2 and net.layer("features.0.0").out_channels == 32
    assert net.layer("features.1.conv.0.0").groups == 32  # t=1: no expansion conv
    assert net.layer("features.2.conv.0.0").out_channels == 96  # 16 * 6
    assert net.layer("features.18.0").out_channels == 1280
    assert net.layer("features.18.0").out_hw == (7, 7)
    assert net.layer("classifier.1").in_channels == 1280 and net.layer("classifier.1").bias
    assert len(net.batchnorms) == sum(1 for lay in net.layers if lay.kind == "conv")


def test_densenet121_channels(nets):
    net = nets["densenet121"]
    growth = 32
    for block, (n, c_in) in enumerate(zip((6, 12, 24, 16), (64, 128, 256, 512)), start=1):
        for li in range(1, n + 1):
            p = f"features.denseblock{block}.denselayer{li}"
            conv1, conv2 = net.layer(f"{p}.conv1"), net.layer(f"{p}.conv2")
            assert conv1.in_channels == c_in + (li - 1) * growth
            assert conv1.out_channels == 128 and conv1.kernel == 1
            assert (conv2.in_channels, conv2.out_channels, conv2.kernel) == (128, growth, 3)
        if block < 4:
            t = net.layer(f"features.transition{block}.conv")
            assert (t.in_channels, t.out_channels) == (c_in + n * growth, (c_in + n * growth) // 2)
    assert net.layer("classifier").in_channels == 1024
    assert net.layer("features.denseblock4.denselayer1.conv1").in_hw == (7, 7)
    norms = {bn.name: bn for bn in net.batchnorms}
    assert norms["features.norm5"].channels == 1024
    assert norms["features.norm5"].after == "features.denseblock4.denselayer16.conv2"
    assert norms["features.denseblock2.denselayer1.norm1"].after == "features.transition1.conv"
    assert norms["features.denseblock2.denselayer1.norm1"].hw == (28, 28)
    assert norms["features.denseblock1.denselayer3.norm1"].channels == 128
    assert not any(lay.bias for lay in net.layers if lay.kind == "conv")


def test_wrn_16_8_structure():
    net = build_network("wrn-16-8")
    convs = [lay for lay in net.layers if lay.kind == "conv"]
    assert len(convs) == 1 + 3 * 2 * 2 + 3  # stem, 2 convs x 2 blocks x 3 groups, 3 shortcuts
    assert [lay.name for lay in convs if "Shortcut" in lay.name] == [
        f"block{g}.layer.0.convShortcut" for g in (1, 2, 3)]
    assert net.layer("block1.layer.0.conv1").out_channels == 128
    assert net.layer("block3.layer.1.conv2").out_channels == 512
    assert net.layer("block3.layer.1.conv2").out_hw == (8, 8)
    bns = {bn.name: bn for bn in net.batchnorms}
    assert bns["block1.layer.0.bn1"].after == "conv1" and bns["block1.layer.0.bn1"].channels == 16
    assert bns["block2.layer.0.bn1"].after == "block1.layer.1.conv2"
    assert bns["block2.layer.0.bn1"].hw == (32, 32)  # normalised before the strided conv
    assert bns["bn1"].channels == 512 and bns["bn1"].after == "block3.layer.1.conv2"


# --- invariants over the whole zoo ------------------------------------------------------------

@pytest.mark.parametrize("name", NETWORKS)
def test_spatial_sizes_chain(nets, name):
    net = nets[name]
    produced = {(net.image_size, net.image_size)}
    for lay in net.layers:
        if lay.kind == "fc":
            assert lay.in_hw == lay.out_hw == (1, 1)
            continue
        assert lay.in_hw in produced, f"{name}: {lay.name} reads {lay.in_hw}, never produced"
        assert lay.out_hw == tuple(conv_output_size(v, lay.kernel, lay.stride, lay.padding,
                                                    lay.dilation) for v in lay.in_hw)
        produced.add(lay.out_hw)
        for k, s, p in POOLS:  # a pooled version of any produced map may feed a later layer
            produced.add(tuple(conv_output_size(v, k, s, p, 1) for v in lay.out_hw))
    assert net.layers[-1].kind == "fc" and net.layers[-1].out_channels == net.num_classes
    assert net.layers[0].name == net.first_conv and net.layers[0].in_channels == 3


@pytest.mark.parametrize("name", NETWORKS)
def test_batchnorms_refer_to_earlier_layers(nets, name):
    net = nets[name]
    order = {lay.name: i for i, lay in enumerate(net.layers)}
    for bn in net.batchnorms:
        assert isinstance(bn, BatchNormSpec)
        assert bn.after in order, f"{name}: {bn.name} after unknown layer {bn.after}"
        assert bn.param_count == 2 * bn.channels
        assert bn.elements(3) == 3 * bn.channels * bn.hw[0] * bn.hw[1]
        if name not in ("densenet121", "wrn-16-8"):  # post-activation: BN reads its conv's output
            after = net.layer(bn.after)
            assert (bn.channels, bn.hw) == (after.out_channels, after.out_hw), bn.name
    names = [lay.name for lay in net.layers] + [bn.name for bn in net.batchnorms]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", NETWORKS)
def test_every_network_builds_at_default_size(name):
    net = build_network(name)
    cifar = name.endswith("-cifar") or name == "wrn-16-8"
    assert (net.image_size, net.num_classes) == ((32, 10) if cifar else (224, 1000))
    assert net.name == name and net.param_count > 0 and net.macs() > 0


def test_sizes_scale():
    small, large = build_network("resnet50", 224), build_network("resnet50", 256)
    assert large.macs() > small.macs()
    assert large.param_count == small.param_count
    assert large.layer("layer4.0.conv3").out_hw == (8, 8)
    assert build_network("resnet50", num_classes=10).layer("fc").out_channels == 10


def test_layer_lookup_errors(nets):
    with pytest.raises(KeyError):
        nets["resnet18"].layer("no.such.layer")


# --- errors -----------------------------------------------------------------------------------

def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        build_network("resnet-9000")
    msg = str(e.value)
    assert "resnet-9000" in msg
    assert all(name in msg for name in NETWORKS)


@pytest.mark.parametrize("name, minimum", [("vgg16", 32), ("vgg16-bn", 32), ("densenet121", 29)])
def test_too_small_image_names_the_minimum(name, minimum):
    with pytest.raises(ValueError, match=rf"minimum image size is {minimum}\b"):
        build_network(name, minimum - 1)
    assert build_network(name, minimum).image_size == minimum


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_image_size_or_classes(bad):
    with pytest.raises(ValueError, match="image_size"):
        build_network("resnet18", bad)
    with pytest.raises(ValueError, match="num_classes"):
        build_network("resnet18", 224, bad)
