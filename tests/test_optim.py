"""SGD (torch.optim.SGD semantics) against hand-computed steps, and LR schedules."""

import math
from dataclasses import dataclass

import numpy as np
import pytest

from workloads.optim import SGD, LRSchedule


@dataclass
class P:
    name: str
    value: np.ndarray
    grad: np.ndarray | None = None
    decay: bool = True


def scalar(name="w", decay=True, w=1.0):
    return P(name, np.array([w], np.float64), np.zeros(1), decay)


def run(opt, params, grads):
    """Apply the per-step gradients; returns the value of params[0] after each step."""
    out = []
    for g in grads:
        for p in params:
            p.grad = np.array([g], np.float64)
        opt.step()
        out.append(float(params[0].value[0]))
    return out


# Hand-computed: w0 = 1, lr = 0.1, momentum = 0.9, gradients 1, 2, 3.
#   momentum:  buf = 1, 2.9, 5.61           -> w = 0.9, 0.61, 0.049
#   nesterov:  buf as above; g + 0.9 buf = 1.9, 4.61, 8.049 -> w = 0.81, 0.349, -0.4559
def test_momentum_three_steps_by_hand():
    p = scalar()
    opt = SGD([p], lr=0.1, momentum=0.9)
    assert run(opt, [p], [1, 2, 3]) == pytest.approx([0.9, 0.61, 0.049], abs=1e-12)
    assert opt.momentum_buffer(p)[0] == pytest.approx(5.61)


def test_nesterov_three_steps_by_hand():
    p = scalar()
    opt = SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    assert run(opt, [p], [1, 2, 3]) == pytest.approx([0.81, 0.349, -0.4559], abs=1e-12)
    assert opt.momentum_buffer("w")[0] == pytest.approx(5.61)


# Weight decay 0.1, gradient 1 each step, lr 0.1, momentum 0.9:
#   decayed: g = 1.1, 1.089, 1.06821; buf = 1.1, 2.079, 2.93931 -> w = 0.89, 0.6821, 0.388169
#   not decayed (BN / bias): buf = 1, 1.9, 2.71                    -> w = 0.9, 0.71, 0.439
def test_weight_decay_respects_decay_flags():
    w, bn = scalar("conv.w"), scalar("bn.gamma", decay=False)
    opt = SGD([w, bn], lr=0.1, momentum=0.9, weight_decay=0.1)
    ws, bns = [], []
    for _ in range(3):
        w.grad, bn.grad = np.ones(1), np.ones(1)
        opt.step()
        ws.append(float(w.value[0]))
        bns.append(float(bn.value[0]))
    assert ws == pytest.approx([0.89, 0.6821, 0.388169], abs=1e-12)
    assert bns == pytest.approx([0.9, 0.71, 0.439], abs=1e-12)

    bn2 = scalar("bn.beta", decay=False)
    opt = SGD([bn2], lr=0.1, momentum=0.9, weight_decay=0.1, decay_bn=True)
    assert run(opt, [bn2], [1, 1, 1]) == pytest.approx([0.89, 0.6821, 0.388169], abs=1e-12)


