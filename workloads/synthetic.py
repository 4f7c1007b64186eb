"""Synthetic sparse workloads: a network's layers with SWAT-style Top-K sparse weights.

Per layer (random stream seeded by (seed, layer index), so every sparsity of a run
sparsifies the same dense tensors):

- weights: Gaussian with He scale, std = sqrt(2 / fan_in), fan_in = C_in/groups x k x k;
  then per-tensor magnitude Top-K to the target sparsity, except the dense layers
  (default: the first conv, as SWAT-U keeps it dense);
- input: shaped by what feeds the layer in the network's graph (`input_kinds`): after a
  ReLU, max(0, N(0, 1)) (about half zeros); after a pooling of ReLU outputs, |N(0, 1)|
  (non-negative, no zeros); after a linear op (BN, conv, residual sum, MobileNet-v2's
  linear bottleneck), N(0, 1); the image (first layer), N(0, 1). Dense in the forward
  pass, as in SWAT;
- input_saved: the input, Top-K sparsified like SWAT to the layer's weight sparsity (the
  activations kept for the backward pass); the dense layers keep it dense;
- grad_output: dense N(0, 1), the gradient arriving from the layer above.

The result is the in-memory `Trace` of the trace contract: the simulator cannot tell
it from a trace exported by training.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from simulator.trace import Trace, TraceLayer

from . import networks as N
from .networks import Network


def input_kinds(network: Network) -> dict[str, str]:
    """For every conv/fc layer, what produces its input: 'image', 'relu' (a ReLU),
    'pooled' (a pooling or flatten of non-negative values) or 'linear' (anything else)."""
    kinds: dict[str, str] = {}

    def visit(node, incoming: str) -> str:  # returns the kind of the node's output
        if isinstance(node, N.Conv):
            kinds[node.spec.name] = incoming
            return "linear"
        if isinstance(node, N.ReLU):
            return "relu"
        if isinstance(node, (N.Flatten, N.Dropout)):
            return incoming  # zeros stay zeros
        if isinstance(node, (N.Pool, N.AdaptivePool)):
            return "pooled" if incoming in ("relu", "pooled") else incoming
        if isinstance(node, N.Seq):
            for child in node.nodes:
                incoming = visit(child, incoming)
            return incoming
        if isinstance(node, N.Residual):
            visit(node.main, incoming)
            if node.shortcut is not None:
                visit(node.shortcut, incoming)
            return "linear"  # a sum: signed
        if isinstance(node, N.DenseConcat):
            visit(node.branch, incoming)
            return "linear"
        return "linear"  # BatchNorm and anything else affine

    visit(network.graph, "image")
    return kinds
from .topk import keep_count, topk_sparsify, topk_threshold

DRAW_ELEMENTS = 1 << 23  # float32 values a synthetic layer draws at once (32 MiB)
CACHE_BYTES = 256 << 20  # dense draws kept for a run's other sparsities (`DrawCache`)
BRACKETS = (0.01, 0.1, None)  # half-widths, in fractions of the elements, of the Top-K bracket; None: all


def _dense_set(network: Network, dense_layers: Iterable[str] | None) -> set:
    names = [s.name for s in network.layers]
    dense = {network.first_conv} if dense_layers is None else set(dense_layers)
    unknown = sorted(dense - set(names))
    if unknown:
        raise ValueError(f"unknown layer {unknown[0]!r} (layers of {network.name}: "
                         f"{', '.join(names[:4])}, ...)")
    return dense


def _weight(rng: np.random.Generator, spec) -> np.ndarray:
    fan_in = spec.channels_per_group * spec.kernel * spec.kernel
    weight = rng.standard_normal(spec.weight_shape, dtype=np.float32)
    weight *= np.float32(np.sqrt(2.0 / fan_in))
    return weight


def _input(rng: np.random.Generator, shape, kind: str) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    if kind == "relu":
        np.maximum(x, 0, out=x)
    elif kind == "pooled":
        np.abs(x, out=x)
    return x


def synthetic_layers(network: Network, sparsity: float, batch: int = 1, seed: int = 0,
                     dense_layers: Iterable[str] | None = None):
    """Yield the `TraceLayer`s of `network` one at a time (bounded memory)."""
    dense = _dense_set(network, dense_layers)
    kinds = input_kinds(network)
    for index, spec in enumerate(network.layers):
        rng = np.random.default_rng([seed, index])
        weight = _weight(rng, spec)
        x = _input(rng, spec.input_shape(batch), kinds[spec.name])
        grad_output = rng.standard_normal(spec.output_shape(batch), dtype=np.float32)
        saved = x
        if spec.name not in dense:
            weight = topk_sparsify(weight, sparsity)
            saved = topk_sparsify(x, sparsity)
        yield TraceLayer(spec, weight=weight, input=x, input_saved=saved, grad_output=grad_output)


def synthetic_patterns(network: Network, sparsity: float, batch: int = 1, seed: int = 0,
                       dense_layers: Iterable[str] | None = None, cache: "DrawCache | None" = None):
    """Yield a `SyntheticLayer` per layer of `network`: the layers of `synthetic_layers`,
    drawn only when first used (by whichever thread simulates them) and kept as zero
    patterns, what `accelsim run` needs. `cache`: shared by the sparsities of one run,
    which draw the same dense tensors."""
    dense = _dense_set(network, dense_layers)
    kinds = input_kinds(network)
    for index, spec in enumerate(network.layers):
        yield SyntheticLayer(spec, index, kinds[spec.name], spec.name in dense, batch, seed, sparsity,
                             cache=cache)


class DrawCache:
    """The dense draws of a synthetic network's layers (weight, input values, gradient
    bits), kept for the other sparsities of the same run: every sparsity Top-Ks the same
    dense tensors, so only the first draws them. Layers whose input is drawn in one piece
    (at most DRAW_ELEMENTS values) are kept while the total stays within `budget` bytes;
    the rest are drawn again. Safe to share between threads (a lock per layer)."""

    def __init__(self, budget: int = CACHE_BYTES):
        self.budget, self.used = budget, 0
        self._entries: dict = {}
        self._locks: dict = {}
        self._lock = threading.Lock()

    def draws(self, layer: "SyntheticLayer") -> tuple:
        """(dense weight, input values, gradient bits) of `layer`, drawn at most once."""
        key = (layer.seed, layer.index, layer.batch, layer.spec, layer.kind)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._entries:
                return self._entries[key]
            rng = np.random.default_rng([layer.seed, layer.index])
            weight = _weight(rng, layer.spec)
            x = _input(rng, layer.spec.input_shape(layer.batch), layer.kind)
            found = (weight, x, layer._draw_bits(rng, layer.spec.output_shape(layer.batch)))
            size = weight.nbytes + x.nbytes + found[2].nbytes
            with self._lock:
                if self.used + size <= self.budget:
                    self._entries[key], self.used = found, self.used + size
            return found


def _pack(mask: np.ndarray) -> np.ndarray:
    """[n, ...] bool -> [n, bytes] bits, one row per sample."""
    return np.packbits(mask.reshape(mask.shape[0], -1), axis=1)


def _unpack(bits: np.ndarray, shape) -> np.ndarray:
    """[n, bytes] bits -> bool [n, ...] of `shape`."""
    return np.unpackbits(bits, axis=1, count=int(np.prod(shape[1:]))).reshape(shape).view(np.bool_)


def _bracket(x: np.ndarray, fraction: float, width: float) -> tuple[float, float]:
    """(lo, hi): the magnitudes of `x` that keep the fractions `fraction` + `width` and
    `fraction` - `width` of its elements (0 and inf at the ends)."""
    def at(kept: float) -> float:
        return float(np.asarray(topk_threshold(x, 1.0 - kept)).reshape(-1)[0])
    return at(min(1.0, fraction + width)), at(max(0.0, fraction - width))


class SyntheticLayer:
    """One layer of a synthetic workload as zero patterns: the draws of `synthetic_layers`
    (same generator, same order, bit for bit: tests/test_synthetic.py), made in chunks of
    at most DRAW_ELEMENTS values, so a tensor larger than that is never held whole. Each
    activation tensor is kept as bits, 1/32 of its float32 values; `samples(start, stop)`
    unpacks a chunk as bool tensors for the streamed simulation (`simulator.streaming`).
    The weights stay float32. `check` needs values: it uses `synthetic_layers`.

    The saved input is the input's Top-K over the whole tensor, found without holding it.
    With K the kept fraction f of the elements, the first chunk's own magnitudes at the
    fractions f + w and f - w bracket the tensor's K-th largest; one pass keeps the bits
    of the magnitudes above the bracket and the magnitudes within it (about 2w of the
    elements), from which the exact K-th largest is selected. If it is not in the bracket,
    the input is drawn again from the same generator state with a wider one (w in
    BRACKETS, last the whole range): the result is always the exact Top-K. With w = 1%
    and a first chunk of even one sample of ResNet-50's inputs (0.1-0.8 M values), the
    bracket is more than 10 standard deviations of the chunk's estimate wide."""

    def __init__(self, spec, index: int, kind: str, dense: bool, batch: int, seed: int,
                 sparsity: float, draw_elements: int = DRAW_ELEMENTS, brackets=BRACKETS,
                 cache: DrawCache | None = None):
        self.spec, self.index, self.kind, self.dense = spec, index, kind, dense
        self.batch, self.seed, self.sparsity = batch, seed, sparsity
        self.draw_elements, self.brackets, self.cache = draw_elements, brackets, cache
        self._drawn = None  # (weight, input bits, saved bits, gradient bits), on first use
        self.brackets_tried = 0

    def _patterns(self):
        if self._drawn is None:
            if self.cache is not None and len(self._chunks(self.spec.input_shape(self.batch))) == 1:
                weight, x, g_bits = self.cache.draws(self)
                x_bits, saved_bits = self._whole_patterns(x)
            else:
                rng = np.random.default_rng([self.seed, self.index])
                weight = _weight(rng, self.spec)
                x_bits, saved_bits = self._input_patterns(rng)
                g_bits = self._draw_bits(rng, self.spec.output_shape(self.batch))
            self._drawn = (weight if self.dense else topk_sparsify(weight, self.sparsity), x_bits,
                           saved_bits, g_bits)
        return self._drawn

    def _whole_patterns(self, x: np.ndarray):
        """(input bits, saved-input bits) of the whole input `x`."""
        x_bits = _pack(x != 0)
        return x_bits, (x_bits if self.dense else _pack(topk_sparsify(x, self.sparsity) != 0))

    def _chunks(self, shape):
        per = max(1, int(np.prod(shape[1:])))
        step = max(1, self.draw_elements // per)
        return [(s, min(s + step, self.batch)) for s in range(0, self.batch, step)]

    def _empty_bits(self, shape) -> np.ndarray:
        return np.empty((self.batch, -(-int(np.prod(shape[1:])) // 8)), dtype=np.uint8)

    def _draw_bits(self, rng, shape) -> np.ndarray:
        bits = self._empty_bits(shape)
        for start, stop in self._chunks(shape):
            bits[start:stop] = _pack(rng.standard_normal((stop - start, *shape[1:]), dtype=np.float32) != 0)
        return bits

    def _input_patterns(self, rng):
        """(input bits, saved-input bits) drawn from `rng`, leaving it where the whole
        input's draw would."""
        shape = self.spec.input_shape(self.batch)
        chunks = self._chunks(shape)
        if len(chunks) == 1:  # the whole input at once
            return self._whole_patterns(_input(rng, shape, self.kind))
        if self.dense:
            x_bits = self._empty_bits(shape)
            for start, stop in chunks:
                x_bits[start:stop] = _pack(_input(rng, (stop - start, *shape[1:]), self.kind) != 0)
            return x_bits, x_bits
        keep = keep_count(int(np.prod(shape)), self.sparsity)
        state = rng.bit_generator.state
        for width in self.brackets:
            self.brackets_tried += 1
            rng.bit_generator.state = state
            found = self._bracketed(rng, shape, chunks, keep, width)
            if found is not None:
                return found
        raise AssertionError("the whole-range bracket always holds the K-th largest")

    def _bracketed(self, rng, shape, chunks, keep, width):
        """One pass over the input's draws with the Top-K bracket of half-width `width`
        (None: everything); (input bits, saved bits), or None if the K-th largest
        magnitude lies outside the bracket."""
        x_bits, above, inside = (self._empty_bits(shape) for _ in range(3))
        values, nonzeros, above_count, lo, hi = [], 0, 0, None, None
        for start, stop in chunks:
            x = _input(rng, (stop - start, *shape[1:]), self.kind)
            mag = np.abs(x)
            x_bits[start:stop] = _pack(mag > 0)
            nonzeros += int(np.count_nonzero(mag))
            if lo is None:
                lo, hi = (0.0, np.inf) if width is None else _bracket(x, keep / int(np.prod(shape)), width)
            over = mag > hi
            within = (mag >= lo) & (mag > 0) & ~over
            above[start:stop], inside[start:stop] = _pack(over), _pack(within)
            above_count += int(np.count_nonzero(over))
            values.append(mag[within])
        if keep >= nonzeros:  # every non-zero is kept: the saved pattern is the input's
            return x_bits, x_bits
        if keep == 0:
            return x_bits, np.zeros_like(x_bits)
        need = keep - above_count
        pool = np.concatenate(values)
        if need < 0 or need > pool.size:
            return None
        if need == 0:
            return x_bits, above
        threshold = np.partition(pool, pool.size - need)[pool.size - need]
        saved = above
        for (start, stop), v in zip(chunks, values):
            mask = _unpack(inside[start:stop], (stop - start, *shape[1:])).astype(bool)
            mask[mask] = v >= threshold
            saved[start:stop] |= _pack(mask)
        return x_bits, saved

    @property
    def weight(self) -> np.ndarray:
        return self._patterns()[0]

    @property
    def saved_is_input(self) -> bool:
        _, x_bits, saved_bits, _ = self._patterns()
        return saved_bits is x_bits

    def samples(self, start: int, stop: int) -> TraceLayer:
        """Samples [start, stop) as a `TraceLayer` of uint8 0/1 zero patterns."""
        weight, x_bits, saved_bits, g_bits = self._patterns()
        n = stop - start
        x = _unpack(x_bits[start:stop], self.spec.input_shape(n))
        saved = x if saved_bits is x_bits else _unpack(saved_bits[start:stop], self.spec.input_shape(n))
        return TraceLayer(self.spec, weight, x, saved, _unpack(g_bits[start:stop], self.spec.output_shape(n)))


def synthetic_trace(network: Network, sparsity: float, batch: int = 1, seed: int = 0,
                    dense_layers: Iterable[str] | None = None) -> Trace:
    """The whole synthetic trace in memory (see `synthetic_layers` for one layer at a time)."""
    layers = list(synthetic_layers(network, sparsity, batch, seed, dense_layers))
    return Trace(network=network.name, layers=layers, method="swat-u-synthetic",
                 sparsity=sparsity, meta={"seed": seed, "batch": batch})
