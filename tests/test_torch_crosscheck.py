"""PyTorch traces (workloads/torch_trace.py, torch_swat.py) and the NumPy trainer checked
against PyTorch on whole networks (issue 17). Skipped where torch is not installed (the
`test` extra installs the CPU wheel, so CI runs them).

The cross-check runs one training iteration of the same network, weights and batch through
the NumPy trainer and through PyTorch (`workloads.torch_models`), dense and SWAT-U, and
compares every conv and fc layer's recorded tensors (weight used, input, saved input,
output gradient) and weight gradient: in float64 they agree to 1e-10 of each tensor's
scale. Float32 is checked layer by layer instead: over a whole network, rounding can flip
a decision at a boundary (a batch-norm output within 1e-7 of zero at a ReLU, a value tied
with the Top-K threshold), and the flipped element's gradient then differs outright and
spreads to every layer below. So each float32 layer's weight gradient (the trainer's
production path, with its masked kernels for SWAT's saved input) is recomputed in PyTorch
from that layer's own recorded input and output gradient, where nothing can flip.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch cross-check needs the torch extra "
                                            "(pip install -e '.[torch]')")

from simulator.trace import read_trace, write_trace  # noqa: E402
from workloads.layers import softmax_cross_entropy  # noqa: E402
from workloads.models import build_model, weight_layers  # noqa: E402
from workloads.networks import build_network  # noqa: E402
from workloads.sparsity import SparsityMethod  # noqa: E402
from workloads.topk import topk_sparsify  # noqa: E402
from workloads.torch_models import copy_parameters, torch_model  # noqa: E402
from workloads.torch_swat import swat_u, topk  # noqa: E402
from workloads.torch_trace import TorchTraceError, record_iteration, recorded_trace  # noqa: E402

TENSORS = ("weight", "input", "input_saved", "grad_output")
NETWORKS = [("resnet18-cifar", 32), ("resnet18", 64)]  # CIFAR stem; ImageNet-shaped at low resolution


def _iterations(name: str, size: int, sparsity: float, dtype, batch: int = 4):
    """(NumPy weight layers after one recorded iteration, their loss; the torch recording,
    its loss, the torch model)."""
    net = build_network(name, image_size=size, num_classes=10)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size)).astype(dtype)
    y = rng.integers(0, 10, batch)
    model = build_model(net, seed=1, dtype=dtype)
    tm = torch_model(net).to(torch.float64 if dtype == np.float64 else torch.float32)
    copy_parameters(model, tm)  # before the NumPy step changes the running statistics
    layers = weight_layers(model)
    if sparsity:
        method = SparsityMethod(sparsity)
        method.attach(layers)
        method.before_forward(0)
        swat_u(tm, sparsity)
    model.train()
    tm.train()
    for lay in layers:
        lay.record = True
    loss, dlogits = softmax_cross_entropy(model.forward(x), y)
    model.zero_grad()
    model.backward(dlogits)
    recorded, tloss, skipped = record_iteration(tm, torch.from_numpy(x), torch.from_numpy(y),
                                                torch.nn.functional.cross_entropy)
    assert skipped == []
    return layers, loss, recorded, float(tloss), tm


def _relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float64) - b) / max(float(np.abs(b).max()), 1e-300)


@pytest.mark.parametrize("name,size", NETWORKS)
@pytest.mark.parametrize("sparsity", [0.0, 0.8])
def test_numpy_trainer_equals_pytorch_in_float64(name, size, sparsity):
    layers, loss, recorded, tloss, tm = _iterations(name, size, sparsity, np.float64)
    assert loss == pytest.approx(tloss, rel=1e-12)
    modules = dict(tm.named_modules())
    assert [lay.spec for lay in layers] == [r.spec for r in recorded]  # names, shapes, order
    for lay, rec in zip(layers, recorded):
        for t in TENSORS:
            assert _relative(lay.recorded[t], getattr(rec, t)).max() < 1e-10, (lay.spec.name, t)
        grad = modules[lay.spec.name].weight.grad.numpy()
        assert _relative(lay.weight.grad, grad).max() < 1e-10, (lay.spec.name, "weight gradient")
        if sparsity and lay.spec.name != "conv1":  # SWAT-U's copies really are sparse
            assert (rec.weight == 0).mean() == pytest.approx(sparsity, abs=0.01)
            assert (rec.input_saved == 0).mean() >= sparsity - 0.01


@pytest.mark.parametrize("sparsity", [0.0, 0.8])
def test_float32_weight_gradients_equal_pytorch_layer_by_layer(sparsity):
    """The float32 trainer's dW of every layer against PyTorch's from the same recorded
    input and output gradient (SWAT-U: from the Top-K input, which must be the trainer's)."""
    layers, loss, _, tloss, _ = _iterations("resnet18-cifar", 32, sparsity, np.float32)
    assert loss == pytest.approx(tloss, rel=1e-4)
    for lay in layers:
        s, rec = lay.spec, lay.recorded
        x = torch.from_numpy(rec["input"])
        saved = topk(x, sparsity) if sparsity and s.name != "conv1" else x
        assert np.array_equal(rec["input_saved"], saved.numpy()), s.name  # the same Top-K
        dy = torch.from_numpy(rec["grad_output"])
        if s.kind == "conv":
            dw = torch.nn.grad.conv2d_weight(saved, s.weight_shape, dy, stride=s.stride, padding=s.padding,
                                             dilation=s.dilation, groups=s.groups)
        else:
            dw = dy.t() @ saved
        assert _relative(lay.weight.grad, dw.numpy()).max() < 1e-4, s.name


def test_mobilenet_v2_equals_pytorch_in_float64():
    """Depthwise convolutions, ReLU6 and a classifier with dropout (turned off on both
    sides: their random draws differ), SWAT-U at 80%."""
    from workloads.layers import Dropout
    net = build_network("mobilenet-v2", image_size=32, num_classes=10)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 3, 32, 32)), rng.integers(0, 10, 2)
    model = build_model(net, seed=1, dtype=np.float64)
    for m in model.modules():
        if isinstance(m, Dropout):
            m.p = 0.0
    tm = torch_model(net, dropout=False).to(torch.float64)
    copy_parameters(model, tm)
    layers = weight_layers(model)
    method = SparsityMethod(0.8)
    method.attach(layers)
    method.before_forward(0)
    swat_u(tm, 0.8)
    for lay in layers:
        lay.record = True
    model.train()
    tm.train()
    loss, dlogits = softmax_cross_entropy(model.forward(x), y)
    model.backward(dlogits)
    recorded, tloss, _ = record_iteration(tm, torch.from_numpy(x), torch.from_numpy(y),
                                          torch.nn.functional.cross_entropy)
    assert loss == pytest.approx(float(tloss), rel=1e-12)
    modules = dict(tm.named_modules())
    for lay, rec in zip(layers, recorded):
        for t in TENSORS:
            assert _relative(lay.recorded[t], getattr(rec, t)).max() < 1e-8, (lay.spec.name, t)
        # batch norm over 2 samples of 1x1 maps amplifies rounding: measured up to 1e-9
        assert _relative(lay.weight.grad, modules[lay.spec.name].weight.grad.numpy()).max() < 1e-8