def reference(w, grads, lr, momentum, nesterov, wd):
    """torch.optim.SGD's loop written out, float64."""
    w, buf = w.astype(np.float64).copy(), None
    for g in grads:
        d = g + wd * w
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        w = w - lr * d
    return w


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                  (0.9, True, 5e-4), (0.5, False, 1e-2)])
def test_arrays_match_reference_float32(momentum, nesterov, wd):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    grads = [rng.standard_normal(w0.shape).astype(np.float32) for _ in range(3)]
    p = P("conv", w0.copy())
    opt = SGD([p], lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    for g in grads:
        p.grad = g
        opt.step()
    assert p.value.dtype == np.float32
    np.testing.assert_allclose(p.value, reference(w0, grads, 0.05, momentum, nesterov, wd),
                               rtol=1e-5, atol=1e-6)
    if momentum == 0:
        assert opt.momentum_buffer(p) is None and opt.state_dict() == {}


def test_step_lr_override_and_missing_grad_skipped():
    a, b = scalar("a"), scalar("b")
    opt = SGD([a, b], lr=1.0, momentum=0.0)
    a.grad, b.grad = np.ones(1), None
    opt.step(lr=0.25)
    assert a.value[0] == 0.75 and b.value[0] == 1.0 and opt.lr == 0.25
    opt.step()  # keeps the last lr
    assert a.value[0] == 0.5


def test_momentum_buffer_is_read_only_view():
    p = scalar()
    opt = SGD([p], lr=0.1)
    assert opt.momentum_buffer(p) is None  # before the first step
    p.grad = np.ones(1)
    opt.step()
    buf = opt.momentum_buffer(p)
    with pytest.raises(ValueError):
        buf[0] = 5
    with pytest.raises(KeyError):
        opt.momentum_buffer("nope")


def test_state_dict_round_trip_through_npz(tmp_path):
    rng = np.random.default_rng(1)
    shapes = {"conv1.weight": (2, 3, 3, 3), "bn1.gamma": (2,), "fc.bias": (10,)}
    grads = [{n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
             for _ in range(4)]
    init = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}

    def make():
        ps = [P(n, init[n].copy(), decay=n.endswith("weight")) for n in shapes]
        return ps, SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)

    def steps(ps, opt, gs):
        for g in gs:
            for p in ps:
                p.grad = g[p.name]
            opt.step()

    full_ps, full = make()
    steps(full_ps, full, grads)

    ps, opt = make()
    steps(ps, opt, grads[:2])
    np.savez(tmp_path / "opt.npz", **opt.state_dict())
    values = {p.name: p.value.copy() for p in ps}
    ps2, opt2 = make()
    for p in ps2:
        p.value[...] = values[p.name]
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as z:
        opt2.load_state_dict(z)
    steps(ps2, opt2, grads[2:])
    for a, b in zip(full_ps, ps2):
        np.testing.assert_array_equal(a.value, b.value)

    with pytest.raises(ValueError, match="unknown parameter"):
        opt2.load_state_dict({"other": np.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        opt2.load_state_dict({"fc.bias": np.zeros(3)})


def test_sgd_argument_checks():
    with pytest.raises(ValueError, match="unique"):
        SGD([scalar("a"), scalar("a")], lr=0.1)
    with pytest.raises(ValueError, match="nesterov"):
        SGD([scalar()], lr=0.1, momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="lr"):
        SGD([scalar()], lr=-1)


# ----------------------------------------------------------------------- schedules

def test_warmup_values():
    s = LRSchedule(0.4, 100, kind="constant", warmup_iterations=4)
    assert [s(i) for i in range(6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])


def test_cosine_endpoints_and_midpoint():
    s = LRSchedule(1.0, 100, kind="cosine", final_lr=0.1)
    assert s(0) == 1.0
    assert s(50) == pytest.approx(0.55)
    assert s(100) == pytest.approx(0.1) and s(1000) == pytest.approx(0.1)
    lrs = [s(i) for i in range(101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    # after warm-up the cosine spans the remaining iterations
    w = LRSchedule(1.0, 110, kind="cosine", warmup_iterations=10)
    assert w(9) == 1.0 and w(10) == 1.0
    assert w(60) == pytest.approx(0.5)
    assert w(110) == pytest.approx(0.0, abs=1e-15)
    assert w(35) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)


def test_step_milestones():
    s = LRSchedule(0.1, 200, kind="step", milestones=(0.5, 0.75), gamma=0.1)
    assert s.milestone_iterations == (100, 150)
    assert s(0) == s(99) == 0.1
    assert s(100) == pytest.approx(0.01) and s(149) == pytest.approx(0.01)
    assert s(150) == pytest.approx(0.001) and s(199) == pytest.approx(0.001)
    warm = LRSchedule(0.1, 200, kind="step", warmup_iterations=5)
    assert warm(0) == pytest.approx(0.02) and warm(5) == 0.1 and warm(120) == pytest.approx(0.01)


def test_schedule_argument_checks():
    with pytest.raises(ValueError, match="kind"):
        LRSchedule(0.1, 10, kind="linear")
    with pytest.raises(ValueError, match="warmup"):
        LRSchedule(0.1, 10, warmup_iterations=11)
    with pytest.raises(ValueError, match="milestones"):
        LRSchedule(0.1, 10, kind="step", milestones=(0.75, 0.5))
    with pytest.raises(ValueError, match="iteration"):
        LRSchedule(0.1, 10)(-1)


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                  (0.9, True, 5e-4), (0.5, False, 1e-2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_kernel_equals_the_numpy_update_bit_for_bit(momentum, nesterov, wd, dtype):
    """Contiguous parameters take the numba kernel, others the NumPy expressions."""
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((4, 3, 5, 5)).astype(dtype)
    grads = [rng.standard_normal(w0.shape).astype(dtype) for _ in range(3)]
    fused, numpy_path = P("a", w0.copy()), P("b", w0.copy())
    opts = [SGD([p], lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=wd)
            for p in (fused, numpy_path)]
    for g in grads:
        fused.grad, numpy_path.grad = g.copy(), np.asfortranarray(g)   # not C-contiguous
        for opt in opts:
            opt.step()
    np.testing.assert_array_equal(fused.value, numpy_path.value)
    assert not np.array_equal(fused.value, w0)
    if momentum:
        np.testing.assert_array_equal(opts[0].momentum_buffer(fused), opts[1].momentum_buffer(numpy_path))
