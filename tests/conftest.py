"""Test set-up: 8 forced CPU devices, and a private tfds data dir (nothing is downloaded)."""

import atexit
import os
import shutil
import tempfile

# Before jax is imported anywhere: multi-device tests run on 8 CPU devices.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ["JAX_PLATFORMS"] = "cpu"
# The bundled datasets are prepared into a fresh dir; MNIST/CIFAR come from mock_data.
# Removed when the test process exits (each xdist worker makes its own).
os.environ["TFDS_DATA_DIR"] = tempfile.mkdtemp(prefix="jnn-tfds-")
atexit.register(shutil.rmtree, os.environ["TFDS_DATA_DIR"], ignore_errors=True)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# jax's backends start now, with the flags above: tests that run `python -m train`'s
# start-up in this process cannot then change how later tests compile (train.unrolling
# sets $XLA_FLAGS only before the backends start).
jax.devices()

# Day to day, most of a test's time is XLA compiling its small programs: keep them in
# jax's persistent compilation cache between runs (a clean clone, as in CI, starts
# empty). JNN_TEST_COMPILATION_CACHE=0 turns it off.
if os.environ.get("JNN_TEST_COMPILATION_CACHE", "1") != "0":
    jax.config.update("jax_compilation_cache_dir", os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache",
        "jax-compilation-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def digits():
    import jnn

    return jnn.data.load("digits")


@pytest.fixture
def registries():
    """Restores the model and dataset registries after a test that registers its own."""
    import jnn

    models, specs = dict(jnn.models._REGISTRY), dict(jnn.data.SPECS)
    yield
    jnn.models._REGISTRY.clear()
    jnn.models._REGISTRY.update(models)
    jnn.data.SPECS.clear()
    jnn.data.SPECS.update(specs)


@pytest.fixture
def scripted_val_losses(monkeypatch):
    """script(losses): the harness's validation losses, epoch by epoch, are `losses`
    (training stays real), so early stopping's decisions are known in advance."""
    import train.loop as loop

    report = loop._report

    def script(losses):
        losses = iter(losses)

        def scripted_report(sums, dataset, prefix):
            out = report(sums, dataset, prefix)
            if prefix == "val":
                out["val_loss"] = next(losses)
            return out

        monkeypatch.setattr(loop, "_report", scripted_report)

    return script


@pytest.fixture
def rng():
    return np.random.default_rng(0)


class CompileCounter:
    """Counts the programs jax compiles while `counting` is True (the backend-compile
    event, which jax also records for a load from the persistent compilation cache)."""

    def __init__(self):
        self.count = 0
        self.names = []  # the compiled functions' names, in order
        self.counting = False
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, name, *args, fun_name=None, **kwargs):
        if self.counting and name == "/jax/core/compile/backend_compile_duration":
            self.count += 1
            self.names.append(fun_name)


_COUNTER = None


@pytest.fixture
def compile_counter():
    global _COUNTER
    if _COUNTER is None:
        _COUNTER = CompileCounter()
    _COUNTER.count, _COUNTER.names, _COUNTER.counting = 0, [], False
    yield _COUNTER
    _COUNTER.counting = False


def _refuse_remote_connections():
    """Nothing is downloaded at test time: a connection to anything but this machine fails
    the test that makes it (loopback stays open for the multi-process tests)."""
    import socket

    local = ("127.0.0.1", "::1", "localhost", "0.0.0.0", None, "")
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def refuse(address):
        raise AssertionError(f"a test tried to reach {address}; tests must not download")

    def connect_locally(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in local:
            refuse(address)
        return connect(self, address)

    def resolve_locally(host, *args, **kwargs):
        if host not in local and host != socket.gethostname():
            refuse(host)
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = connect_locally, resolve_locally


_refuse_remote_connections()
