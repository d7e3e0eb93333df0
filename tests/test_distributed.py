"""Two local processes x 2 CPU devices (gloo, coordinator on 127.0.0.1) train to the same
parameters as one process with 4 devices."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import jnn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import distributed_worker  # noqa: E402
from gloo_output import without_gloo_notices  # noqa: E402

TIMEOUT_S = 240
pytestmark = pytest.mark.slow  # every test here starts processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(tmp_path, fsdp: bool) -> dict:
    out = tmp_path / "params.npz"
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "distributed_worker.py"),
                               str(i), str(port), str(out), "1" if fsdp else "0"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        logs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:  # a dead or hung peer must not hang the test run
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return dict(np.load(out)), str(out) + ".checkpoint"


@pytest.mark.parametrize("fsdp", [False, True])
def test_two_processes_train_like_one_process_with_four_devices(tmp_path, fsdp):
    got, _ = _run_two_processes(tmp_path, fsdp)
    expected = distributed_worker.train(jnn.parallel.make_mesh(jax.devices()[:4]), fsdp)
    assert got.keys() == expected.keys()
    mismatched = [k for k in expected
                  if not np.allclose(got[k], expected[k], rtol=1e-4, atol=1e-5)]
    assert not mismatched
    assert {"metric/loss/sum", "metric/loss/count", "metric/accuracy/sum",
            "metric/accuracy/count"} <= got.keys()
    assert got["metric/loss/count"] == 4 * 16 and got["metric/accuracy/count"] == 4 * 16


def test_two_processes_write_one_checkpoint_that_restores_the_trained_parameters(tmp_path):
    from train.checkpoint import restore_state

    got, checkpoint = _run_two_processes(tmp_path, fsdp=True)
    restored = restore_state(checkpoint, distributed_worker.initial_state())
    leaves = jax.tree_util.tree_flatten_with_path(restored.params)[0]
    for path, value in leaves:
        np.testing.assert_allclose(np.asarray(value), got[jax.tree_util.keystr(path)], rtol=1e-6)
    assert int(restored.step) == 4


# ---------------------------------------------- the harness itself: python -m train
# A Python audit hook, installed as sitecustomize through PYTHONPATH, that logs every path
# under $JNN_WRITE_ROOT the process opens for writing, creates, renames or removes. In a
# shared workdir it tells which process wrote a file. (orbax's array data is written by
# tensorstore in C++, so it is not logged; the checkpoint is shared by design anyway.)
WRITE_HOOK = '''
import os
import sys

_LOG, _ROOT = os.environ.get("JNN_WRITE_LOG"), os.environ.get("JNN_WRITE_ROOT")
if _LOG and _ROOT:
    _fd = os.open(_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    _PATH_ARGS = {"os.mkdir": 1, "os.rename": 2, "os.remove": 1, "os.rmdir": 1,
                  "os.symlink": 2, "os.link": 2, "os.truncate": 1, "shutil.rmtree": 1}

    def _record(event, path):
        if isinstance(path, (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(path))
            if path.startswith(_ROOT):
                os.write(_fd, f"{event}\\t{path}\\n".encode())

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    mode is None and isinstance(flags, int) and flags & _WRITES):
                _record(event, path)
        elif event in _PATH_ARGS:
            for path in args[:_PATH_ARGS[event]]:
                _record(event, path)

    sys.addaudithook(_hook)
'''
HARNESS_ARGS = ["-m", "train", "--config", "digits_cnn", "--set", "epochs=2", "--no-progress"]
HARNESS_TIMEOUT_S = 300


def _start_harness(tmp_path, name, devices, workdir, extra_args=()):
    """Starts `python -m train` with `devices` CPU devices in its own empty cwd; its stdout,
    stderr and write log go to tmp_path/NAME.{out,err,writes}."""
    hook_dir, cwd = tmp_path / "hook", tmp_path / f"{name}.cwd"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(WRITE_HOOK)
    cwd.mkdir()
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(hook_dir), ROOT,
                                                       os.environ.get("PYTHONPATH")])),
           "JNN_WRITE_LOG": str(tmp_path / f"{name}.writes"), "JNN_WRITE_ROOT": str(tmp_path)}
    with open(tmp_path / f"{name}.out", "w") as out, open(tmp_path / f"{name}.err", "w") as err:
        return subprocess.Popen([sys.executable, *HARNESS_ARGS, "--workdir", str(workdir),
                                 *extra_args], cwd=cwd, env=env, stdout=out, stderr=err)


def _wait_all(procs, timeout_s):
    deadline = time.monotonic() + timeout_s
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:  # a hung process (a peer that died, a stuck collective) fails the test
        for p in procs:
            if p.poll() is None:
                p.kill()  # SIGKILL: jax's preemption notifier swallows SIGTERM
                p.wait()


def _output(tmp_path, name):
    """(stdout lines without gloo's connection notices, stderr, written paths)."""
    lines = without_gloo_notices((tmp_path / f"{name}.out").read_text())
    writes = tmp_path / f"{name}.writes"
    written = [line.split("\t", 1)[1] for line in writes.read_text().splitlines()] \
        if writes.exists() else []
    return (lines,
            (tmp_path / f"{name}.err").read_text(), written)


def _restored(summary, digits):
    from train import config as configs
    from train.checkpoint import restore_state
    from train.runner import make_state

    config = configs.get_config("digits_cnn")
    config["epochs"] = 2
    return jnn.state.array_fields(restore_state(summary["checkpoint"], make_state(config, digits)))


def test_the_harness_on_two_processes_equals_one_process_and_only_process_0_writes(
        tmp_path, digits):
    # `digits` has prepared the dataset in $TFDS_DATA_DIR, which the processes share, so
    # they only read it. The two processes share one workdir; the audit hook tells apart
    # what each wrote there.
    shared, single = tmp_path / "two", tmp_path / "one"
    port = _free_port()
    procs = [_start_harness(tmp_path, f"p{i}", 2, shared,
                            ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                             "--process-id", str(i)]) for i in range(2)]
    procs.append(_start_harness(tmp_path, "one", 4, single))
    _wait_all(procs, HARNESS_TIMEOUT_S)
    (out0, err0, wrote0), (out1, err1, wrote1), (out_one, err_one, _) = (
        _output(tmp_path, name) for name in ("p0", "p1", "one"))
    for p, err in zip(procs, (err0, err1, err_one)):
        assert p.returncode == 0, err[-3000:]

    # only process 0 reports: the same lines as the one-process run, up to timings
    assert out1 == [], out1
    assert [line.split()[:2] for line in out0] == [line.split()[:2] for line in out_one] == [
        ["epoch", "1/2"], ["epoch", "2/2"], ["test", "accuracy:"], ["72", "steps"]]
    assert out0[-1].endswith(f"in 2 process(es); summary: {shared / 'summary.json'}")
    assert out_one[-1].endswith(f"in 1 process(es); summary: {single / 'summary.json'}")

    # only process 0 writes: one set of outputs, and process 1 touched nothing outside the
    # orbax checkpoint (where it writes its own part, by design)
    assert sorted(os.listdir(shared)) == sorted(os.listdir(single)) == [
        "checkpoints", "config.json", "metrics.jsonl", "plots", "summary.json", "tensorboard"]
    assert {str(shared / n) for n in ("summary.json", "metrics.jsonl")} <= set(wrote0)
    checkpoint = str(shared / "checkpoints")  # each process writes its part of a checkpoint
    assert [path for path in wrote1 if not path.startswith(checkpoint)] == []
    assert [path for path in wrote0 if not path.startswith(str(shared))] == []
    assert os.listdir(tmp_path / "p0.cwd") == os.listdir(tmp_path / "p1.cwd") == []
    assert len((shared / "metrics.jsonl").read_text().splitlines()) == 2

    # the same training: summaries and the final checkpoints agree to float tolerance
    two = json.loads((shared / "summary.json").read_text())
    one = json.loads((single / "summary.json").read_text())
    assert (two["processes"], one["processes"]) == (2, 1)
    assert two["devices"] == one["devices"] == 4 and two["parallel"] == one["parallel"] == "shard"
    assert two["steps"] == one["steps"] == 72 and two["epochs"] == one["epochs"] == 2
    assert two["test_accuracy"] == one["test_accuracy"] > 0.5
    np.testing.assert_allclose(two["test_loss"], one["test_loss"], rtol=1e-5)
    for a, b in zip(two["history"], one["history"]):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5)
    assert two["checkpoint"] == os.path.join(checkpoint, "72", "state")
    assert one["checkpoint"] == str(single / "checkpoints" / "72" / "state")
    restored_two, restored_one = _restored(two, digits), _restored(one, digits)
    assert int(restored_two["step"]) == 72
    assert jax.tree.structure(restored_two) == jax.tree.structure(restored_one)
    # Two processes sum gradients in another order than one: after 72 Adam steps a few
    # elements differ by more than rounding, where a gradient near zero makes Adam's
    # m / sqrt(v) sensitive (on a CPU without AVX-512, a bias element 0.0128 against
    # 0.0128084). Tolerance relative to each array's largest value; a lost or doubled
    # gradient moves every element by far more.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        np.asarray(a), np.asarray(b), rtol=1e-5, atol=2e-3 * float(np.abs(b).max())),
        restored_two, restored_one)


