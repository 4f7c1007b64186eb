"""The network zoo: the standard networks the accelerator is evaluated on, described once as graphs.

Each network is a tree of small frozen node dataclasses, `Network.graph` (a `Seq` from the
input image to the logits). The nodes map 1:1 onto torch modules, so a model built by
replacing every node with its module, in order, is exactly the reference network:

==============  =================================================================================
node            torch equivalent
==============  =================================================================================
`Conv`          ``nn.Conv2d`` (``spec.kind == "conv"``) or ``nn.Linear`` (``"fc"``), shaped by
                its `LayerSpec` (kernel, stride, padding, groups, bias)
`BatchNorm`     ``nn.BatchNorm2d`` over NCHW, or ``nn.BatchNorm1d`` over [N, C] when ``flat``
                (then ``spec.hw == (1, 1)``)
`ReLU`          ``nn.ReLU``; ``nn.ReLU6`` when ``cap == 6.0`` (in general ``min(max(x, 0), cap)``)
`Pool`          ``nn.MaxPool2d`` / ``nn.AvgPool2d`` (floor rounding; avg counts the padding)
`AdaptivePool`  ``nn.AdaptiveAvgPool2d(out_hw)``; ``(1, 1)`` is global average pooling
`Flatten`       ``torch.flatten(x, 1)``: [N, C, H, W] -> [N, C*H*W]
`Dropout`       ``nn.Dropout(p)``
`Seq`           its nodes one after the other
`Residual`      ``main(x) + (shortcut(x) if shortcut else x)``; nothing is applied to the sum
                (a ReLU after it is a separate node)
`DenseConcat`   ``torch.cat([x, branch(x)], dim=1)`` (a DenseNet layer)
==============  =================================================================================

`walk` yields the leaf nodes (everything but `Seq`, `Residual`, `DenseConcat`) in execution
order, a residual's main branch before its shortcut. The layer tables the simulator uses are
derived from it and nothing else: `Network.layers` is the `LayerSpec` of every `Conv` node and
`Network.batchnorms` the `BatchNormSpec` of every `BatchNorm` node, in `walk` order. So the
trainer (which builds its model from the graph) and the simulator (which reads the tables)
cannot disagree about a shape. Nothing here holds weights or activations; it is geometry only.

The ImageNet networks follow torchvision exactly (same layers, channel counts, strides,
padding, biases, activations, pooling and dropout), and layers are named like torchvision's
``state_dict`` module names ("conv1", "layer1.0.downsample.0", "features.0.0",
"classifier.1", ...), so parameter counts match torchvision's published numbers. The CIFAR
networks use a 3x3/1 stem with no max-pool (ResNets) or are the Wide ResNet of Zagoruyko &
Komodakis (wrn-16-8, after the reference implementation; its final 8x8 average pool is a
global average pool here, which is the same at 32x32 and keeps the fc size fixed elsewhere).

Spatial sizes are propagated from the input image through every node while the graph is
built (with torch's floor rounding), so each layer's ``in_hw`` / ``out_hw`` is right at any
image size; an image too small for the network (some spatial size would reach 0) is a
`ValueError` that names the minimum size.

Units: channel counts, spatial sizes, parameter counts (`param_count`) and tensor sizes
(`BatchNormSpec.elements`) are element counts; `macs` are dense multiply-accumulates of the
forward pass of the conv and fc layers (batch norm, pooling and additions are not counted).

Batch-norm convention (`BatchNormSpec.after`): the name of the conv/fc layer whose output
the BN normalises, i.e. the conv/fc that most recently produced (part of) the tensor the BN
reads, where after a `Residual` that is the last conv of its *main* branch and after a
`DenseConcat` the last conv of its branch. In post-activation networks (ResNet, VGG-BN,
MobileNetV2) that is simply the conv right before the BN. Elsewhere:

* DenseNet (BN-ReLU-conv): a dense layer's ``norm1`` reads the concatenation of the block
  input and all earlier dense layers' outputs; ``after`` is the conv whose output joined
  that concatenation last (the previous dense layer's ``conv2``, or for a block's first
  dense layer the preceding transition ``conv`` / the stem ``conv0``, whose output is then
  pooled). ``transition*.norm`` and ``norm5`` likewise point at the last dense layer's ``conv2``.
* Wide ResNet (pre-activation): a block's ``bn1`` reads the previous block's output
  (residual sum); ``after`` is the previous block's residual-branch ``conv2`` (the stem
  ``conv1`` for the very first block), not its ``convShortcut``. The final ``bn1`` points at
  the last block's ``conv2``.

In every case ``hw`` and ``channels`` describe the tensor actually normalised, which may
differ from the ``after`` layer's output (concatenated channels, pooling in between).
"""

