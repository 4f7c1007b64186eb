"""The network zoo: layer shapes of the standard networks the accelerator is evaluated on.

A `Network` is the sequence of conv and fc layers (`simulator.trace.LayerSpec`) of one
network in execution order, plus its batch-norm layers (`BatchNormSpec`), for one input
image size. Nothing here holds weights or activations; it is geometry only, and the
synthetic workloads and the trainer fill the tensors in.

The ImageNet networks follow torchvision exactly (same layers, channel counts, strides,
padding and biases), and layers are named like torchvision's ``state_dict`` module names
("conv1", "layer1.0.downsample.0", "features.0.0", "classifier.1", ...), so parameter
counts match torchvision's published numbers. The CIFAR networks use a 3x3/1 stem with no
max-pool (ResNets) or the Wide ResNet of Zagoruyko & Komodakis (wrn-16-8).

Spatial sizes are propagated from the input image through every convolution and pooling
layer (with torchvision's floor rounding), so each layer's ``in_hw`` / ``out_hw`` is right at
any image size; an image too small for the network (some spatial size would reach 0) is a
`ValueError` that names the minimum size. Pooling, ReLU, dropout, residual additions and
concatenations have no parameters and are not listed as layers; they only shape the
tensors between layers.

Units: channel counts, spatial sizes, parameter counts (`param_count`) and tensor sizes
(`BatchNormSpec.elements`) are element counts; `macs` are dense multiply-accumulates of the
forward pass of the conv and fc layers (batch norm, pooling and additions are not counted).

Batch-norm convention (`BatchNormSpec.after`): the name of the conv/fc layer whose output
the BN normalises. In post-activation networks (ResNet, VGG-BN, MobileNetV2) that is simply
the conv right before it. Where a BN reads a tensor that is not a single conv's output:

* DenseNet (BN-ReLU-conv): a dense layer's ``norm1`` reads the concatenation of the block
  input and all earlier dense layers' outputs; ``after`` is the conv whose output joined
  that concatenation last, i.e. the most recently executed conv (the previous dense layer's
  ``conv2``, or for a block's first dense layer the preceding transition ``conv`` / the stem
  ``conv0``, whose output is then pooled). ``transition*.norm`` and ``norm5`` likewise point
  at the last dense layer's ``conv2``.
* Wide ResNet (pre-activation): a block's ``bn1`` reads the previous block's output
  (residual sum); ``after`` is the previous block's residual-branch ``conv2`` (the stem
  ``conv1`` for the very first block). The final ``bn1`` points at the last block's ``conv2``.

In every case ``hw`` and ``channels`` describe the tensor actually normalised, which may
differ from the ``after`` layer's output (concatenated channels, pooling in between).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from simulator.trace import LayerSpec, conv_output_size

__all__ = ["BatchNormSpec", "Network", "NETWORKS", "build_network"]


@dataclass(frozen=True)
class BatchNormSpec:
    """One batch-norm layer: `channels` features over a `hw` (height, width) map, in elements.

    `after` names the conv/fc layer whose output it normalises (see the module docstring for
    pre-activation networks).
    """

    name: str
    channels: int
    hw: tuple[int, int]
    after: str

    @property
    def param_count(self) -> int:
        """Learnable parameters (gamma and beta), in elements; running statistics excluded."""
        return 2 * self.channels

    def elements(self, batch: int = 1) -> int:
        """Elements of the normalised tensor for `batch` samples."""
        return batch * self.channels * self.hw[0] * self.hw[1]


@dataclass(frozen=True)
class Network:
    """A network's conv/fc layers in execution order and its batch-norm layers."""

    name: str
    image_size: int
    num_classes: int
    layers: tuple[LayerSpec, ...]
    batchnorms: tuple[BatchNormSpec, ...]

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "batchnorms", tuple(self.batchnorms))
        names = [lay.name for lay in self.layers] + [bn.name for bn in self.batchnorms]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"network {self.name}: duplicate layer names {dup}")

    @property
    def param_count(self) -> int:
        """Parameters in elements: conv/fc weights and biases plus BN gamma and beta."""
        return (sum(lay.param_count for lay in self.layers)
                + sum(bn.param_count for bn in self.batchnorms))

    def macs(self, batch: int = 1) -> int:
        """Dense forward-pass multiply-accumulates of all conv and fc layers for `batch` samples."""
        return sum(lay.macs(batch) for lay in self.layers)

    def layer(self, name: str) -> LayerSpec:
        """The conv/fc layer called `name`; KeyError if there is none."""
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(f"network {self.name} has no conv/fc layer {name!r}")

    @property
    def first_conv(self) -> str:
        """Name of the first conv layer (the one that reads the image)."""
        for lay in self.layers:
            if lay.kind == "conv":
                return lay.name
        raise ValueError(f"network {self.name} has no conv layer")


