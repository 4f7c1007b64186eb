"""trace-from-training that a researcher can run: per-network recipes, training at one
resolution and recording at another, warm-up / lr scaling / zero-init residual, timed
checkpoints, the plan paragraph, and `accelsim run --trace DIR [CONFIG]`."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import simulator
from simulator.cli import TRACE_DEFAULTS
from simulator.trace import read_trace
from workloads import recipes
from workloads.layers import BatchNorm2d, Residual
from workloads.models import build_model, residual_branch_ends, weight_layers
from workloads.networks import build_network
from workloads.trainer import TrainSettings, Trainer

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")


def settings(tmp_path, **kwargs):
    base = dict(network="resnet18-cifar", iterations=3, batch=4, image_size=8, dataset="synthetic",
                synthetic_size=32, trace_batch=2, out=str(tmp_path / "trace"),
                run_dir=str(tmp_path / "run"), eval_limit=8)
    return TrainSettings(**(base | kwargs))


# -- defaults ----------------------------------------------------------------------------------

def test_resolved_settings_take_the_recipe_and_keep_what_was_given():
    r = recipes.recipe("resnet50")
    s = TrainSettings(network="resnet50").resolved()
    assert (s.image_size, s.batch, s.iterations, s.trace_batch) == (r.image_size, r.batch, r.iterations,
                                                                     r.trace_batch)
    assert s.trace_image_size == 224  # the native size: ResNet-50 pools globally
    assert s.peak_lr == pytest.approx(r.lr_at_256 * r.batch / 256)
    assert s.warmup == round(r.warmup_fraction * r.iterations)
    given = TrainSettings(network="resnet50", batch=8, image_size=32, iterations=20, lr=0.2,
                          lr_scaling=False, warmup=0, trace_image_size=64, trace_batch=3).resolved()
    assert (given.batch, given.image_size, given.iterations, given.peak_lr, given.warmup,
            given.trace_image_size, given.trace_batch) == (8, 32, 20, 0.2, 0, 64, 3)
    epochs = TrainSettings(network="resnet50", epochs=2.5).resolved(per_epoch=10)
    assert epochs.iterations == 25
    with pytest.raises(ValueError, match="per_epoch"):
        TrainSettings(network="simple-cnn").resolved()  # simple-cnn's recipe is one epoch


def test_a_network_whose_weights_depend_on_the_size_is_traced_at_its_training_size(tmp_path):
    s = TrainSettings(network="simple-cnn", image_size=12).resolved(per_epoch=1)
    assert s.trace_image_size == 12  # its fc1 sees the unpooled 3x3 map
    with pytest.raises(ValueError, match="weights depend on the image size"):
        Trainer(settings(tmp_path, network="simple-cnn", image_size=12, trace_image_size=28))


def test_every_zoo_network_has_a_recipe_that_builds():
    from workloads.networks import NETWORKS

    assert set(recipes.RECIPES) == set(NETWORKS)
    for name, r in recipes.RECIPES.items():
        build_network(name, image_size=r.image_size, num_classes=10)
        assert r.batch >= 1 and r.trace_batch >= 1 and 0 < r.warmup_fraction < 1


def test_warmup_and_lr_scaling_rules():
    assert recipes.scaled_lr(0.1, 32) == pytest.approx(0.0125)
    assert recipes.warmup_iterations(800, 0.05) == 40
    assert recipes.warmup_iterations(20, 0.05) == 1 and recipes.warmup_iterations(5, 0.05) == 0


def test_estimate_by_hand():
    e = recipes.estimate_seconds(train_macs_per_sample=10**9, layers=10, batch=2, iterations=5,
                                 eval_images=256, trace_macs_per_sample=2 * 10**9, trace_batch=1,
                                 trace_bytes=4 * 10**7, rate=10**9)
    step = 3 * 2 + 10 * recipes.SECONDS_PER_LAYER + recipes.SECONDS_PER_STEP
    assert e.train == pytest.approx(5 * step)
    assert e.evaluate == pytest.approx(256 + 2 * 10 * recipes.SECONDS_PER_LAYER / 2)
    assert e.record == pytest.approx(6 + 10 * recipes.SECONDS_PER_LAYER + 4e7 / recipes.TRACE_WRITE_BYTES_PER_S)
    assert e.total == pytest.approx(e.train + e.evaluate + e.record)
    assert recipes.format_duration(30) == "about 30 s" and recipes.format_duration(1200) == "about 20 minutes"


# -- zero-init residual --------------------------------------------------------------------------

def test_zero_init_residual_zeroes_each_branchs_last_bn_and_blocks_start_as_identity():
    net = build_network("resnet18-cifar", image_size=8, num_classes=10)
    model = build_model(net, seed=0, zero_init_residual=True)
    ends = residual_branch_ends(model)
    assert len(ends) == 8 and all(isinstance(b, BatchNorm2d) for b in ends)  # 4 stages x 2 blocks
    assert all(not b.weight.value.any() for b in ends)
    plain = build_model(net, seed=0)
    assert all(b.weight.value.all() for b in residual_branch_ends(plain))
    block = next(m for m in model.modules() if isinstance(m, Residual) and m.shortcut is None)
    x = np.random.default_rng(0).standard_normal((2, 64, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(block.forward(x), x)  # main branch is 0 at the start
    wrn = build_model(build_network("wrn-16-8", image_size=8), zero_init_residual=True)
    assert residual_branch_ends(wrn) == []  # pre-activation blocks end in a conv


# -- recording at another resolution ---------------------------------------------------------------

def test_records_at_the_trace_size(tmp_path):
    same = Trainer(settings(tmp_path / "a", trace_image_size=8)).run()
    other = Trainer(settings(tmp_path / "b", trace_image_size=16)).run()
    np.testing.assert_array_equal(same.log["loss"].to_numpy(), other.log["loss"].to_numpy())
    trace = read_trace(other.traces[-1])
    assert trace.meta["image_size"] == 16 and trace.meta["train_image_size"] == 8
    assert trace.meta["batch"] == 2 and trace.meta["iteration"] == 3
    expected = build_network("resnet18-cifar", image_size=16, num_classes=10).layers
    assert [l.spec for l in trace.layers] == list(expected)
    assert trace.layers[0].input.shape == (2, 3, 16, 16)
    small = read_trace(same.traces[-1])
    for a, b in zip(trace.layers, small.layers):  # the weights and masks the step used
        np.testing.assert_array_equal(a.weight, b.weight)
    for lay in trace.layers[1:]:  # the trace's own Top-K of its activations
        assert 1 - np.count_nonzero(lay.input_saved) / lay.input_saved.size == pytest.approx(0.8, abs=0.02)


@pytest.mark.parametrize("network, method, options", [
    ("resnet18-cifar", "swat-m", {}),
    ("resnet18-cifar", "topkast", {}),
    ("resnet18-cifar", "meprop", {}),
    ("resnet18-cifar", "swat-u", {"topk_period": 2, "topk_scope": "CHW"}),
    ("mobilenet-v2", "swat-u", {}),  # dropout in the classifier
])
def test_the_recording_pass_leaves_training_unchanged(tmp_path, network, method, options):
    """A mid-run trace at another size: model, optimizer and method end as without it."""
    def finish(trace_size, where):
        trainer = Trainer(settings(tmp_path / where, network=network, method=method, image_size=16,
                                   trace_image_size=trace_size, trace_at=(2,), **options))
        trainer.run()
        return trainer
    plain, other = finish(16, "a"), finish(24, "b")
    for a, b in ((plain.model.state_dict(), other.model.state_dict()),
                 (plain.optimizer.state_dict(), other.optimizer.state_dict()),
                 (plain.method.state_dict(), other.method.state_dict())):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_the_recorded_iteration_is_functionally_correct(tmp_path):
    result = Trainer(settings(tmp_path, trace_image_size=12)).run()
    cfg = simulator.parse_config({"architecture": {"tiles": 2, "rows": 4},
                                  "workload": {"trace": str(result.traces[-1])}})
    assert all(r.ok for _, _, r in simulator.check(cfg))


# -- checkpoints and the plan ----------------------------------------------------------------------

def test_timed_checkpoints(tmp_path, monkeypatch):
    import workloads.trainer as trainer_mod

    saved = []
    real = trainer_mod.save_checkpoint
    monkeypatch.setattr(trainer_mod, "save_checkpoint",
                        lambda path, model, opt, progress, method=None: saved.append(progress["iteration"])
                        or real(path, model, opt, progress, method))
    Trainer(settings(tmp_path / "a", checkpoint_every=1000)).run()
    assert saved == [3]  # only at the end
    saved.clear()
    Trainer(settings(tmp_path / "b", checkpoint_every=1000, checkpoint_minutes=1e-9)).run()
    assert saved == [1, 2, 3]  # every iteration once the interval has passed


def test_the_plan_says_what_the_run_will_do(tmp_path):
    plan = Trainer(settings(tmp_path, trace_image_size=16, iterations=7, warmup=2)).plan()
    for piece in ("synthetic", "resized to 8x8", "7 iterations of batch 4", "swat-u at 80% sparsity",
                  "2 warm-up iterations", "at 16x16 on 2 samples", "Estimated time", "minutes in"):
        assert piece in plan, piece


# -- training that trains ----------------------------------------------------------------------------

@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")
@pytest.mark.parametrize("network", ["resnet18", "resnet50"])
@pytest.mark.parametrize("method", ["dense", "swat-u"])
def test_defaults_reduce_the_training_loss_on_fashion_mnist(tmp_path, network, method):
    """ResNet-18/50 (ImageNet stem) at 32x32 with every other setting at its default:
    the loss over iterations 41-50 is below the loss over iterations 1-10."""
    s = TrainSettings(network=network, method=method, iterations=50, image_size=32,
                      out=str(tmp_path / "t"), run_dir=str(tmp_path / "r"), eval_limit=8,
                      trace_image_size=32)
    loss = Trainer(s).run().log["loss"].to_numpy()
    assert np.isfinite(loss).all()
    assert loss[-10:].mean() < loss[:10].mean() - 0.1, loss


# -- the command line ---------------------------------------------------------------------------------

def accelsim(*args, cwd):
    return subprocess.run([sys.executable, "-m", "simulator.cli", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_prints_the_plan_first_and_records_at_the_trace_size(tmp_path):
    p = accelsim("trace-from-training", "resnet18-cifar", "--dataset", "synthetic", "--iterations", "2",
                 "--batch", "4", "--image-size", "8", "--trace-image-size", "12", "--trace-batch", "1",
                 "--eval-limit", "8", "--checkpoint-minutes", "0.5", "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    first = p.stdout.split("\n\n")[0].replace("\n", " ")  # the plan paragraph
    assert first.startswith("resnet18-cifar-swat-u-80: trains") and "at 12x12 on 1 sample " in first
    trace = read_trace(tmp_path / "traces/resnet18-cifar-swat-u-80")
    assert trace.meta["image_size"] == 12 and trace.layers[0].input.shape == (1, 3, 12, 12)


def test_cli_trace_size_errors_are_one_line(tmp_path):
    p = accelsim("trace-from-training", "simple-cnn", "--dataset", "synthetic", "--image-size", "12",
                 "--trace-image-size", "28", "-q", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "trace_image_size" in p.stderr
    p = accelsim("trace-from-training", "vgg16", "--dataset", "synthetic", "--trace-image-size", "16",
                 "-q", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "too small" in p.stderr


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trace")
    return Trainer(TrainSettings(network="simple-cnn", iterations=2, batch=4, image_size=12,
                                 dataset="synthetic", synthetic_size=16, trace_batch=2,
                                 out=str(tmp / "my-trace"), run_dir=str(tmp / "run"),
                                 eval_limit=4)).run().traces[-1]


def test_run_trace_without_a_config_uses_tactical_yaml_and_names_the_output(small_trace, tmp_path):
    p = accelsim("run", "--trace", str(small_trace), "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "fewest-candidates scheduler" in p.stdout and "simple-cnn" in p.stdout
    results = tmp_path / "reports/my-trace/results.csv"
    assert results.is_file()
    import pandas as pd

    df = pd.read_csv(results)
    assert set(df["layer"]) == {"conv1", "conv2", "fc1", "fc2"} and set(df["sparsity"]) == {0.8}


def test_run_trace_with_a_config_takes_its_architecture(small_trace, tmp_path):
    p = accelsim("run", str(ROOT / "configs/dense.yaml"), "--trace", str(small_trace), "-q",
                 "--out", "out", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("dense-my-trace: ") and "front-end none" in p.stdout
    p = accelsim("check", "--trace", str(small_trace), "-q", cwd=tmp_path)
    assert p.returncode == 0 and "layer passes match" in p.stdout


def test_run_trace_errors(tmp_path):
    p = accelsim("run", "--trace", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "manifest.yaml" in p.stderr
    p = accelsim("run", cwd=tmp_path)
    assert p.returncode == 2 and "CONFIG" in p.stderr and "Traceback" not in p.stderr


def test_trace_defaults_are_tactical_yaml():
    tactical = simulator.load_config(ROOT / "configs/tactical.yaml")
    default = simulator.parse_config(TRACE_DEFAULTS | {"workload": {"trace": "x"}})
    for section in ("architecture", "lowering", "memory", "passes"):
        assert getattr(default, section) == getattr(tactical, section), section


def test_a_run_that_cannot_fit_in_memory_is_refused_before_it_allocates(tmp_path):
    from workloads.recipes import activation_bytes, peak_bytes

    net = build_network("resnet50", image_size=64, num_classes=10)
    assert peak_bytes(net, 64) - peak_bytes(net, 32) == 3 * activation_bytes(net, 32)  # linear in the batch
    with pytest.raises(ValueError, match=r"batch/image_size: .* needs about .* GiB"):
        Trainer(settings(tmp_path, network="resnet50", image_size=2048, batch=512, synthetic_size=600))
    with pytest.raises(ValueError, match=r"trace_batch/trace_image_size"):
        Trainer(settings(tmp_path, network="resnet50", trace_image_size=4096, trace_batch=16))


def test_resume_refuses_other_training_settings_and_restores_the_methods_state(tmp_path):
    s = settings(tmp_path, method="topkast", iterations=2, checkpoint_every=1, lr=0.2)
    first = Trainer(s)
    first.run()
    with pytest.raises(ValueError, match="trained with lr 0.2"):
        Trainer(dataclasses.replace(s, lr=0.5, resume=True)).run()
    with pytest.raises(ValueError, match="iterations 2, this run has 3"):
        Trainer(dataclasses.replace(s, iterations=3, resume=True)).run()
    again = Trainer(dataclasses.replace(s, resume=True))
    from workloads.trainer import load_checkpoint

    ckpt = Path(s.run_dir) / "checkpoint.npz"
    load_checkpoint(ckpt, again.model, again.optimizer, again.method)
    with np.load(ckpt) as data:
        a = {k[len("method/"):]: data[k] for k in data.files if k.startswith("method/")}
    b = again.method.state_dict()
    assert a.keys() == b.keys() and any(k.startswith("backward_threshold/") for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_run_trace_names_iteration_traces_after_their_run(small_trace, tmp_path):
    import shutil

    target = tmp_path / "my run" / "iter-000002"
    shutil.copytree(small_trace, target)
    (tmp_path / "empty.yaml").write_text("")
    p = accelsim("run", "empty.yaml", "--trace", str(target), "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "reports/empty-my-run-iter-000002/results.csv").is_file()


def test_out_that_is_not_a_trace_is_refused_before_training(tmp_path):
    existing = tmp_path / "results.txt"
    existing.write_text("precious")
    p = accelsim("trace-from-training", "simple-cnn", "--dataset", "synthetic", "--iterations", "2",
                 "--batch", "4", "--image-size", "12", "--out", str(existing), "-q", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "refusing to replace" in p.stderr
    assert existing.read_text() == "precious" and not (tmp_path / "runs").exists()
    assert "trains" not in p.stdout  # refused before the plan, long before training