from __future__ import annotations

from typing import Callable

from simulator.trace import LayerSpec, conv_output_size

from .graph import (POOL_KINDS, AdaptivePool, BatchNorm, BatchNormSpec, Conv, DenseConcat, Dropout,  # noqa: F401
                    Flatten, Network, Node, Pool, ReLU, Residual, Seq, walk)

__all__ = [
    "BatchNormSpec", "Network", "NETWORKS", "build_network",
    "Node", "Conv", "BatchNorm", "ReLU", "Pool", "AdaptivePool", "Flatten", "Dropout",
    "Seq", "Residual", "DenseConcat", "walk", "POOL_KINDS",
]


# --- graph builder -----------------------------------------------------------------------------

class _TooSmall(ValueError):
    """Internal: a spatial size reached 0 while building."""


class _Builder:
    """Appends nodes to a sequence while tracking the tensor they produce.

    The tensor is `channels` x `hw` (NCHW), or `channels` flat features after `flatten`.
    `last` is the most recent conv/fc (the default `BatchNormSpec.after`). Every method
    returns the builder, so a conv-BN-ReLU reads ``b.conv(...).bn(...).relu()``. Branches
    (`Residual`, `DenseConcat`) are built on `fork()`s and joined with `residual` / `concat`.
    """

    def __init__(self, channels: int, hw: tuple[int, int], flat: bool = False, last: str = ""):
        self.nodes: list[Node] = []
        self.channels, self.hw, self.flat, self.last = channels, hw, flat, last

    @property
    def shape(self) -> tuple:
        return (self.channels,) if self.flat else (self.channels, *self.hw)

    def fork(self) -> _Builder:
        """An empty builder for a branch reading the current tensor."""
        return _Builder(self.channels, self.hw, self.flat, self.last)

    def seq(self) -> Seq:
        return Seq(tuple(self.nodes))

    def _add(self, node: Node) -> _Builder:
        self.nodes.append(node)
        return self

    def _need_spatial(self, what: str) -> None:
        if self.flat:
            raise ValueError(f"{what} needs an NCHW tensor, but the tensor is flat here")

    @staticmethod
    def _shrink(hw, kernel, stride, padding, where) -> tuple[int, int]:
        out = tuple(conv_output_size(v, kernel, stride, padding, 1) for v in hw)
        if min(out) < 1:
            raise _TooSmall(f"{where}: spatial size {hw} -> {out}")
        return out

    def conv(self, name, out_channels, kernel, stride=1, padding=0, groups=1, bias=False):
        self._need_spatial(name)
        out_hw = self._shrink(self.hw, kernel, stride, padding, name)
        spec = LayerSpec(name, "conv", self.channels, out_channels, kernel, stride, padding,
                         groups=groups, in_hw=self.hw, out_hw=out_hw, bias=bias)
        self.channels, self.hw, self.last = out_channels, out_hw, name
        return self._add(Conv(spec))

    def fc(self, name, out_features):
        """A fully connected layer (with bias) reading the flat tensor."""
        if not self.flat:
            raise ValueError(f"{name}: an fc layer reads a flat tensor; flatten first")
        spec = LayerSpec(name, "fc", self.channels, out_features, bias=True)
        self.channels, self.last = out_features, name
        return self._add(Conv(spec))

    def bn(self, name):
        """Batch norm over the current tensor, after the most recent conv/fc."""
        return self._add(BatchNorm(BatchNormSpec(name, self.channels, self.hw, self.last),
                                   flat=self.flat))

    def relu(self, cap=None):
        return self._add(ReLU(cap))

    def dropout(self, p):
        return self._add(Dropout(p))

    def pool(self, kind, kernel, stride, padding=0, where="pool"):
        """Max or average pooling; `where` only names the place in a too-small error."""
        self._need_spatial(where)
        node = Pool(kind, kernel, stride, padding)
        self.hw = self._shrink(self.hw, kernel, stride, padding, where)
        return self._add(node)

    def adaptive_pool(self, out_hw):
        self._need_spatial("adaptive pool")
        self.hw = tuple(out_hw)
        return self._add(AdaptivePool(out_hw))

    def flatten(self):
        self._need_spatial("flatten")
        self.channels, self.hw, self.flat = self.channels * self.hw[0] * self.hw[1], (1, 1), True
        return self._add(Flatten())

    def residual(self, main: _Builder, shortcut: _Builder | None = None):
        """Join `main(x) + shortcut(x)` (identity if None); both are forks of this builder."""
        other = self.shape if shortcut is None else shortcut.shape
        if main.shape != other:
            raise ValueError(f"residual branches disagree: {main.shape} vs {other} (after "
                             f"{main.last})")
        self.channels, self.hw, self.flat, self.last = main.channels, main.hw, main.flat, main.last
        return self._add(Residual(main.seq(), None if shortcut is None else shortcut.seq()))

    def concat(self, branch: _Builder):
        """Join `concat([x, branch(x)])` along channels; `branch` is a fork of this builder."""
        if self.flat or branch.flat or branch.hw != self.hw:
            raise ValueError(f"cannot concatenate {self.shape} and {branch.shape} along channels "
                             f"(after {branch.last})")
        self.channels, self.last = self.channels + branch.channels, branch.last
        return self._add(DenseConcat(branch.seq()))


