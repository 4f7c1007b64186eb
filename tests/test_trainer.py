"""The NumPy SWAT trainer: what each sparsity method feeds the passes, exported traces,
resume, and the trace-from-training command."""

import subprocess
import sys

import numpy as np
import pytest

import simulator
from simulator.lowering import reference
from simulator.trace import TraceLayer, read_trace
from workloads.layers import softmax_cross_entropy
from workloads.models import build_model, weight_layers
from workloads.networks import build_network
from workloads.optim import SGD
from workloads.sparsity import METHODS, make_method
from workloads.topk import keep_count, topk_threshold
from workloads.trainer import TrainSettings, Trainer


def small_model(method, sparsity=0.8, **kwargs):
    net = build_network("simple-cnn", image_size=12, num_classes=10)
    model = build_model(net, seed=0)
    layers = weight_layers(model)
    opt = SGD(model.params(), lr=0.01, momentum=0.9)
    m = make_method(method, sparsity, **kwargs)
    m.attach(layers, opt)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 12, 12)).astype(np.float32)
    y = rng.integers(0, 10, 6)
    return model, layers, opt, m, x, y


def step(model, layers, opt, method, x, y, it=0, record=True):
    for lay in layers:
        lay.record = record
    method.before_forward(it)
    _, d = softmax_cross_entropy(model.forward(x), y)
    model.zero_grad()
    model.backward(d)
    method.after_backward(it)
    grads = {lay.spec.name: lay.weight.grad.copy() for lay in layers}
    opt.step()
    return grads


def test_swat_u_feeds_sparse_weights_and_activations_into_the_backward_pass():
    model, layers, opt, method, x, y = small_model("swat-u", 0.8)
    weights = {lay.spec.name: lay.weight.value.copy() for lay in layers}
    grads = step(model, layers, opt, method, x, y)
    first, *sparse = layers
    assert first.forward_weight is None and first.save_input is None  # first conv dense
    for lay in sparse:
        name, rec = lay.spec.name, lay.recorded
        w = weights[name]
        expected_w = np.abs(w) >= topk_threshold(w, 0.8)
        # the forward and the input gradient use exactly the Top-K weights
        assert np.array_equal(rec["weight"] != 0, expected_w)
        assert lay.backward_weight is lay.forward_weight
        # the saved activations are the Top-K of the input
        expected_x = np.abs(rec["input"]) >= topk_threshold(rec["input"], 0.8)
        assert np.array_equal(rec["input_saved"] != 0, expected_x & (rec["input"] != 0))
        # dW was computed from the sparse saved input with the dense output gradient,
        # checked against the simulator's independent weight-gradient reference
        t = TraceLayer(lay.spec, weight=rec["weight"], input=rec["input"],
                       input_saved=rec["input_saved"], grad_output=rec["grad_output"])
        dense_dw = reference(TraceLayer(lay.spec, weight=rec["weight"], input=rec["input"],
                                        grad_output=rec["grad_output"]), "weight_grad")
        sparse_dw = reference(t, "weight_grad").reshape(lay.spec.weight_shape)
        np.testing.assert_allclose(grads[name], sparse_dw, rtol=1e-4, atol=1e-6)
        assert not np.allclose(dense_dw.reshape(lay.spec.weight_shape), sparse_dw)
        # the gradient is dense: pruned weights are updated too
        assert np.count_nonzero(grads[name][~expected_w]) > 0


def test_saw_meprop_and_topkast_hooks():
    _, layers, *_ = small_model("saw")
    m = make_method("saw", 0.8)
    m.attach(layers)
    m.before_forward(0)
    assert all(l.forward_weight is None for l in layers)
    assert all(l.backward_weight is not None and l.save_input is not None for l in layers[1:])

    model, layers, opt, method, x, y = small_model("meprop", 0.5)
    step(model, layers, opt, method, x, y)
    for lay in layers[1:]:
        dy = lay.recorded["grad_output"]
        assert lay.forward_weight is None and lay.save_input is None
        assert np.count_nonzero(dy) <= keep_count(dy.size, 0.5)
        if lay.spec.name == "conv2":  # its dy comes through BN: no natural zeros, exact Top-K
            assert np.count_nonzero(dy) == keep_count(dy.size, 0.5)

    model, layers, opt, method, x, y = small_model("topkast", 0.8, extra=0.1, penalty=0.0)
    weights = {lay.spec.name: lay.weight.value.copy() for lay in layers}
    grads = step(model, layers, opt, method, x, y)
    for lay in layers[1:]:
        w = weights[lay.spec.name]
        in_b = np.abs(w) >= topk_threshold(w, 0.7)
        assert not grads[lay.spec.name][~in_b].any()  # only B = top-(D+M) is updated
        assert np.count_nonzero(lay.recorded["weight"]) == keep_count(w.size, 0.8)


