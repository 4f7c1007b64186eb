"""Hostile input to the trainer and the analytic commands (issue 13): bad option values,
runs too large for memory, corrupt or foreign checkpoints and logs, gzip bombs and broken
IDX files, unusable output paths. Each is one `accelsim: error:` line naming the option or
the file, exit code 2, no traceback, refused before any training (or at most a few steps
of simple-cnn on the synthetic set), with nothing it would replace touched."""

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from simulator.resources import MemoryLimitError
from tests.util import one_line_error, run_main
from workloads.data import FASHION_MNIST_FILES, write_idx
from workloads.networks import build_network
from workloads.trainer import (MAX_COUNT, SettingsError, TrainSettings, Trainer,
                               _nominal_data_shapes, memory_needed)

TRAIN = ["trace-from-training", "simple-cnn", "--dataset", "synthetic", "--batch", "4",
         "--image-size", "12", "--eval-limit", "4", "-q"]


def train_args(tmp_path, *extra, iterations="2"):
    steps = [] if "--epochs" in extra or iterations is None else ["--iterations", iterations]
    return [*TRAIN, *steps, "--out", tmp_path / "trace", "--run-dir", tmp_path / "run", *extra]


def refused(argv, *fragments) -> str:
    rc, out, err = run_main(argv)
    assert rc == 2, (rc, out, err)
    one_line_error(err, *fragments)
    assert " trains " not in out  # refused before the plan, so before any training
    return err


def accelsim(*args, cwd, env=None):
    """The real command in a fresh process (no hang: 60 s at most)."""
    return subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=60, env=env)


def assert_one_line(p, *fragments):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    one_line_error(p.stderr, *fragments)


# -- 1. option ranges ---------------------------------------------------------------------------

@pytest.mark.parametrize("extra, option", [
    (["--label-smoothing", "5"], "--label-smoothing"),
    (["--label-smoothing", "nan"], "--label-smoothing"),
    (["--epochs", "inf"], "--epochs"),
    (["--epochs", "nan"], "--epochs"),
    (["--epochs", "0"], "--epochs"),
    (["--momentum", "1"], "--momentum"),
    (["--momentum", "-0.5"], "--momentum"),
    (["--weight-decay", "-1"], "--weight-decay"),
    (["--weight-decay", "inf"], "--weight-decay"),
    (["--sparsity", "nan"], "--sparsity"),
    (["--sparsity", "inf"], "--sparsity"),
    (["--sparsity", "1.5"], "--sparsity"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--checkpoint-minutes", "inf"], "--checkpoint-minutes"),
    (["--checkpoint-minutes", "nan"], "--checkpoint-minutes"),
    (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--warmup", "-1"], "--warmup"),
    (["--iterations", str(10**30)], "--iterations"),
    (["--iterations", "0"], "--iterations"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(10**30)], "--seed"),
    (["--trace-at", "0"], "--trace-at"),
    (["--trace-at", str(10**30)], "--trace-at"),
    (["--trace-at", "1,x"], "--trace-at"),
    (["--topk-period", str(10**30)], "--topk-period"),
    (["--eval-limit", "0"], "--eval-limit"),
    (["--batch", "abc"], "--batch"),
    (["--image-size", "1.5"], "--image-size"),
    (["--max-memory", "-1"], "--max-memory"),
    (["--max-memory", "nan"], "--max-memory"),
])
def test_bad_option_values_are_one_line(tmp_path, extra, option):
    iterations = None if extra[0] == "--iterations" else "2"
    err = refused(train_args(tmp_path, *extra, iterations=iterations), f"error: {option}: ")
    assert "expected" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "trace").exists()


@pytest.mark.parametrize("extra, option, fragment", [
    (["--warmup", "3"], "--warmup", "at most the run's 2 iterations"),
    (["--trace-at", "5"], "--trace-at", "outside the run's 1..2"),
    (["--epochs", "1e300"], "--epochs", "more than the 2,147,483,647"),
    (["--batch", "5000"], "--batch", "at most the 1,024 training images"),
])
def test_settings_checked_against_the_run_are_one_line(tmp_path, extra, option, fragment):
    refused(train_args(tmp_path, *extra, iterations=None if extra[0] == "--epochs" else "2"),
            f"error: {option}: ", fragment)