def _classifier(b: _Builder, name: str, num_classes: int, dropout: float | None = None) -> None:
    """Global average pool, flatten, [dropout,] fc (ResNet, WRN, DenseNet, MobileNetV2)."""
    b.adaptive_pool((1, 1)).flatten()
    if dropout is not None:
        b.dropout(dropout)
    b.fc(name, num_classes)


# --- ResNet (torchvision; v1.5 bottleneck with the stride on the 3x3 conv) -----------------

def _resnet_block(b: _Builder, p: str, bottleneck: bool, planes: int, stride: int) -> None:
    """relu(main(x) + shortcut(x)); the shortcut is a 1x1 conv + BN where the shape changes."""
    out_channels = planes * (4 if bottleneck else 1)
    main = b.fork()
    if bottleneck:
        main.conv(f"{p}.conv1", planes, 1).bn(f"{p}.bn1").relu()
        main.conv(f"{p}.conv2", planes, 3, stride, 1).bn(f"{p}.bn2").relu()
        main.conv(f"{p}.conv3", out_channels, 1).bn(f"{p}.bn3")
    else:
        main.conv(f"{p}.conv1", planes, 3, stride, 1).bn(f"{p}.bn1").relu()
        main.conv(f"{p}.conv2", planes, 3, 1, 1).bn(f"{p}.bn2")
    shortcut = None
    if stride != 1 or b.channels != out_channels:
        shortcut = b.fork().conv(f"{p}.downsample.0", out_channels, 1, stride) \
                           .bn(f"{p}.downsample.1")
    b.residual(main, shortcut).relu()


def _resnet(b: _Builder, num_classes: int, bottleneck: bool, counts: tuple[int, ...],
            cifar: bool) -> None:
    if cifar:  # 3x3/1 stem, no max-pool
        b.conv("conv1", 64, 3, 1, 1).bn("bn1").relu()
    else:
        b.conv("conv1", 64, 7, 2, 3).bn("bn1").relu().pool("max", 3, 2, 1, "maxpool")
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), counts), start=1):
        for i in range(count):
            _resnet_block(b, f"layer{stage}.{i}", bottleneck, planes,
                          2 if stage > 1 and i == 0 else 1)
    _classifier(b, "fc", num_classes)


def _resnet_builder(block: str, counts: tuple[int, ...], cifar: bool) -> Callable:
    return lambda b, k: _resnet(b, k, block == "bottleneck", counts, cifar)


# --- VGG-16 (torchvision vgg16 / vgg16_bn, configuration "D") --------------------------------

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M")


def _vgg16(b: _Builder, num_classes: int, batch_norm: bool) -> None:
    idx = 0  # index into torchvision's `features` Sequential (conv, [bn], relu, ..., maxpool)
    for v in _VGG16_CFG:
        if v == "M":
            b.pool("max", 2, 2, 0, f"features.{idx}")
            idx += 1
            continue
        b.conv(f"features.{idx}", v, 3, 1, 1, bias=True)
        idx += 1
        if batch_norm:
            b.bn(f"features.{idx}")
            idx += 1
        b.relu()
        idx += 1
    # AdaptiveAvgPool2d((7, 7)): the classifier always sees 512 x 7 x 7, whatever the image size.
    b.adaptive_pool((7, 7)).flatten()
    b.fc("classifier.0", 4096).relu().dropout(0.5)  # classifier.1 / .2
    b.fc("classifier.3", 4096).relu().dropout(0.5)  # classifier.4 / .5
    b.fc("classifier.6", num_classes)