def test_the_harness_under_pmap_on_two_processes_trains_checkpoints_and_resumes_like_one_device(
        tmp_path, digits):
    from train import config as configs
    from train.loop import train_and_evaluate

    shared = tmp_path / "two"

    def run_pair(name):
        port = _free_port()
        procs = [_start_harness(tmp_path, f"{name}{i}", 2, shared,
                                ["--parallel", "pmap",
                                 "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                 "--process-id", str(i)]) for i in range(2)]
        _wait_all(procs, HARNESS_TIMEOUT_S)
        for i, p in enumerate(procs):
            assert p.returncode == 0, _output(tmp_path, f"{name}{i}")[1][-3000:]
        return _output(tmp_path, f"{name}0")[0], json.loads((shared / "summary.json").read_text())

    _, first = run_pair("a")
    shutil.rmtree(shared / "checkpoints" / "72")  # as if stopped after epoch 1 (step 36)
    lines, two = run_pair("b")
    assert "resumed from step 36" in lines
    assert (two["parallel"], two["devices"], two["processes"], two["steps"]) == ("pmap", 4, 2, 72)
    config = configs.get_config("digits_cnn")
    config.update({"epochs": 2, "parallel": "none"})
    one = train_and_evaluate(config, str(tmp_path / "one"), progress=False, log=lambda _: None)
    np.testing.assert_allclose(two["test_loss"], one["test_loss"], rtol=1e-5)
    np.testing.assert_allclose(first["test_loss"], one["test_loss"], rtol=1e-5)