def test_settings_are_checked_in_the_python_api_too():
    for kwargs, field in (({"label_smoothing": 5.0}, "label_smoothing"), ({"epochs": float("inf")}, "epochs"),
                          ({"seed": -1}, "seed"), ({"iterations": 2**31}, "iterations"),
                          ({"trace_at": (0,)}, "trace_at"), ({"batch": True}, "batch"),
                          ({"network": "nonet"}, "network"), ({"method_options": []}, "method_options"),
                          ({"max_memory": 0.0}, "max_memory"), ({"synthetic_size": 0}, "synthetic_size")):
        with pytest.raises(SettingsError) as e:
            TrainSettings(**({"network": "simple-cnn"} | kwargs))
        assert e.value.field == field and "\n" not in str(e.value)
    assert MAX_COUNT == 2**31 - 1


def test_a_diverging_run_stops_with_one_line_and_no_numpy_warnings(tmp_path):
    p = accelsim(*train_args(tmp_path, "--lr", "1e30"), cwd=tmp_path)
    assert_one_line(p, "the run diverged", "lower --lr")
    assert not (tmp_path / "trace").exists()  # no trace of non-finite tensors


def test_a_batch_norm_with_one_value_per_channel_is_refused_before_training(tmp_path):
    common = ["--dataset", "synthetic", "--iterations", "1", "-q", "--out", tmp_path / "t",
              "--run-dir", tmp_path / "r"]
    refused(["trace-from-training", "resnet50", *common, "--trace-image-size", "8"],
            "--trace-batch: ", "batch-norm")
    refused(["trace-from-training", "resnet50", *common, "--batch", "1", "--image-size", "32"],
            "--batch: ", "batch-norm")


# -- 2. memory ------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, names", [
    (["--image-size", "4096"], "--batch/--image-size: "),
    (["--batch", "1000000"], "--batch/--image-size: "),
    (["--trace-batch", "1000000"], "--trace-batch/--trace-image-size: "),
    (["--trace-image-size", "4096"], "--trace-batch/--trace-image-size: "),
])
def test_runs_that_cannot_fit_in_memory_are_refused_before_allocating(tmp_path, extra, names):
    refused(["trace-from-training", "resnet50", "--dataset", "synthetic", "--iterations", "1",
             "--out", tmp_path / "t", "--run-dir", tmp_path / "r", "-q", *extra],
            names, "needs about", "--max-memory GIB")
    assert not (tmp_path / "r").exists()


def test_max_memory_and_the_environment_set_the_limit(tmp_path, monkeypatch):
    refused(train_args(tmp_path, "--max-memory", "0.05"), "more than the 51 MiB allowed (--max-memory)")
    monkeypatch.setenv("ACCELSIM_MAX_MEMORY", "0.05")
    refused(train_args(tmp_path), "allowed (ACCELSIM_MAX_MEMORY)")


def test_the_memory_estimate_covers_every_part_and_the_defaults_fit():
    s = TrainSettings(network="resnet50").resolved()
    net = build_network("resnet50", image_size=s.image_size, num_classes=10)
    trace = build_network("resnet50", image_size=s.trace_image_size, num_classes=10)
    need = memory_needed(s, net, trace, _nominal_data_shapes(s))
    assert set(need) == {"train", "trace", "data"} and all(v > 0 for v in need.values())
    assert sum(need.values()) < 4 * 2**30  # the documented default run is not refused
    big = memory_needed(s, net, build_network("resnet50", image_size=448, num_classes=10),
                        _nominal_data_shapes(s))
    assert big["trace"] > 3 * need["trace"]  # the trace iteration is counted at its own size
    with pytest.raises(MemoryLimitError, match=r"^batch/image_size: .* needs about .* allowed"):
        Trainer(TrainSettings(network="resnet50", image_size=4096, dataset="synthetic", iterations=1))
    with pytest.raises(MemoryLimitError, match=r"\(--max-memory\); lower synthetic_size or image_size"):
        Trainer(TrainSettings(network="simple-cnn", dataset="synthetic", synthetic_size=2**31 - 1,
                              iterations=1, max_memory=64))
    with pytest.raises(MemoryLimitError, match="allowed \\(--max-memory\\)"):
        Trainer(TrainSettings(network="simple-cnn", dataset="synthetic", iterations=1, max_memory=0.01))


@pytest.mark.parametrize("extra, fragment", [
    (["--measure", "resnet50", "--batch", "1000000000"], "--measure resnet50 at 224x224, batch 1,000,000,000: needs"),
    (["--measure", "resnet50", "--image-size", "100000"], "lower --batch or --image-size"),
    (["--measure", "simple-cnn", "--max-memory", "0.01"], "allowed (--max-memory)"),
    (["--measure", "resnet50", "--repeat", "1000000000"], "--repeat: expected an integer in 1..100"),
    (["--measure", "resnet50", "--batch", str(10**30)], "--batch: expected an integer in 1..2147483647"),
    (["--period", str(10**30)], "--period: "),
    (["--step-ms", "1e308"], "--step-ms: "),
    (["--max-memory", "3"], "--max-memory: only used with --measure"),
])
def test_topk_overhead_refuses_sizes_it_cannot_hold(extra, fragment):
    refused(["topk-overhead", "-q", *extra], fragment)