# --- A small CNN (the trainer's quick accuracy check on Fashion-MNIST) -----------------------

def _simple_cnn(b: _Builder, num_classes: int) -> None:
    """conv3x3(32)-BN-ReLU-maxpool, conv3x3(64)-BN-ReLU-maxpool, fc(128)-ReLU, fc."""
    b.conv("conv1", 32, 3, 1, 1).bn("bn1").relu().pool("max", 2, 2, 0, "pool1")
    b.conv("conv2", 64, 3, 1, 1).bn("bn2").relu().pool("max", 2, 2, 0, "pool2")
    b.flatten().fc("fc1", 128).relu().fc("fc2", num_classes)


# --- Wide ResNet 16-8 (Zagoruyko & Komodakis, pre-activation, CIFAR) ------------------------

def _wrn_block(b: _Builder, p: str, channels: int, stride: int) -> None:
    """Pre-activation block: x + conv2(relu(bn2(conv1(relu(bn1(x)))))).

    Where the channel count changes, relu(bn1(x)) is computed once, before the fork, and
    feeds both the branch and the 1x1 ``convShortcut`` (as the reference implementation);
    otherwise the shortcut is the identity on x and bn1/relu sit inside the branch.
    """
    shared_preact = b.channels != channels
    if shared_preact:
        b.bn(f"{p}.bn1").relu()
    main = b.fork()
    if not shared_preact:
        main.bn(f"{p}.bn1").relu()
    main.conv(f"{p}.conv1", channels, 3, stride, 1).bn(f"{p}.bn2").relu()
    main.conv(f"{p}.conv2", channels, 3, 1, 1)
    shortcut = b.fork().conv(f"{p}.convShortcut", channels, 1, stride) if shared_preact else None
    b.residual(main, shortcut)  # no activation on the sum


def _wide_resnet(b: _Builder, num_classes: int, depth: int = 16, width: int = 8) -> None:
    blocks_per_group = (depth - 4) // 6
    b.conv("conv1", 16, 3, 1, 1)  # no BN/ReLU on the stem: the first block's bn1 does that
    for group, (channels, stride) in enumerate(zip((16 * width, 32 * width, 64 * width), (1, 2, 2)),
                                               start=1):
        for i in range(blocks_per_group):
            _wrn_block(b, f"block{group}.layer.{i}", channels, stride if i == 0 else 1)
    b.bn("bn1").relu()
    _classifier(b, "fc", num_classes)


# --- DenseNet-121 (torchvision) --------------------------------------------------------------

def _densenet(b: _Builder, num_classes: int, growth: int = 32, blocks=(6, 12, 24, 16),
              init_features: int = 64, bn_size: int = 4) -> None:
    b.conv("features.conv0", init_features, 7, 2, 3).bn("features.norm0").relu()
    b.pool("max", 3, 2, 1, "features.pool0")
    for bi, n in enumerate(blocks, start=1):
        for li in range(1, n + 1):  # x -> concat([x, conv2(relu(norm2(conv1(relu(norm1(x))))))])
            p = f"features.denseblock{bi}.denselayer{li}"
            layer = b.fork()
            layer.bn(f"{p}.norm1").relu().conv(f"{p}.conv1", bn_size * growth, 1)
            layer.bn(f"{p}.norm2").relu().conv(f"{p}.conv2", growth, 3, 1, 1)
            b.concat(layer)
        if bi < len(blocks):
            p = f"features.transition{bi}"
            out_channels = b.channels // 2
            b.bn(f"{p}.norm").relu().conv(f"{p}.conv", out_channels, 1)
            b.pool("avg", 2, 2, 0, f"{p}.pool")
    b.bn("features.norm5").relu()
    _classifier(b, "classifier", num_classes)


# --- MobileNetV2 (torchvision, width 1.0) ----------------------------------------------------

_MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # t, c, n, s