def test_topkast_exploration_penalty():
    _, layers, _, method, _, _ = small_model("topkast", 0.8, extra=0.1, penalty=0.5)
    method.before_forward(0)
    for lay in layers:
        lay.weight.grad[...] = 0.0
    method.after_backward(0)
    lay = layers[1]
    w = lay.weight.value
    in_a = np.abs(w) >= topk_threshold(w, 0.8)
    in_b = np.abs(w) >= topk_threshold(w, 0.7)
    # the penalty's gradient: 0.5 * w on A, 0.5 * w / D on B \ A (D = 0.2), nothing outside B
    np.testing.assert_allclose(lay.weight.grad[in_a], 0.5 * w[in_a], rtol=1e-6)
    np.testing.assert_allclose(lay.weight.grad[in_b & ~in_a], 0.5 * w[in_b & ~in_a] / 0.2, rtol=1e-5)
    assert not lay.weight.grad[~in_b].any()


def test_erk_and_momentum_distribute_the_same_budget():
    _, layers, opt, method, *_ = small_model("swat-erk", 0.8)
    sparse = [l for l in layers if l.spec.name != "conv1"]
    sizes = np.array([l.weight.value.size for l in sparse])
    s = np.array([method.layer_sparsity[l.spec.name] for l in sparse])
    assert np.isclose(((1 - s) * sizes).sum(), 0.2 * sizes.sum())
    # sparse = conv2, fc1, fc2: uncapped densities are proportional to the ERK score
    # sum(shape) / size; the small classifier's is capped at 1 (dense)
    score = np.array([sum(l.weight.value.shape) / l.weight.value.size for l in sparse])
    assert s[2] == 0.0
    assert (1 - s[0]) / (1 - s[1]) == pytest.approx(score[0] / score[1])
    model, layers, opt, method, x, y = small_model("swat-m", 0.8, topk_period=1)
    for it in range(3):
        step(model, layers, opt, method, x, y, it, record=False)
    sparse = [l for l in layers if l.spec.name != "conv1"]
    s = np.array([method.layer_sparsity[l.spec.name] for l in sparse])
    assert not np.allclose(s, 0.8)  # redistributed once momentum exists
    assert np.isclose(((1 - s) * sizes).sum(), 0.2 * sizes.sum(), rtol=1e-6)


def test_structured_drops_whole_kernel_slices():
    model, layers, opt, method, x, y = small_model("swat-structured", 0.5)
    step(model, layers, opt, method, x, y)
    w = layers[1].recorded["weight"]  # conv2: [64, 32, 3, 3]
    slices = np.abs(w).reshape(64, 32, 9).sum(axis=2)
    zero_slices = slices == 0
    assert zero_slices.sum() == 64 * 32 // 2
    assert np.array_equal(np.all(w == 0, axis=(2, 3)), zero_slices)


def test_periodic_topk_reuses_thresholds_between_recomputations():
    model, layers, opt, method, x, y = small_model("swat-u", 0.8, topk_period=3)
    seen = []
    for it in range(4):
        step(model, layers, opt, method, x, y, it, record=False)
        seen.append(method.weight_threshold["conv2"].copy())
    assert seen[0] == seen[1] == seen[2] and seen[3] != seen[2]


@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_and_logs_measured_sparsity(tmp_path, name):
    s = TrainSettings(network="simple-cnn", method=name, sparsity=0.0 if name == "dense" else 0.7,
                      iterations=3, batch=8, image_size=12, dataset="synthetic", synthetic_size=64,
                      out=str(tmp_path / "t"), run_dir=str(tmp_path / "r"), eval_limit=16)
    result = Trainer(s).run()
    log = result.log
    assert list(log["iteration"]) == [1, 2, 3] and np.isfinite(log["loss"]).all()
    assert {"w:conv1", "a:conv2", "lr", "train_accuracy"} <= set(log.columns)
    if name in ("swat-u", "saw", "topkast"):
        assert log["w:conv2"].iloc[-1] == pytest.approx(0.7, abs=1e-3)
    assert 0.0 <= result.test_accuracy <= 1.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    s = TrainSettings(network="simple-cnn", method="swat-u", sparsity=0.8, iterations=6, batch=16,
                      image_size=16, dataset="synthetic", synthetic_size=128, trace_batch=16,
                      trace_at=(4, 6), out=str(tmp / "trace"), run_dir=str(tmp / "run"),
                      checkpoint_every=3, eval_limit=32)
    return s, Trainer(s).run()


