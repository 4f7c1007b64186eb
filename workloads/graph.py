"""The graph a network is described with: frozen node dataclasses, `walk`, and `Network`.

The nodes (`Conv`, `BatchNorm`, `ReLU`, `Pool`, `AdaptivePool`, `Flatten`, `Dropout`,
`Seq`, `Residual`, `DenseConcat`) map 1:1 onto torch modules, and `Network` derives the
conv/fc and batch-norm layer tables from its graph; `workloads.networks` (which
re-exports all of this) describes the conventions and builds the zoo. Geometry only:
nothing here holds weights or activations. Units: elements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from simulator.trace import LayerSpec, conv_output_size

POOL_KINDS = ("max", "avg")


@dataclass(frozen=True)
class BatchNormSpec:
    """One batch-norm layer: `channels` features over a `hw` (height, width) map, in elements.

    `after` names the conv/fc layer whose output it normalises (see the module docstring for
    pre-activation networks). A BN over a flat [N, C] tensor has ``hw == (1, 1)``.
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


# --- graph nodes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Conv:
    """A conv (``spec.kind == "conv"``, NCHW in and out) or fc (``"fc"``, [N, C]) layer."""

    spec: LayerSpec

    def __post_init__(self):
        if not isinstance(self.spec, LayerSpec):
            raise TypeError(f"Conv needs a LayerSpec, got {type(self.spec).__name__}")


@dataclass(frozen=True)
class BatchNorm:
    """Batch norm over NCHW (2d), or over a flat [N, C] tensor when `flat` (1d; then
    ``spec.hw == (1, 1)``)."""

    spec: BatchNormSpec
    flat: bool = False

    def __post_init__(self):
        if not isinstance(self.spec, BatchNormSpec):
            raise TypeError(f"BatchNorm needs a BatchNormSpec, got {type(self.spec).__name__}")
        if self.flat and tuple(self.spec.hw) != (1, 1):
            raise ValueError(f"{self.spec.name}: a flat (1d) batch norm has hw (1, 1), "
                             f"got {self.spec.hw}")


@dataclass(frozen=True)
class ReLU:
    """max(x, 0), clipped at `cap` if given (``cap == 6.0`` is ReLU6)."""

    cap: float | None = None

    def __post_init__(self):
        if self.cap is not None and not self.cap > 0:
            raise ValueError(f"ReLU cap must be positive, got {self.cap!r}")


@dataclass(frozen=True)
class Pool:
    """Max or average pooling over NCHW with torch semantics: floor rounding, and average
    pooling counts padded zeros (``count_include_pad=True``)."""

    kind: str
    kernel: int
    stride: int
    padding: int = 0

    def __post_init__(self):
        if self.kind not in POOL_KINDS:
            raise ValueError(f"pool kind must be one of {POOL_KINDS}, got {self.kind!r}")
        if self.kernel < 1 or self.stride < 1 or not 0 <= self.padding <= self.kernel // 2:
            raise ValueError(f"bad pool geometry kernel={self.kernel} stride={self.stride} "
                             f"padding={self.padding}")

    def output_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        """Output (height, width) for an input of `hw` (may be < 1 when the input is too small)."""
        return tuple(conv_output_size(v, self.kernel, self.stride, self.padding, 1) for v in hw)


@dataclass(frozen=True)
class AdaptivePool:
    """Adaptive average pooling to `out_hw` whatever the input size; (1, 1) is global pooling."""

    out_hw: tuple[int, int]

    def __post_init__(self):
        object.__setattr__(self, "out_hw", tuple(self.out_hw))
        if len(self.out_hw) != 2 or min(self.out_hw) < 1:
            raise ValueError(f"AdaptivePool out_hw must be two positive sizes, got {self.out_hw}")


@dataclass(frozen=True)
class Flatten:
    """[N, C, H, W] -> [N, C*H*W] (channel-major, as ``torch.flatten(x, 1)``)."""


@dataclass(frozen=True)
class Dropout:
    """Dropout with drop probability `p` (identity at inference)."""

    p: float

    def __post_init__(self):
        if not 0 <= self.p < 1:
            raise ValueError(f"dropout p must be in [0, 1), got {self.p!r}")


@dataclass(frozen=True)
class Seq:
    """Nodes applied one after the other."""

    nodes: tuple[Node, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "nodes", tuple(self.nodes))
        for node in self.nodes:
            if not isinstance(node, Node):
                raise TypeError(f"Seq holds graph nodes, got {type(node).__name__}")


@dataclass(frozen=True)
class Residual:
    """``main(x) + (shortcut(x) if shortcut is not None else x)``; main runs first."""

    main: Seq
    shortcut: Seq | None = None

    def __post_init__(self):
        if not isinstance(self.main, Seq) or not isinstance(self.shortcut, (Seq, type(None))):
            raise TypeError("Residual branches must be Seq (shortcut: Seq or None)")


@dataclass(frozen=True)
class DenseConcat:
    """``concat([x, branch(x)])`` along the channel axis (a DenseNet dense layer)."""

    branch: Seq

    def __post_init__(self):
        if not isinstance(self.branch, Seq):
            raise TypeError("DenseConcat branch must be a Seq")


# Any graph node (usable with isinstance).
Node = (Conv | BatchNorm | ReLU | Pool | AdaptivePool | Flatten | Dropout
        | Seq | Residual | DenseConcat)


def walk(node: Node) -> Iterator[Node]:
    """The leaf nodes of `node` in execution order.

    Containers (`Seq`, `Residual`, `DenseConcat`) are not yielded, only what they hold: a
    `Residual`'s main branch, then its shortcut; a `DenseConcat`'s branch.
    """
    if isinstance(node, Seq):
        for child in node.nodes:
            yield from walk(child)
    elif isinstance(node, Residual):
        yield from walk(node.main)
        if node.shortcut is not None:
            yield from walk(node.shortcut)
    elif isinstance(node, DenseConcat):
        yield from walk(node.branch)
    else:
        yield node


# --- the network -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Network:
    """A network's graph, and the conv/fc and batch-norm layer tables derived from it.

    `layers` (conv/fc `LayerSpec`s) and `batchnorms` (`BatchNormSpec`s) are in execution
    order (`walk` order) and are computed from `graph`; they are not constructor arguments.
    """

    name: str
    image_size: int
    num_classes: int
    graph: Seq = field(repr=False)
    layers: tuple[LayerSpec, ...] = field(init=False, compare=False)
    batchnorms: tuple[BatchNormSpec, ...] = field(init=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.graph, Seq):
            raise TypeError(f"network {self.name}: graph must be a Seq, "
                            f"got {type(self.graph).__name__}")
        nodes = list(walk(self.graph))
        object.__setattr__(self, "layers", tuple(n.spec for n in nodes if isinstance(n, Conv)))
        object.__setattr__(self, "batchnorms",
                           tuple(n.spec for n in nodes if isinstance(n, BatchNorm)))
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