class _TooSmall(ValueError):
    """Internal: a spatial size reached 0 while building."""


class _Builder:
    """Tracks the current tensor (channels, spatial size) while layers are appended."""

    def __init__(self, image_size: int, channels: int = 3):
        self.layers: list[LayerSpec] = []
        self.batchnorms: list[BatchNormSpec] = []
        self.channels = channels
        self.hw = (image_size, image_size)
        self.last = ""  # most recently appended conv/fc layer

    @staticmethod
    def _shrink(hw, kernel, stride, padding, where):
        out = tuple(conv_output_size(v, kernel, stride, padding, 1) for v in hw)
        if min(out) < 1:
            raise _TooSmall(f"{where}: spatial size {hw} -> {out}")
        return out

    def conv(self, name, out_channels, kernel, stride=1, padding=0, groups=1, bias=False,
             in_channels=None, in_hw=None) -> LayerSpec:
        """Append a conv reading the current tensor (or `in_channels` x `in_hw` if given)."""
        in_channels = self.channels if in_channels is None else in_channels
        in_hw = self.hw if in_hw is None else in_hw
        out_hw = self._shrink(in_hw, kernel, stride, padding, name)
        spec = LayerSpec(name, "conv", in_channels, out_channels, kernel, stride, padding,
                         groups=groups, in_hw=in_hw, out_hw=out_hw, bias=bias)
        self.layers.append(spec)
        self.channels, self.hw, self.last = out_channels, out_hw, name
        return spec

    def fc(self, name, out_features, in_features=None) -> LayerSpec:
        """Append a fully connected layer (with bias) reading the flattened current tensor."""
        if in_features is None:
            in_features = self.channels * self.hw[0] * self.hw[1]
        spec = LayerSpec(name, "fc", in_features, out_features, bias=True)
        self.layers.append(spec)
        self.channels, self.hw, self.last = out_features, (1, 1), name
        return spec

    def bn(self, name, after=None) -> None:
        """Append a BN over the current tensor; `after` defaults to the last conv/fc layer."""
        self.batchnorms.append(BatchNormSpec(name, self.channels, self.hw,
                                             self.last if after is None else after))

    def pool(self, kernel, stride, padding=0, where="pool") -> None:
        """Max or average pooling (same geometry), floor rounding as torch's default."""
        self.hw = self._shrink(self.hw, kernel, stride, padding, where)

    def global_pool(self) -> None:
        self.hw = (1, 1)

    def network(self, name, image_size, num_classes) -> Network:
        return Network(name, image_size, num_classes, tuple(self.layers), tuple(self.batchnorms))


# --- ResNet (torchvision; v1.5 bottleneck with the stride on the 3x3 conv) -----------------

def _resnet(b: _Builder, block: str, counts: tuple[int, ...], num_classes: int,
            cifar: bool) -> None:
    if cifar:
        b.conv("conv1", 64, 3, 1, 1)
        b.bn("bn1")
    else:
        b.conv("conv1", 64, 7, 2, 3)
        b.bn("bn1")
        b.pool(3, 2, 1, "maxpool")
    expansion = 1 if block == "basic" else 4
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), counts), start=1):
        for i in range(count):
            p = f"layer{stage}.{i}"
            stride = 2 if stage > 1 and i == 0 else 1
            in_channels, in_hw = b.channels, b.hw
            if block == "basic":
                b.conv(f"{p}.conv1", planes, 3, stride, 1)
                b.bn(f"{p}.bn1")
                b.conv(f"{p}.conv2", planes, 3, 1, 1)
                b.bn(f"{p}.bn2")
            else:
                b.conv(f"{p}.conv1", planes, 1)
                b.bn(f"{p}.bn1")
                b.conv(f"{p}.conv2", planes, 3, stride, 1)
                b.bn(f"{p}.bn2")
                b.conv(f"{p}.conv3", planes * expansion, 1)
                b.bn(f"{p}.bn3")
            if stride != 1 or in_channels != planes * expansion:
                b.conv(f"{p}.downsample.0", planes * expansion, 1, stride,
                       in_channels=in_channels, in_hw=in_hw)
                b.bn(f"{p}.downsample.1")
    b.global_pool()
    b.fc("fc", num_classes)


def _resnet_builder(block: str, counts: tuple[int, ...], cifar: bool) -> Callable:
    return lambda b, num_classes: _resnet(b, block, counts, num_classes, cifar)


# --- VGG-16 (torchvision vgg16 / vgg16_bn, configuration "D") --------------------------------

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M")


