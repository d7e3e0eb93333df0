"""Test set-up: 8 forced CPU devices, and a private tfds data dir (nothing is downloaded)."""

import os
import tempfile

# Before jax is imported anywhere: multi-device tests run on 8 CPU devices.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ["JAX_PLATFORMS"] = "cpu"
# The bundled datasets are prepared into a fresh dir; MNIST/CIFAR come from mock_data.
os.environ["TFDS_DATA_DIR"] = tempfile.mkdtemp(prefix="jnn-tfds-")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    import jnn

    return jnn.data.load("digits")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


class CompileCounter:
    """Counts XLA compilations (backend compiles) while `counting` is True."""

    def __init__(self):
        self.count = 0
        self.counting = False
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, name, *args, **kwargs):
        if self.counting and name == "/jax/core/compile/backend_compile_duration":
            self.count += 1


_COUNTER = None


@pytest.fixture
def compile_counter():
    global _COUNTER
    if _COUNTER is None:
        _COUNTER = CompileCounter()
    _COUNTER.count, _COUNTER.counting = 0, False
    yield _COUNTER
    _COUNTER.counting = False
