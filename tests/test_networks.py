"""The network zoo: published parameter and MAC counts, shape bookkeeping, and the graphs."""

import dataclasses

import pytest

from simulator.trace import conv_output_size
from workloads.networks import NETWORKS, BatchNormSpec, Network, build_network
from workloads.networks import (AdaptivePool, BatchNorm, Conv, DenseConcat, Dropout, Flatten,
                               Node, Pool, ReLU, Residual, Seq, walk)

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
    expected = (28, 10) if name == "simple-cnn" else (32, 10) if cifar else (224, 1000)
    assert (net.image_size, net.num_classes) == expected
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


# --- graphs: the one source of truth for layers, batch norms and the trainer's model ---------

def _all_nodes(node):
    """Every node of the tree, containers included (pre-order)."""
    yield node
    children = {Seq: lambda n: n.nodes, Residual: lambda n: (n.main, n.shortcut),
                DenseConcat: lambda n: (n.branch,)}.get(type(node), lambda n: ())(node)
    for child in children:
        if child is not None:
            yield from _all_nodes(child)


def _propagate(node, shape, checked):
    """Shape of `node`'s output for an input of `shape` ((C, H, W) or (F,)), as torch computes it.

    Checks every Conv / BatchNorm against the tensor it actually reads (names go to `checked`).
    """
    if isinstance(node, Seq):
        for child in node.nodes:
            shape = _propagate(child, shape, checked)
        return shape
    if isinstance(node, Residual):
        main = _propagate(node.main, shape, checked)
        short = shape if node.shortcut is None else _propagate(node.shortcut, shape, checked)
        assert main == short, f"residual branches disagree: {main} vs {short}"
        return main
    if isinstance(node, DenseConcat):
        branch = _propagate(node.branch, shape, checked)
        assert len(shape) == len(branch) == 3 and branch[1:] == shape[1:]
        return (shape[0] + branch[0], *shape[1:])
    if isinstance(node, Conv):
        s = node.spec
        checked.append(s.name)
        if s.kind == "fc":
            assert shape == (s.in_channels,), f"{s.name} reads {shape}"
            return (s.out_channels,)
        assert shape == (s.in_channels, *s.in_hw), f"{s.name} reads {shape}"
        return (s.out_channels, *s.out_hw)
    if isinstance(node, BatchNorm):
        s = node.spec
        checked.append(s.name)
        expected = (s.channels,) if node.flat else (s.channels, *s.hw)
        assert shape == expected, f"{s.name} reads {shape}, spec says {expected}"
        if node.flat:
            assert s.hw == (1, 1)
        return shape
    if isinstance(node, (ReLU, Dropout)):
        return shape
    if isinstance(node, Pool):
        assert len(shape) == 3 and node.kind in ("max", "avg")
        c, *hw = shape
        out = tuple((v + 2 * node.padding - node.kernel) // node.stride + 1 for v in hw)
        assert min(out) >= 1, f"pool {node} on {shape}"
        return (c, *out)
    if isinstance(node, AdaptivePool):
        assert len(shape) == 3
        return (shape[0], *node.out_hw)
    if isinstance(node, Flatten):
        assert len(shape) == 3
        return (shape[0] * shape[1] * shape[2],)
    raise AssertionError(f"unknown node {node!r}")


def _top(net):
    """Type names of the graph's top-level nodes."""
    return [type(n).__name__ for n in net.graph.nodes]


@pytest.mark.parametrize("name", NETWORKS)
def test_tables_are_derived_from_the_graph(nets, name):
    net = nets[name]
    assert isinstance(net.graph, Seq)
    leaves = list(walk(net.graph))
    assert not any(isinstance(n, (Seq, Residual, DenseConcat)) for n in leaves)
    assert net.layers == tuple(n.spec for n in leaves if isinstance(n, Conv))
    assert net.batchnorms == tuple(n.spec for n in leaves if isinstance(n, BatchNorm))
    # every node of the tree is reached by walk, containers aside
    assert len(leaves) == sum(1 for n in _all_nodes(net.graph)
                              if not isinstance(n, (Seq, Residual, DenseConcat)))


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("size", [None, 32, 61, 97])
def test_shapes_propagate_through_the_graph(name, size):
    if size == 32 and name == "densenet121":
        size = 29  # its minimum
    net = build_network(name, size)
    checked = []
    out = _propagate(net.graph, (3, net.image_size, net.image_size), checked)
    assert out == (net.num_classes,)
    assert sorted(checked) == sorted([lay.name for lay in net.layers]
                                     + [bn.name for bn in net.batchnorms])


@pytest.mark.parametrize("name", NETWORKS)
def test_nodes_are_frozen_and_hashable(nets, name):
    graph = nets[name].graph
    nodes = list(_all_nodes(graph))
    for node in nodes:
        assert isinstance(node, Node)
        assert dataclasses.is_dataclass(node) and type(node).__dataclass_params__.frozen
        hash(node)
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.nodes = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        next(n for n in nodes if isinstance(n, Conv)).spec = None
    again = build_network(name).graph
    assert again == graph and hash(again) == hash(graph) and again is not graph
    assert build_network(name).graph != build_network(name, num_classes=3).graph


def test_walk_order_and_containers():
    a, b, c, d = (ReLU(float(i + 1)) for i in range(4))
    g = Seq((a, Residual(Seq((b,)), Seq((c,))), DenseConcat(Seq((d,))), Flatten()))
    assert list(walk(g)) == [a, b, c, d, Flatten()]
    assert list(walk(Residual(Seq((b, c))))) == [b, c]
    assert list(walk(Flatten())) == [Flatten()]
    assert Seq([a, b]).nodes == (a, b)  # lists are frozen into tuples
    with pytest.raises(TypeError):
        Seq(("not a node",))
    with pytest.raises(TypeError):
        Residual((a,))


def test_node_validation():
    with pytest.raises(ValueError):
        Pool("min", 2, 2)
    with pytest.raises(ValueError):
        Pool("max", 3, 2, 2)  # padding over half the kernel: torch refuses
    with pytest.raises(ValueError):
        Dropout(1.0)
    with pytest.raises(ValueError):
        ReLU(0.0)
    with pytest.raises(ValueError):
        AdaptivePool((0, 1))
    with pytest.raises(ValueError):
        BatchNorm(BatchNormSpec("bn", 8, (2, 2), "fc"), flat=True)
    assert AdaptivePool([7, 7]).out_hw == (7, 7)
    assert Pool("avg", 2, 2).output_hw((7, 8)) == (3, 4)


def test_network_from_a_hand_made_graph_with_flat_batchnorm():
    from simulator.trace import LayerSpec
    graph = Seq((
        Conv(LayerSpec("c", "conv", 3, 8, 3, 2, 1, in_hw=(9, 9), out_hw=(5, 5))),
        BatchNorm(BatchNormSpec("bn2d", 8, (5, 5), "c")), ReLU(),
        AdaptivePool((2, 2)), Flatten(),
        Conv(LayerSpec("fc1", "fc", 32, 16, bias=True)),
        BatchNorm(BatchNormSpec("bn1d", 16, (1, 1), "fc1"), flat=True), ReLU(), Dropout(0.1),
        Conv(LayerSpec("fc2", "fc", 16, 4, bias=True)),
    ))
    net = Network("tiny", 9, 4, graph)
    assert [lay.name for lay in net.layers] == ["c", "fc1", "fc2"]
    assert [bn.name for bn in net.batchnorms] == ["bn2d", "bn1d"]
    assert net.param_count == 3 * 8 * 9 + 32 * 16 + 16 + 16 * 4 + 4 + 2 * (8 + 16)
    assert _propagate(graph, (3, 9, 9), []) == (4,)
    with pytest.raises(ValueError, match="duplicate"):
        Network("dup", 9, 4, Seq(graph.nodes + (BatchNorm(BatchNormSpec("c", 4, (1, 1), "fc2"),
                                                           flat=True),)))
    with pytest.raises(TypeError):
        Network("bare", 9, 4, graph.nodes)


# --- graphs: family details (what a model built node-for-node must reproduce) ------------------

@pytest.mark.parametrize("name, residuals, shortcuts", [
    ("resnet18", 8, 3), ("resnet50", 16, 4), ("resnet18-cifar", 8, 3), ("resnet50-cifar", 16, 4)])
def test_resnet_graph(nets, name, residuals, shortcuts):
    net = nets[name]
    top = net.graph.nodes
    if name.endswith("-cifar"):
        assert _top(net)[:4] == ["Conv", "BatchNorm", "ReLU", "Residual"]
        assert not any(isinstance(n, Pool) for n in walk(net.graph))
    else:
        assert _top(net)[:4] == ["Conv", "BatchNorm", "ReLU", "Pool"]
        assert top[3] == Pool("max", 3, 2, 1)
    blocks = [n for n in top if isinstance(n, Residual)]
    assert len(blocks) == residuals
    assert sum(b.shortcut is not None for b in blocks) == shortcuts
    for i, node in enumerate(top):
        if isinstance(node, Residual):
            assert top[i + 1] == ReLU()  # relu(main(x) + shortcut(x))
            assert isinstance(node.main.nodes[-1], BatchNorm)  # no ReLU before the sum
            if node.shortcut is not None:
                assert [type(n) for n in node.shortcut.nodes] == [Conv, BatchNorm]
    assert top[-3:-1] == (AdaptivePool((1, 1)), Flatten())
    assert top[-1].spec.name == "fc"
    assert all(r == ReLU() for r in walk(net.graph) if isinstance(r, ReLU))


@pytest.mark.parametrize("name", ["vgg16", "vgg16-bn"])
def test_vgg_graph(nets, name):
    net = nets[name]
    top = net.graph.nodes
    pools = [n for n in top if isinstance(n, Pool)]
    assert pools == [Pool("max", 2, 2)] * 5
    assert sum(isinstance(n, ReLU) for n in top) == 13 + 2
    assert not any(isinstance(n, (Residual, DenseConcat, Dropout)) for n in top[:-9])
    tail = top[-9:]
    assert tail[:2] == (AdaptivePool((7, 7)), Flatten())
    assert [type(n) for n in tail[2:]] == [Conv, ReLU, Dropout, Conv, ReLU, Dropout, Conv]
    assert tail[4] == tail[7] == Dropout(0.5)
    # conv [bn] relu, as torchvision's `features`
    for i, node in enumerate(top):
        if isinstance(node, Conv) and node.spec.kind == "conv":
            nxt = top[i + 1:i + 3] if name == "vgg16-bn" else top[i + 1:i + 2]
            assert [type(n) for n in nxt] == ([BatchNorm, ReLU] if name == "vgg16-bn" else [ReLU])


def test_mobilenet_v2_graph(nets):
    net = nets["mobilenet-v2"]
    relus = [n for n in walk(net.graph) if isinstance(n, ReLU)]
    assert relus and all(r == ReLU(6.0) for r in relus)
    assert len(relus) == 1 + 2 * 16 + 1 + 1  # stem, 2 per expanding block, 1 in block 1, last conv
    top = net.graph.nodes
    blocks = [n for n in top if isinstance(n, Residual)]
    assert len(blocks) == 10  # stride 1 and channels kept
    assert all(b.shortcut is None for b in blocks)
    for i, node in enumerate(top):
        if isinstance(node, Residual):
            assert isinstance(node.main.nodes[-1], BatchNorm)  # linear bottleneck
            assert not isinstance(top[i + 1], ReLU)  # nothing on the sum
    # projection conv + BN is never followed by an activation
    projections = {lay.name for lay in net.layers
                   if lay.kind == "conv" and lay.kernel == 1 and lay.name.count(".") == 3}
    assert len(projections) == 17
    leaves = list(walk(net.graph))
    for i, node in enumerate(leaves):
        if isinstance(node, Conv) and node.spec.name in projections:
            assert isinstance(leaves[i + 1], BatchNorm) and not isinstance(leaves[i + 2], ReLU)
    assert top[-4:-1] == (AdaptivePool((1, 1)), Flatten(), Dropout(0.2))
    assert top[-1].spec.name == "classifier.1"


def test_densenet121_graph(nets):
    net = nets["densenet121"]
    top = net.graph.nodes
    assert _top(net)[:4] == ["Conv", "BatchNorm", "ReLU", "Pool"] and top[3] == Pool("max", 3, 2, 1)
    layers = [n for n in top if isinstance(n, DenseConcat)]
    assert len(layers) == 6 + 12 + 24 + 16
    for layer in layers:
        assert [type(n) for n in layer.branch.nodes] == [BatchNorm, ReLU, Conv] * 2
    pools = [n for n in top if isinstance(n, Pool)]
    assert pools == [Pool("max", 3, 2, 1)] + [Pool("avg", 2, 2)] * 3  # transitions: avg pool
    for i, node in enumerate(top):
        if isinstance(node, Conv) and node.spec.name.endswith(".conv"):  # transition
            assert [type(n) for n in top[i - 2:i]] == [BatchNorm, ReLU]
            assert top[i + 1] == Pool("avg", 2, 2)
    assert [type(n) for n in top[-5:]] == [BatchNorm, ReLU, AdaptivePool, Flatten, Conv]
    assert top[-5].spec.name == "features.norm5" and top[-3] == AdaptivePool((1, 1))


def test_wrn_16_8_graph():
    net = build_network("wrn-16-8")
    top = net.graph.nodes
    assert _top(net)[0] == "Conv" and _top(net)[1] == "BatchNorm"  # no BN/ReLU on the stem
    changing = [i for i, n in enumerate(top) if isinstance(n, Residual) and n.shortcut is not None]
    assert len(changing) == 3
    for i in changing:  # shortcut conv reads relu(bn1(x)), computed once before the fork
        res = top[i]
        assert [type(n) for n in top[i - 2:i]] == [BatchNorm, ReLU]
        assert top[i - 2].spec.name.endswith(".layer.0.bn1")
        assert [type(n) for n in res.main.nodes] == [Conv, BatchNorm, ReLU, Conv]
        assert [type(n) for n in res.shortcut.nodes] == [Conv]
        assert res.shortcut.nodes[0].spec.name.endswith("convShortcut")
    identity = [n for n in top if isinstance(n, Residual) and n.shortcut is None]
    assert len(identity) == 3
    for res in identity:  # pre-activation inside the branch; the shortcut is x itself
        assert [type(n) for n in res.main.nodes] == [BatchNorm, ReLU, Conv, BatchNorm, ReLU, Conv]
    for i, node in enumerate(top):
        if isinstance(node, Residual):
            assert not isinstance(top[i + 1], ReLU)  # nothing on the sum
    assert [type(n) for n in top[-5:]] == [BatchNorm, ReLU, AdaptivePool, Flatten, Conv]
    assert top[-5].spec.name == "bn1" and top[-3] == AdaptivePool((1, 1))


def test_simple_cnn_for_fashion_mnist():
    net = build_network("simple-cnn")
    assert [l.name for l in net.layers] == ["conv1", "conv2", "fc1", "fc2"]
    assert net.layer("fc1").in_channels == 64 * 7 * 7
    # conv 3*32*9 + 32, conv 32*64*9 + 64, BN 2*(32+64), fc 3136*128+128, fc 128*10+10
    assert net.param_count == 864 + 18432 + 192 + 401408 + 128 + 1280 + 10
