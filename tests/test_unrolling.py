"""train.unrolling: the cap on LLVM's full unrolling reaches XLA before jax starts, keeps a
loop of 10 a loop, leaves a train step's values as they were up to float rounding, and
steps aside (saying why) wherever it cannot or should not apply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from train import unrolling

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fresh_cpu_process(monkeypatch):
    """As in a process whose jax computes on the CPU alone and has not started: the cap is
    set into $XLA_FLAGS (restored after the test)."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
    monkeypatch.delenv(unrolling.ENV_SWITCH, raising=False)
    monkeypatch.setattr(unrolling, "accelerator_possible", lambda: None)
    monkeypatch.setattr(unrolling, "backends_started", lambda: False)


def test_it_adds_the_flag_to_xla_flags(fresh_cpu_process):
    assert unrolling.cap_full_unrolling() is None
    assert os.environ["XLA_FLAGS"] == (f"--xla_cpu_multi_thread_eigen=true "
                                       f"{unrolling.UNROLL_CAP_FLAG}")
    assert unrolling.cap_full_unrolling() is None  # a second call (or a parent's) adds none
    assert os.environ["XLA_FLAGS"].count("unroll-full-max-count") == 1


def test_it_steps_aside_and_says_why(fresh_cpu_process, monkeypatch):
    before = os.environ["XLA_FLAGS"]
    monkeypatch.setenv(unrolling.ENV_SWITCH, "0")
    assert unrolling.cap_full_unrolling() == "$JNN_CAP_FULL_UNROLLING is 0"
    monkeypatch.delenv(unrolling.ENV_SWITCH)
    monkeypatch.setattr(unrolling, "backends_started", lambda: True)
    assert "jax's backends have started" in unrolling.cap_full_unrolling()
    monkeypatch.setattr(unrolling, "accelerator_possible", lambda: "jax_platforms=cuda")
    assert unrolling.cap_full_unrolling() == ("jax may compute on an accelerator "
                                              "(jax_platforms=cuda)")
    assert os.environ["XLA_FLAGS"] == before
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_extra_options=-some-option=1")
    assert unrolling.cap_full_unrolling() == "$XLA_FLAGS already sets xla_backend_extra_options"
    assert os.environ["XLA_FLAGS"] == "--xla_backend_extra_options=-some-option=1"


def test_it_counts_any_platform_but_the_cpu_and_any_installed_plugin(monkeypatch):
    import importlib.metadata
    import importlib.util

    assert unrolling.accelerator_possible("cpu") is None
    assert unrolling.accelerator_possible("CPU ") is None
    assert unrolling.accelerator_possible("cuda") == "jax_platforms=cuda"
    assert unrolling.accelerator_possible("cpu,cuda") == "jax_platforms=cpu,cuda"
    installed = set()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in installed
                        else None)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: (
        ["a plugin"] if "entry point" in installed else []))
    assert unrolling.accelerator_possible("") is None
    for name, reason in (("entry point", "a jax plugin is installed"),
                         ("libtpu", "libtpu is installed"),
                         ("jax_plugins", "a jax_plugins package is installed")):
        installed.add(name)
        assert unrolling.accelerator_possible("") == reason


def test_in_this_running_process_it_changes_nothing(monkeypatch):
    import jax

    jax.devices()
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.delenv(unrolling.ENV_SWITCH, raising=False)
    assert unrolling.backends_started()
    assert unrolling.cap_full_unrolling() is not None
    assert os.environ["XLA_FLAGS"] == ""


def test_the_harness_caps_unrolling_and_keeps_freed_memory_before_it_trains(monkeypatch,
                                                                            tmp_path):
    import train.loop
    from train import allocator
    from train.__main__ import main

    calls = []

    class Stop(Exception):
        pass

    def train_and_evaluate(*args, **kwargs):
        calls.append("train")
        raise Stop

    monkeypatch.setattr(unrolling, "cap_full_unrolling", lambda: calls.append("cap") or None)
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("keep") or None)
    monkeypatch.setattr(train.loop, "train_and_evaluate", train_and_evaluate)
    monkeypatch.setenv("JNN_COMPILATION_CACHE", "0")
    with pytest.raises(Stop):
        main(["--workdir", str(tmp_path / "run"), "--traceback"])
    assert calls == ["cap", "keep", "train"]


# One process per setting, as LLVM's options are the process's. Each compiles an Adam-style
# update of a (128, 10) array (a loop of 10 inside) with its optimized IR dumped, and takes
# the loss, the gradients and one train step of the MLP on digits.
_CAPPED_OR_NOT = """
    import json, os, sys
    os.environ["XLA_FLAGS"] = ("--xla_dump_to=" + sys.argv[1] +
                               " --xla_dump_hlo_module_re=.*update.*")
    from train.unrolling import cap_full_unrolling
    refused = cap_full_unrolling()
    import jax, jax.numpy as jnp, numpy as np, optax
    import jnn
    from sklearn.datasets import load_digits

    def update(p, m, v, g):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        return p - 1e-3 * m / (jnp.sqrt(v) + 1e-8), m, v

    jax.jit(update).lower(*[jnp.ones((128, 10))] * 4).compile()
    digits = load_digits()
    x = (digits.data[:128] / 16).astype(np.float32)
    y = digits.target[:128].astype(np.int32)
    model = jnn.models.MLP()
    state = jnn.create_train_state(model, optax.adam(1e-3), jax.random.PRNGKey(0), x[:1])

    def loss(params):
        logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(state.params)
    step = jax.jit(jnn.make_train_step(), compiler_options=jnn.train_compiler_options())
    stepped, _ = step(state, {"x": x, "y": y})
    arrays = jax.tree.leaves((value, grads, stepped.params))
    np.savez(os.path.join(sys.argv[1], "values.npz"), *[np.asarray(a) for a in arrays])
    print(json.dumps({"refused": refused, "flags": os.environ["XLA_FLAGS"]}))
"""


def _capped_or_not(tmp_path, capped: bool):
    folder = tmp_path / ("capped" if capped else "default")
    folder.mkdir()
    script = tmp_path / "capped_or_not.py"
    script.write_text(textwrap.dedent(_CAPPED_OR_NOT))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
               JNN_CAP_FULL_UNROLLING="1" if capped else "0")
    result = subprocess.run([sys.executable, str(script), str(folder)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    said = json.loads(result.stdout.strip().splitlines()[-1])
    ir = "".join((folder / name).read_text() for name in os.listdir(folder)
                 if name.endswith(".ir-with-opt.ll"))
    values = np.load(folder / "values.npz")
    return said, ir, [values[f"arr_{i}"] for i in range(len(values.files))]


@pytest.mark.slow
def test_the_cap_keeps_a_loop_of_10_a_loop_and_the_values_as_they_were(tmp_path):
    said, capped_ir, capped = _capped_or_not(tmp_path, True)
    assert said["refused"] is None and unrolling.UNROLL_CAP_FLAG in said["flags"].split()
    said, default_ir, default = _capped_or_not(tmp_path, False)
    assert said["refused"] == "$JNN_CAP_FULL_UNROLLING is 0"
    # uncapped, the loop of 10 is written out, its division ten times over; capped, it stays
    # a loop with fewer (two on an AVX-512 host). The IR sizes differ 1.7x there, 9x on AVX2
    divisions = {"capped": capped_ir.count(" fdiv "), "default": default_ir.count(" fdiv ")}
    assert 0 < divisions["capped"] < divisions["default"] and divisions["default"] >= 10, divisions
    assert len(capped_ir) < len(default_ir)
    assert len(capped) == len(default) > 3
    for a, b in zip(capped, default):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