def test_torch_topk_is_the_numpy_trainers():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 5, 5)).astype(np.float32)
    x[0, 0, :2] = x[1, 1, 1, 1]  # ties with an element that may sit at the threshold
    for s in (0.0, 0.5, 0.8, 0.99):
        assert np.array_equal(topk(torch.from_numpy(x), s).numpy(), topk_sparsify(x, s))


class _Odd(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.odd = layer
        self.head = torch.nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        y = self.odd(self.stem(x))
        return self.head(torch.flatten(y[..., :8, :8], 1))


def _record(model, **kwargs):
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    return record_iteration(model, x, y, torch.nn.functional.cross_entropy, **kwargs)


def test_unsupported_layers_are_named_in_one_line_or_skipped():
    model = _Odd(torch.nn.ConvTranspose2d(4, 4, 3, padding=1))
    with pytest.raises(TorchTraceError) as e:
        _record(model)
    assert str(e.value) == ("layer 'odd' (ConvTranspose2d): accelsim cannot map it; pass "
                            "skip_unsupported=True to record the other layers")
    layers, _, skipped = _record(model, skip_unsupported=True)
    assert [lay.spec.name for lay in layers] == ["stem", "head"]
    assert skipped == ["layer 'odd' (ConvTranspose2d): accelsim cannot map it"]


@pytest.mark.parametrize("layer,message", [
    (torch.nn.Conv2d(4, 4, (3, 1), padding=(1, 0)), "kernel_size=(3, 1): accelsim models square"),
    (torch.nn.Conv2d(4, 4, 3, padding="same"), "padding='same': accelsim needs explicit integer padding"),
    (torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
])
def test_layers_accelsim_cannot_model_are_refused(layer, message):
    with pytest.raises(TorchTraceError, match="layer 'odd' \\(Conv2d\\): " + message.replace("(", "\\(")
                       .replace(")", "\\)")):
        _record(_Odd(layer))


def test_a_refused_model_keeps_no_hooks_and_eval_mode_is_refused():
    model = _Odd(torch.nn.ConvTranspose2d(4, 4, 3, padding=1))
    with pytest.raises(TorchTraceError):
        _record(model)
    for _ in range(2):  # plain forward passes afterwards: no recorder left behind
        model(torch.randn(2, 3, 8, 8))
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    model = _Odd(torch.nn.Conv2d(4, 4, 3, padding=1)).eval()
    with pytest.raises(TorchTraceError, match="evaluation mode: call model.train()"):
        _record(model)


def test_swat_copies_exist_only_while_recording_and_are_never_stale():
    model = swat_u(_Odd(torch.nn.Conv2d(4, 4, 3, padding=1)), 0.5).train()
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert not hasattr(model.odd, "accelsim_used")  # no copies kept between iterations
    layers, _, _ = _record(model)
    odd = next(lay for lay in layers if lay.spec.name == "odd")
    assert (odd.weight == 0).mean() == pytest.approx(0.5, abs=0.02)
    assert not hasattr(model.odd, "accelsim_used") and not hasattr(model.odd, "accelsim_recording")
    with torch.no_grad():  # evaluation uses the Top-K weights, as the NumPy trainer does
        model.eval()
        x = torch.randn(2, 4, 8, 8)
        expected = torch.nn.functional.conv2d(x, topk(model.odd.weight, 0.5), model.odd.bias, padding=1)
        assert torch.equal(model.odd(x), expected)


def test_a_diverged_iteration_is_not_recorded():
    model = _Odd(torch.nn.Conv2d(4, 4, 3, padding=1)).train()
    with torch.no_grad():
        model.odd.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(TorchTraceError, match=r"layer '(stem|odd)': \w+ is not finite or exceeds 1e\+15"):
        _record(model)


def test_a_layer_called_twice_is_refused():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x)).mean(dim=(2, 3))

    with pytest.raises(TorchTraceError, match="layer 'conv' is called twice"):
        _record(Twice())


