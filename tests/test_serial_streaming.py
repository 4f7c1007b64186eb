"""The bit-serial back-ends' streamed simulation equals the whole pass, and its bounds.

For small layers, every pass, both scheduled operands, both input-gradient lowerings,
lockstep and decoupled tiles, TCLp and TCLe, at several chunk sizes: the timing of
`LayerStream.evaluate` on a `CodedLayer` equals `evaluate_serial` on the whole pass; and
front-end cycles <= bit-serial cycles <= bits x front-end cycles <= the dense bound.
"""

from dataclasses import replace

import numpy as np
import pytest

from simulator.bitserial import own_costs
from simulator.config import Architecture, Lowering
from simulator.frontend import Frontend
from simulator.serial_streaming import CodedLayer, evaluate_serial
from simulator.simulate import PassPlan, evaluate
from simulator.streaming import LayerStream, chunk_bounds
from tests.test_streaming import LAYERS, PASSES, sparse_layer

ARCHS = [
    Architecture(tiles=2, rows=2, lanes=4, columns=8, frontend=Frontend("T", 2, 1), backend="tclp", bits=8),
    Architecture(tiles=3, rows=3, lanes=4, columns=16, frontend=Frontend("L", 1, 0), lockstep=False,
                 backend="tcle", bits=8),
    Architecture(tiles=2, rows=3, lanes=4, columns=16, frontend=Frontend("T", 2, 1), backend="tclp", bits=16,
                 trailing_zeros=True),
]


@pytest.mark.parametrize("li", range(len(LAYERS)))
@pytest.mark.parametrize("ai", range(len(ARCHS)))
@pytest.mark.parametrize("operand", ["weights", "activations"])
def test_streamed_serial_pass_equals_whole_pass(li, ai, operand):
    spec, batch = LAYERS[li]
    arch = ARCHS[ai]
    values = sparse_layer(spec, batch, seed=li * 10 + ai)
    layer = CodedLayer(values, arch.backend, arch.bits, arch.trailing_zeros)
    side = "kernel" if operand == "weights" else "input"
    for lowering in ("phase", "zero-insert"):
        plan = PassPlan(PASSES, Lowering(scheduled_operand=dict.fromkeys(PASSES, operand),
                                         input_grad_lowering=lowering))
        for pas in PASSES:
            whole = evaluate_serial(plan.lower(layer.samples(0, batch), pas, arch.lanes, 1), arch)
            for samples in (1, 2, 3, batch):
                stream = LayerStream(layer, 1, chunk_bounds(spec, batch, arch, plan, 1, chunk_samples=samples))
                assert stream.evaluate(plan, pas, side, arch) == whole, (pas, lowering, samples)
            timing = whole[0]
            # the front-end alone, at the same columns: each step costs 1..bits cycles
            front = evaluate(plan.lower(values, pas, arch.lanes, 1),
                             replace(arch, backend="bit-parallel"))[0]
            assert front.cycles <= timing.cycles <= arch.bits * front.cycles
            # the work bound: every bit (term) of every multiplication, on every multiplier
            lowered = plan.lower(layer.samples(0, batch), pas, arch.lanes, 1)
            work = sum(int(np.einsum("gfsl,gwsl->", (s != 0).astype(np.int64),
                                     own_costs(b, arch.trailing_zeros, arch.bits)))
                       for s, b in map(lowered.operands, lowered.parts))
            multipliers = arch.tiles * arch.rows * arch.lanes * arch.columns
            assert -(-work // multipliers) <= timing.ideal_cycles <= timing.cycles
            assert timing.cycles <= timing.bound_cycles == arch.bits * front.dense_cycles
            assert timing.serial_steps >= 1 or timing.cycles == 0