def _vgg16(b: _Builder, num_classes: int, batch_norm: bool) -> None:
    idx = 0  # index into torchvision's `features` Sequential (conv, [bn], relu, ..., maxpool)
    for v in _VGG16_CFG:
        if v == "M":
            b.pool(2, 2, 0, f"features.{idx}")
            idx += 1
            continue
        b.conv(f"features.{idx}", v, 3, 1, 1, bias=True)
        idx += 1
        if batch_norm:
            b.bn(f"features.{idx}")
            idx += 1
        idx += 1  # ReLU
    # AdaptiveAvgPool2d((7, 7)): the classifier always sees 512 x 7 x 7, whatever the image size.
    b.fc("classifier.0", 4096, in_features=b.channels * 7 * 7)
    b.fc("classifier.3", 4096)  # classifier.1/.2/.4/.5 are ReLU and Dropout
    b.fc("classifier.6", num_classes)


# --- Wide ResNet 16-8 (Zagoruyko & Komodakis, pre-activation, CIFAR) ------------------------

def _wide_resnet(b: _Builder, num_classes: int, depth: int = 16, width: int = 8) -> None:
    blocks_per_group = (depth - 4) // 6
    b.conv("conv1", 16, 3, 1, 1)
    residual_out = "conv1"  # conv whose output (plus shortcut) the next block's bn1 reads
    for group, (channels, stride) in enumerate(zip((16 * width, 32 * width, 64 * width), (1, 2, 2)),
                                               start=1):
        for i in range(blocks_per_group):
            p = f"block{group}.layer.{i}"
            s = stride if i == 0 else 1
            in_channels, in_hw = b.channels, b.hw
            b.bn(f"{p}.bn1", after=residual_out)
            b.conv(f"{p}.conv1", channels, 3, s, 1)
            b.bn(f"{p}.bn2")
            b.conv(f"{p}.conv2", channels, 3, 1, 1)
            residual_out = f"{p}.conv2"
            if in_channels != channels:  # shortcut reads relu(bn1(x)), after the residual branch
                b.conv(f"{p}.convShortcut", channels, 1, s, in_channels=in_channels, in_hw=in_hw)
    b.bn("bn1", after=residual_out)
    b.global_pool()
    b.fc("fc", num_classes)


# --- DenseNet-121 (torchvision) --------------------------------------------------------------

def _densenet(b: _Builder, num_classes: int, growth: int = 32, blocks=(6, 12, 24, 16),
              init_features: int = 64, bn_size: int = 4) -> None:
    b.conv("features.conv0", init_features, 7, 2, 3)
    b.bn("features.norm0")
    b.pool(3, 2, 1, "features.pool0")
    for bi, n in enumerate(blocks, start=1):
        for li in range(1, n + 1):
            p = f"features.denseblock{bi}.denselayer{li}"
            concat = b.channels  # block input plus all earlier dense layers' outputs
            b.bn(f"{p}.norm1")
            b.conv(f"{p}.conv1", bn_size * growth, 1)
            b.bn(f"{p}.norm2")
            b.conv(f"{p}.conv2", growth, 3, 1, 1)
            b.channels = concat + growth
        if bi < len(blocks):
            p = f"features.transition{bi}"
            b.bn(f"{p}.norm")
            b.conv(f"{p}.conv", b.channels // 2, 1)
            b.pool(2, 2, 0, f"{p}.pool")
    b.bn("features.norm5")
    b.global_pool()
    b.fc("classifier", num_classes)


# --- MobileNetV2 (torchvision, width 1.0) ----------------------------------------------------

_MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # t, c, n, s


def _mobilenet_v2(b: _Builder, num_classes: int) -> None:
    b.conv("features.0.0", 32, 3, 2, 1)
    b.bn("features.0.1")
    idx = 1
    for t, c, n, s in _MOBILENET_V2_SETTINGS:
        for i in range(n):
            p = f"features.{idx}.conv"
            hidden = b.channels * t
            j = 0
            if t != 1:  # pointwise expansion
                b.conv(f"{p}.0.0", hidden, 1)
                b.bn(f"{p}.0.1")
                j = 1
            b.conv(f"{p}.{j}.0", hidden, 3, s if i == 0 else 1, 1, groups=hidden)  # depthwise
            b.bn(f"{p}.{j}.1")
            b.conv(f"{p}.{j + 1}", c, 1)  # pointwise linear projection
            b.bn(f"{p}.{j + 2}")
            idx += 1
    b.conv(f"features.{idx}.0", 1280, 1)
    b.bn(f"features.{idx}.1")
    b.global_pool()
    b.fc("classifier.1", num_classes)  # classifier.0 is Dropout


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
    "densenet121": (_densenet, _IMAGENET),
    "mobilenet-v2": (_mobilenet_v2, _IMAGENET),
}

NETWORKS: tuple[str, ...] = tuple(_REGISTRY)


def _build(name: str, image_size: int, num_classes: int) -> Network:
    builder, _ = _REGISTRY[name]
    b = _Builder(image_size)
    builder(b, num_classes)
    return b.network(name, image_size, num_classes)


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
    """Layer shapes of network `name` for square `image_size` inputs and `num_classes` outputs.

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