def test_exported_traces_match_targets_and_round_trip(trained):
    s, result = trained
    assert [p.name for p in result.traces] == ["iter-000004", "iter-000006"]
    trace = read_trace(result.traces[-1])
    assert trace.meta["iteration"] == 6 and trace.method == "swat-u" and trace.sparsity == 0.8
    names = [l.spec.name for l in trace.layers]
    assert names == [l.name for l in build_network("simple-cnn", 16, 10).layers]
    for lay in trace.layers[1:]:
        assert np.count_nonzero(lay.weight) == keep_count(lay.weight.size, 0.8)
        nz = np.count_nonzero(lay.input)
        assert np.count_nonzero(lay.input_saved) == min(keep_count(lay.input.size, 0.8), nz)
    first = trace.layers[0]
    assert np.array_equal(first.input_saved, first.input)  # dense first conv
    again = read_trace(result.traces[-1])
    for a, b in zip(trace.layers, again.layers):
        for t in ("weight", "input", "input_saved", "grad_output"):
            assert np.array_equal(getattr(a, t), getattr(b, t))


def test_the_trace_simulates_and_checks(trained, tmp_path):
    _, result = trained
    cfg = simulator.parse_config({"architecture": {"tiles": 2, "rows": 4},
                                  "workload": {"trace": str(result.traces[-1])}})
    df = simulator.run(cfg)
    assert len(df) == 4 * 3 - 1  # the first layer has no input-gradient pass
    assert (df["ideal_cycles"] <= df["compute_cycles"]).all()
    assert (df["compute_cycles"] <= df["dense_compute_cycles"]).all()
    assert all(r.ok for _, _, r in simulator.check(cfg))


def test_interrupted_run_resumes_exactly(trained, tmp_path, monkeypatch):
    s, result = trained
    import dataclasses

    import workloads.trainer as trainer_mod

    s2 = dataclasses.replace(s, out=str(tmp_path / "trace"), run_dir=str(tmp_path / "run"))
    real = trainer_mod.SGD.step

    def interrupt_in_iteration_5(self, lr=None):
        if getattr(self, "_steps", 0) == 4:
            raise KeyboardInterrupt  # Ctrl-C after the checkpoint at 3 and the trace at 4
        self._steps = getattr(self, "_steps", 0) + 1
        return real(self, lr)
    monkeypatch.setattr(trainer_mod.SGD, "step", interrupt_in_iteration_5)
    with pytest.raises(KeyboardInterrupt):
        Trainer(s2).run()
    monkeypatch.setattr(trainer_mod.SGD, "step", real)
    # the last checkpoint is usable and nothing is half-written
    assert read_trace(tmp_path / "trace" / "iter-000004").meta["iteration"] == 4
    assert not (tmp_path / "trace" / "iter-000006").exists()
    assert not [p for p in (tmp_path / "trace").iterdir() if p.name.startswith(".")]
    again = Trainer(dataclasses.replace(s2, resume=True)).run()
    np.testing.assert_array_equal(again.log["loss"].to_numpy(), result.log["loss"].to_numpy())
    a, b = read_trace(again.traces[-1]), read_trace(result.traces[-1])
    assert all(np.array_equal(x.weight, y.weight) for x, y in zip(a.layers, b.layers))


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "simulator.cli", "trace-from-training", *args],
                          capture_output=True, text=True, cwd=cwd)


