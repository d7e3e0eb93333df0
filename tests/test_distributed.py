"""Two local processes x 2 CPU devices (gloo, coordinator on 127.0.0.1) train to the same
parameters as one process with 4 devices."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import jnn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import distributed_worker  # noqa: E402

TIMEOUT_S = 240


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