def _inverted_residual(b: _Builder, p: str, t: int, out_channels: int, stride: int) -> None:
    """[1x1 expand-BN-ReLU6,] 3x3 depthwise-BN-ReLU6, 1x1 linear projection-BN (no activation);
    a Residual (identity shortcut) when stride 1 and the channel count is kept."""
    hidden = b.channels * t
    use_residual = stride == 1 and b.channels == out_channels
    blk = b.fork() if use_residual else b
    j = 0
    if t != 1:  # pointwise expansion
        blk.conv(f"{p}.0.0", hidden, 1).bn(f"{p}.0.1").relu(6.0)
        j = 1
    blk.conv(f"{p}.{j}.0", hidden, 3, stride, 1, groups=hidden).bn(f"{p}.{j}.1").relu(6.0)
    blk.conv(f"{p}.{j + 1}", out_channels, 1).bn(f"{p}.{j + 2}")
    if use_residual:
        b.residual(blk)


def _mobilenet_v2(b: _Builder, num_classes: int) -> None:
    b.conv("features.0.0", 32, 3, 2, 1).bn("features.0.1").relu(6.0)
    idx = 1
    for t, c, n, s in _MOBILENET_V2_SETTINGS:
        for i in range(n):
            _inverted_residual(b, f"features.{idx}.conv", t, c, s if i == 0 else 1)
            idx += 1
    b.conv(f"features.{idx}.0", 1280, 1).bn(f"features.{idx}.1").relu(6.0)
    _classifier(b, "classifier.1", num_classes, dropout=0.2)  # classifier.0 is Dropout(0.2)


# --- registry ----------------------------------------------------------------------------------

_IMAGENET = (224, 1000)
_CIFAR = (32, 10)

# name -> (builder(b, num_classes), (default image size, default number of classes))
_REGISTRY: dict[str, tuple[Callable, tuple[int, int]]] = {
    "resnet18": (_resnet_builder("basic", (2, 2, 2, 2), cifar=False), _IMAGENET),
    "resnet34": (_resnet_builder("basic", (3, 4, 6, 3), cifar=False), _IMAGENET),
    "resnet50": (_resnet_builder("bottleneck", (3, 4, 6, 3), cifar=False), _IMAGENET),
    "resnet18-cifar": (_resnet_builder("basic", (2, 2, 2, 2), cifar=True), _CIFAR),
    "resnet34-cifar": (_resnet_builder("basic", (3, 4, 6, 3), cifar=True), _CIFAR),
    "resnet50-cifar": (_resnet_builder("bottleneck", (3, 4, 6, 3), cifar=True), _CIFAR),
    "vgg16": (lambda b, k: _vgg16(b, k, batch_norm=False), _IMAGENET),
    "vgg16-bn": (lambda b, k: _vgg16(b, k, batch_norm=True), _IMAGENET),
    "wrn-16-8": (_wide_resnet, _CIFAR),
    "simple-cnn": (_simple_cnn, (28, 10)),
    "densenet121": (_densenet, _IMAGENET),
    "mobilenet-v2": (_mobilenet_v2, _IMAGENET),
}

NETWORKS: tuple[str, ...] = tuple(_REGISTRY)


def _build(name: str, image_size: int, num_classes: int) -> Network:
    builder, _ = _REGISTRY[name]
    b = _Builder(3, (image_size, image_size))
    builder(b, num_classes)
    return Network(name, image_size, num_classes, b.seq())


def _min_image_size(name: str, start: int) -> int:
    """Smallest image size >= `start` at which no spatial size reaches 0."""
    size = start
    while True:
        try:
            _build(name, size, 1)
            return size
        except _TooSmall:
            size += 1


def _check_positive_int(what: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def build_network(name: str, image_size: int | None = None,
                  num_classes: int | None = None) -> Network:
    """Graph and layer shapes of network `name` for square `image_size` inputs and
    `num_classes` outputs.

    Defaults are 224 / 1000 for the ImageNet networks and 32 / 10 for the CIFAR ones
    (``*-cifar``, ``wrn-16-8``). Raises ValueError for an unknown name (listing `NETWORKS`)
    or an image too small for the network (naming the minimum size).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown network {name!r}; valid names: {', '.join(NETWORKS)}")
    default_size, default_classes = _REGISTRY[name][1]
    image_size = _check_positive_int("image_size",
                                     default_size if image_size is None else image_size)
    num_classes = _check_positive_int("num_classes",
                                      default_classes if num_classes is None else num_classes)
    try:
        return _build(name, image_size, num_classes)
    except _TooSmall as e:
        minimum = _min_image_size(name, image_size + 1)
        raise ValueError(f"image_size {image_size} is too small for {name} (at {e}); "
                         f"the minimum image size is {minimum}") from None
