"""Linear fixed-point quantisation (simulator/quantize.py): hand-worked values, the zero
pattern kept, the error bound, chunks quantised with the whole tensor's scale."""

import numpy as np
import pytest

from simulator.quantize import largest, quantize, scale_for


def test_hand_worked_eight_bits():
    # max |x| = 1.0 -> scale = 1/127; 0.5 -> 63.5 steps -> 64 (half to even);
    # -1.0 -> -127; 0.001 -> 0.127 steps, a non-zero below half a step -> raised to 1
    q = quantize(np.array([0.0, 0.5, -1.0, 0.001], dtype=np.float32), bits=8)
    assert q.scale == pytest.approx(1 / 127)
    assert q.values.dtype == np.int8
    assert q.values.tolist() == [0, 64, -127, 1]
    assert q.dequantize().tolist() == pytest.approx([0.0, 64 / 127, -1.0, 1 / 127])


def test_sixteen_bits_range_and_dtype():
    x = np.array([-3.0, 1.5, 3.0], dtype=np.float32)
    q = quantize(x)  # 16 bits by default
    assert q.values.dtype == np.int16 and largest(16) == 32767
    assert q.values.tolist() == [-32767, round(32767 / 2), 32767]  # 16383.5 -> 16384 (even)


@pytest.mark.parametrize("bits", [8, 16])
def test_zero_pattern_kept_and_error_within_half_a_step(bits):
    rng = np.random.default_rng(bits)
    x = rng.standard_normal(10_000).astype(np.float32)
    x[rng.random(x.size) < 0.5] = 0
    x[:50] = rng.uniform(1e-9, 1e-8, 50) * rng.choice([-1, 1], 50)  # would round to zero
    q = quantize(x, bits)
    assert np.array_equal(q.values != 0, x != 0)
    assert np.abs(q.values.astype(np.int64)).max() == largest(bits)
    err = np.abs(q.values.astype(np.float64) * q.scale - x)  # float64: dequantize() is float32
    raised = (np.abs(x) < q.scale / 2) & (x != 0)
    assert raised.sum() >= 50
    assert np.all(err[~raised] <= q.scale / 2 * (1 + 1e-9))
    assert np.all(np.sign(q.values) == np.sign(x))


def test_chunks_with_the_tensors_scale_equal_the_whole():
    x = np.random.default_rng(3).standard_normal((6, 4, 5)).astype(np.float32)
    whole = quantize(x, 8)
    scale = scale_for(float(np.abs(x).max()), 8)
    parts = [quantize(x[a:b], 8, scale).values for a, b in ((0, 1), (1, 4), (4, 6))]
    assert np.array_equal(np.concatenate(parts), whole.values)
    with pytest.raises(ValueError, match="more than 127 steps"):
        quantize(x * 2, 8, scale)


def test_edge_cases():
    q = quantize(np.zeros((2, 3), dtype=np.float32), 8)
    assert q.scale == 1.0 and not q.values.any()
    with pytest.raises(ValueError, match="bits: expected one of 8, 16"):
        quantize(np.ones(3), 12)
    with pytest.raises(ValueError, match="finite"):
        quantize(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="positive step"):
        quantize(np.ones(3), 8, scale=0.0)