def test_flops_refuses_counts_beyond_exact_integers():
    refused(["flops", "resnet50", "--sparsity", "0.8", "--batch", str(10**30)], "--batch: ")
    refused(["flops", "resnet50", "--sparsity", "0.8", "--batch", "2147483647"], "--batch/--image-size: ")
    refused(["flops", "resnet50", "--sparsity", "0.8", "--image-size", str(10**20)], "--image-size: ")


# -- 3. resume state ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    rc, _, err = run_main(train_args(tmp, "--checkpoint-every", "1"))
    assert rc == 0, err
    return tmp / "run"


def resume(tmp_path, finished_run, corrupt, *fragments):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    corrupt(run)
    before = snapshot(run)
    err = refused(train_args(tmp_path, "--resume", "--checkpoint-every", "1"), *fragments)
    assert snapshot(run) == before  # nothing rewritten
    return err


def snapshot(run):
    """Each entry's kind, size and modification time, and the bytes of the small files."""
    out = {}
    for p in run.iterdir():
        st = os.lstat(p)
        small = p.is_file() and not p.is_symlink() and st.st_size < 2**24
        out[p.name] = (st.st_mode, st.st_size, st.st_mtime_ns, p.read_bytes() if small else None)
    return out


def npz_with(run, edit):
    with np.load(run / "checkpoint.npz") as data:
        arrays = {k: data[k] for k in data.files}
    edit(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (run / "checkpoint.npz").write_bytes(buf.getvalue())


def progress_with(key, value):
    def edit(arrays):
        progress = json.loads(str(arrays["progress"]))
        if key in ("network", "sparsity", "method"):
            progress["settings"][key] = value
        else:
            progress[key] = value
        arrays["progress"] = np.array(json.dumps(progress))
    return lambda run: npz_with(run, edit)


def zip_bomb(run):
    with zipfile.ZipFile(run / "checkpoint.npz", "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb.npy", bytes(64 * 2**20))


CHECKPOINTS = {
    "random bytes": (lambda r: (r / "checkpoint.npz").write_bytes(os.urandom(2000)), "corrupt or truncated"),
    "truncated zip": (lambda r: (r / "checkpoint.npz").write_bytes((r / "checkpoint.npz").read_bytes()[:5000]),
                      "corrupt or truncated"),
    "empty file": (lambda r: (r / "checkpoint.npz").write_bytes(b""), "corrupt or truncated (an empty file)"),
    "directory": (lambda r: ((r / "checkpoint.npz").unlink(), (r / "checkpoint.npz").mkdir()), "is a directory"),
    "symlink": (lambda r: ((r / "checkpoint.npz").unlink(), (r / "checkpoint.npz").symlink_to(r / "log.csv")),
                "is a symlink"),
    "far too large": (lambda r: os.truncate(r / "checkpoint.npz", 3 * 2**30), "not a checkpoint of this run"),
    "zip bomb": (zip_bomb, "unpack to"),
    "missing array": (lambda r: npz_with(r, lambda a: a.pop("model/0.weight")), "model arrays missing ['0.weight']"),
    "wrong shape": (lambda r: npz_with(r, lambda a: a.update({"model/0.weight": np.zeros((3, 3), np.float32)})),
                    "expected float32 [32, 3, 3, 3], got float32 [3, 3]"),
    "wrong dtype": (lambda r: npz_with(r, lambda a: a.update({"optim/9.weight": a["optim/9.weight"].astype(float)})),
                    "optim/9.weight: expected float32"),
    "non-finite": (lambda r: npz_with(r, lambda a: a["model/4.weight"].fill(np.nan)), "non-finite values"),
    "bad threshold": (lambda r: npz_with(r, lambda a: a.update(
        {"method/weight_threshold/conv2": np.ones((5, 5), np.float32)})),
                      "does not fit layer conv2"),
    "extra array": (lambda r: npz_with(r, lambda a: a.update({"other": np.zeros(3)})), "unexpected array 'other'"),
    "no progress": (lambda r: npz_with(r, lambda a: a.pop("progress")), "no progress record"),
    "progress not json": (lambda r: npz_with(r, lambda a: a.update({"progress": np.array("{oops")})),
                          "progress record is not a JSON object"),
    "other network": (progress_with("network", "resnet18-cifar"), "trained with network 'resnet18-cifar'"),
    "other method": (progress_with("method", "saw"), "trained with method 'saw'"),
    "other sparsity": (progress_with("sparsity", 0.5), "trained with sparsity 0.5"),
    "iteration out of range": (progress_with("iteration", 99), "iteration 99 is not one of"),
    "bad loader state": (progress_with("loader", {"epoch": "x"}), "loader state"),
}


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_resume_refuses_a_corrupt_or_foreign_checkpoint(tmp_path, finished_run, case):
    corrupt, fragment = CHECKPOINTS[case]
    resume(tmp_path, finished_run, corrupt, "checkpoint.npz", fragment)


LOGS = {
    "garbage": (lambda r: (r / "log.csv").write_bytes(b"garbage\x00\x01\n1,2,3\n"), "not the log of this run"),
    "truncated": (lambda r: (r / "log.csv").write_text((r / "log.csv").read_text()[:50]), "truncated"),
    "short": (lambda r: (r / "log.csv").write_text("\n".join((r / "log.csv").read_text().splitlines()[:2])),
              "truncated (it ends at iteration 1; the checkpoint is at 2)"),
    "empty": (lambda r: (r / "log.csv").write_text(""), "corrupt or truncated"),
    "missing": (lambda r: (r / "log.csv").unlink(), "missing"),
    "directory": (lambda r: ((r / "log.csv").unlink(), (r / "log.csv").mkdir()), "is a directory"),
    "foreign": (lambda r: (r / "log.csv").write_text("step,loss\n1,2.0\n2,1.0\n"), "columns missing ['iteration'"),
    "iterations": (lambda r: (r / "log.csv").write_text((r / "log.csv").read_text().replace("\n1,", "\n7,", 1)),
                   "its iterations are not 1, 2, 3"),
    "text in numbers": (lambda r: (r / "log.csv").write_text((r / "log.csv").read_text().replace("\n2,0,", "\n2,x,")),
                        "column epoch holds something other than numbers"),
    "far too large": (lambda r: os.truncate(r / "log.csv", 2**30), "more than the"),
}


@pytest.mark.parametrize("case", LOGS)
def test_resume_refuses_a_corrupt_or_foreign_log(tmp_path, finished_run, case):
    corrupt, fragment = LOGS[case]
    resume(tmp_path, finished_run, corrupt, "log.csv", fragment)


def test_resume_of_an_intact_run_still_works(tmp_path, finished_run):
    shutil.copytree(finished_run, tmp_path / "run")
    rc, out, err = run_main(train_args(tmp_path, "--resume"))
    assert rc == 0, err
    assert "2 iterations" in out


# -- FIFOs are never opened: a fresh process, which would hang, not the test run --------------

def fashion(directory, n_train=16, n_test=8):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = FASHION_MNIST_FILES[split]
        write_idx(directory / f"{images}.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(directory / f"{labels}.gz", (np.arange(n) % 10).astype(np.uint8))
    return directory


@pytest.mark.parametrize("where", ["checkpoint.npz", "log.csv", "idx", "out"])
def test_a_fifo_is_refused_without_being_opened(tmp_path, finished_run, where):
    args = train_args(tmp_path)
    if where == "idx":
        data = fashion(tmp_path / "fm")
        fifo = data / "train-images-idx3-ubyte.gz"
        fifo.unlink()
        args = [a if a != "synthetic" else "fashion-mnist" for a in args] + ["--data-dir", data]
    elif where == "out":
        fifo = tmp_path / "trace"
    else:
        shutil.copytree(finished_run, tmp_path / "run")
        fifo = tmp_path / "run" / where
        fifo.unlink()
        args.append("--resume")
    os.mkfifo(fifo)
    assert_one_line(accelsim(*args, cwd=tmp_path), fifo.name)


# -- 4. data sets ------------------------------------------------------------------------------------

def idx_header(code, dims):
    return bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)


def bomb_header(path):
    path.write_bytes(gzip.compress(idx_header(8, (10**9, 28, 28))))


def bomb_inflating(path):
    with gzip.open(path, "wb", compresslevel=9) as f:  # 256 MiB of zeros after a 16x28x28 header
        f.write(idx_header(8, (16, 28, 28)))
        zeros = bytes(2**24)
        for _ in range(16):
            f.write(zeros)


IMAGES, LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
DATA = {
    "gzip bomb header": (IMAGES, bomb_header, "implausible IDX header"),
    "gzip bomb data": (IMAGES, bomb_inflating, "has trailing bytes"),
    "truncated": (IMAGES,
                  lambda p: p.write_bytes(gzip.compress(idx_header(8, (16, 28, 28)) + bytes(100))), "truncated"),
    "too small to hold it": (IMAGES,
                             lambda p: p.write_bytes(gzip.compress(idx_header(8, (60000, 28, 28)))),
                             "refused before reading it"),
    "wrong magic": (IMAGES, lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x07\x03" + bytes(64))), "bad magic"),
    "broken gzip": (IMAGES, lambda p: p.write_bytes(p.read_bytes()[:-30]), "corrupt or truncated gzip"),
    "label count": (LABELS, lambda p: write_idx(p, np.zeros(3, np.uint8)), "3 labels for the 16 images"),
    "labels out of range": (LABELS, lambda p: write_idx(p, np.full(16, 200, np.uint8)), "labels must be 0..9"),
    "not images": (IMAGES, lambda p: write_idx(p, np.zeros((16, 28), np.uint8)), "expected ubyte images"),
    "directory": (IMAGES, lambda p: (p.unlink(), p.mkdir()), "expected a regular file, found a directory"),
}


@pytest.mark.parametrize("case", DATA)
def test_bad_idx_files_are_refused_naming_the_file(tmp_path, case):
    name, corrupt, fragment = DATA[case]
    data = fashion(tmp_path / "fm")
    corrupt(data / name)
    args = [a if a != "synthetic" else "fashion-mnist" for a in train_args(tmp_path)]
    refused([*args, "--data-dir", data], name, fragment)


def test_good_idx_files_still_train(tmp_path):
    args = [a if a != "synthetic" else "fashion-mnist" for a in train_args(tmp_path, iterations="1")]
    rc, out, err = run_main([*args, "--data-dir", fashion(tmp_path / "fm")])
    assert rc == 0, err


# -- 5. outputs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["file", "devnull", "symlink", "proc", "long name", "under a file"])
def test_an_unusable_out_is_refused_before_training(tmp_path, case):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    (tmp_path / "link").symlink_to(precious)
    out = {"file": precious, "devnull": Path("/dev/null"), "symlink": tmp_path / "link",
           "proc": Path("/proc/accelsim-trace"), "long name": tmp_path / ("x" * 300),
           "under a file": precious / "trace"}[case]
    args = train_args(tmp_path)
    args[args.index("--out") + 1] = out
    refused(args, str(out)[:30])
    assert precious.read_text() == "keep" and not (tmp_path / "run").exists()


@pytest.mark.parametrize("case, fragment", [
    ("file", "exists and is not a directory"), ("devnull", "exists and is not a directory"),
    ("proc", "cannot write in"), ("long name", "cannot write in"), ("under a file", "is not a directory"),
    ("log.csv is a directory", "log.csv: exists and is a directory"),
    ("summary.yaml is a fifo", "summary.yaml: exists and is a FIFO"),
    ("checkpoint.npz is a symlink", "checkpoint.npz: exists and is a symlink"),
])
def test_an_unusable_run_dir_is_refused_before_training(tmp_path, case, fragment):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    run = {"file": precious, "devnull": Path("/dev/null"), "proc": Path("/proc/accelsim-run"),
           "long name": tmp_path / "runs" / ("x" * 300), "under a file": precious / "run"}.get(case, tmp_path / "run")
    if case.startswith(("log", "summary", "checkpoint")):
        run.mkdir()
        target = run / case.split()[0]
        if "directory" in case:
            target.mkdir()
        elif "fifo" in case:
            os.mkfifo(target)
        else:
            target.symlink_to(precious)
    args = train_args(tmp_path)
    args[args.index("--run-dir") + 1] = run
    refused(args, "--run-dir: ", fragment)
    assert precious.read_text() == "keep" and not (tmp_path / "trace").exists()
    assert not (tmp_path / "runs").exists()  # the probe leaves nothing behind


def test_topkast_at_sparsity_zero_trains_dense(tmp_path):
    """Top-KAST at sparsity 0 has no thresholds to mask with: it trains like dense (it
    raised KeyError before)."""
    rc, out, err = run_main(["trace-from-training", "simple-cnn", "--dataset", "synthetic",
                             "--iterations", "2", "--method", "topkast", "--sparsity", "0", "-q",
                             "--out", str(tmp_path / "t"), "--run-dir", str(tmp_path / "r")])
    assert rc == 0, err
    assert (tmp_path / "t" / "manifest.yaml").is_file()