def test_cli_errors_are_one_line(tmp_path):
    p = run_cli("simple-cnn", "--data-dir", str(tmp_path / "nowhere"), "-q", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    assert "dataset-fashion-mnist" in p.stderr or "--data-dir" in p.stderr
    p = run_cli("simple-cnn", "--dataset", "synthetic", "--iterations", "2", "--trace-at", "5",
                "-q", cwd=tmp_path)
    assert p.returncode == 2 and "trace_at" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("nonet", cwd=tmp_path)
    assert p.returncode == 2 and "NETWORK: expected one of" in p.stderr and "'nonet'" in p.stderr


def test_cli_trains_and_writes_trace_log_and_checkpoint(tmp_path):
    p = run_cli("simple-cnn", "--dataset", "synthetic", "--iterations", "3", "--batch", "8",
                "--image-size", "12", "--eval-limit", "16", "--sparsity", "0.5", "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "trace: traces/simple-cnn-swat-u-50" in p.stdout and "test accuracy" in p.stdout
    assert (tmp_path / "traces/simple-cnn-swat-u-50/manifest.yaml").is_file()
    run = tmp_path / "runs/simple-cnn-swat-u-50"
    assert {f.name for f in run.iterdir()} == {"log.csv", "checkpoint.npz", "summary.yaml"}
    assert "sparsity" not in p.stdout.split("log and checkpoint")[-1]  # no per-layer lines


def test_cli_verbose_prints_each_layers_measured_sparsity(tmp_path):
    p = run_cli("simple-cnn", "--dataset", "synthetic", "--iterations", "2", "--batch", "8",
                "--image-size", "12", "--eval-limit", "16", "--sparsity", "0.5", "-q", "-v", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = {ln.split(":")[0].strip(): ln for ln in p.stdout.splitlines() if ln.startswith("  ")}
    assert lines["conv1"].endswith("weight sparsity 0.0%")  # the dense first conv: nothing saved
    assert "weight sparsity 50.0%, saved-activation sparsity 50.0%" in lines["conv2"]
    assert set(lines) == {"conv1", "conv2", "fc1", "fc2"}


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    s = TrainSettings(network="simple-cnn", iterations=2, batch=8, image_size=12, dataset="synthetic",
                      synthetic_size=32, out=str(tmp_path / "t"), run_dir=str(tmp_path / "r"), resume=True)
    with pytest.raises(ValueError, match="no checkpoint"):
        Trainer(s).run()


def test_evaluation_uses_the_final_weights_top_k(tmp_path, monkeypatch):
    import workloads.trainer as trainer_mod

    seen = {}
    real = trainer_mod.evaluate

    def spy(model, loader, layers, method=None, progress=False):
        acc = real(model, loader, layers, method, progress)
        lay = layers[1]
        seen["used"] = lay.forward_weight.copy()
        seen["now"] = lay.weight.value.copy()
        return acc
    monkeypatch.setattr(trainer_mod, "evaluate", spy)
    s = TrainSettings(network="simple-cnn", iterations=2, batch=8, image_size=12, dataset="synthetic",
                      synthetic_size=32, out=str(tmp_path / "t"), run_dir=str(tmp_path / "r"), eval_limit=8)
    Trainer(s).run()
    w = seen["now"]
    assert np.array_equal(seen["used"], np.where(np.abs(w) >= topk_threshold(w, 0.8), w, 0))


def test_dense_runs_are_labelled_dense():
    s = TrainSettings(network="simple-cnn", method="dense", sparsity=0.8)
    assert s.sparsity == 0.0 and s.name == "simple-cnn-dense-0"


def test_an_input_feeding_two_layers_is_thresholded_once():
    """A block's first conv and its downsample shortcut read the same tensor: one Top-K
    selection serves both (the same threshold object), and later iterations select around
    the last threshold (bracketed) rather than searching, with identical results."""
    net = build_network("resnet18-cifar", image_size=8, num_classes=10)
    model = build_model(net, seed=0)
    layers = weight_layers(model)
    opt = SGD(model.params(), lr=0.01, momentum=0.9)
    method = make_method("swat-u", 0.8)
    method.attach(layers, opt)
    keys = []
    select = method.selector.threshold
    method.selector.threshold = lambda key, *a, **k: keys.append(key) or select(key, *a, **k)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 2)
    for it in range(2):
        step(model, layers, opt, method, x, y, it, record=it == 1)
    assert ("input", "layer2.0.conv1") in keys and ("input", "layer2.0.downsample.0") not in keys
    assert method.input_threshold["layer2.0.conv1"] is method.input_threshold["layer2.0.downsample.0"]
    assert method.selector.bracketed > 0
    for lay in layers[1:]:
        rec = lay.recorded
        want = topk_threshold(rec["input"], 0.8)
        assert np.array_equal(rec["input_saved"], np.where(np.abs(rec["input"]) >= want, rec["input"], 0))