def test_a_recorded_trace_is_simulated(tmp_path):
    """A torch model's iteration written as a trace and run through `simulator.run`."""
    import simulator
    from simulator.config import parse_config
    net = build_network("simple-cnn", image_size=28, num_classes=10)
    tm = swat_u(torch_model(net), 0.8)
    tm.train()
    x, y = torch.randn(4, 3, 28, 28), torch.randint(0, 10, (4,))
    layers, _, _ = record_iteration(tm, x, y, torch.nn.functional.cross_entropy)
    path = write_trace(recorded_trace(layers, "simple-cnn", "swat-u", 0.8), tmp_path / "trace")
    trace = read_trace(path)
    assert [lay.spec for lay in trace.layers] == list(net.layers)
    rows = simulator.run(parse_config({"workload": {"trace": str(path)},
                                       "architecture": {"tiles": 2, "rows": 4}}, "torch-trace"))
    assert set(rows["layer"]) == {s.name for s in net.layers}
    assert (rows["cycles"] >= 1).all() and rows.loc[rows["layer"] != "conv1", "weight_sparsity"].min() > 0.75


def test_the_example_records_a_trace_that_accelsim_runs(tmp_path, capsys):
    from pathlib import Path
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("no /usr/share/datasets/fashion-mnist: install dataset-fashion-mnist")
    import importlib.util
    from simulator.cli import main as accelsim
    spec = importlib.util.spec_from_file_location(
        "example", Path(__file__).resolve().parents[1] / "examples" / "torch_swat_resnet18.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "trace"
    assert example.main(["--out", str(out), "--iterations", "2", "--batch", "4", "--trace-batch", "2"]) == 0
    assert f"accelsim run configs/swat-trace.yaml --trace {out}" in capsys.readouterr().out
    trace = read_trace(out)
    assert trace.network == "resnet18" and trace.method == "swat-u" and len(trace.layers) == 21
    assert trace.layers[0].batch == 2
    config = Path(__file__).resolve().parents[1] / "configs" / "swat-trace.yaml"
    assert accelsim(["run", str(config), "--trace", str(out), "--out", str(tmp_path / "run"), "-q"]) == 0
    assert (tmp_path / "run" / "results.csv").is_file()
    # the destination is checked before the work: a file there is refused, untouched
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    assert example.main(["--out", str(blocker), "--iterations", "1"]) == 2
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("name,size", [("mobilenet-v2", 32), ("densenet121", 32)])
def test_recorded_geometry_is_the_zoos(name, size):
    """Depthwise and grouped convolutions, ReLU6, dropout, dense concatenation: the recorder
    gives every layer the zoo's own `LayerSpec` (names, shapes, groups) in network order."""
    net = build_network(name, image_size=size, num_classes=10)
    tm = torch_model(net)
    tm.train()
    x, y = torch.randn(2, 3, size, size), torch.tensor([0, 1])
    layers, _, _ = record_iteration(tm, x, y, torch.nn.functional.cross_entropy)
    assert [lay.spec for lay in layers] == list(net.layers)
    assert all(lay.grad_output.shape == lay.spec.output_shape(2) for lay in layers)
