"""train.xla_flags: the cap on LLVM's full unrolling reaches XLA before jax starts, keeps a
loop of 10 a loop, leaves the step's values as they were up to float rounding, and steps
aside (saying why) wherever it cannot or should not apply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, env: dict | None = None) -> str:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("XLA_FLAGS", "JNN_CAP_FULL_UNROLLING", "JAX_PLATFORMS")}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                            env={**clean, **(env or {})}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_it_sets_the_flag_before_jax_starts_and_says_why_not_otherwise():
    reasons = json.loads(_python("""
        import json, os
        import jax
        from train import xla_flags
        out = {}
        os.environ["JNN_CAP_FULL_UNROLLING"] = "0"
        out["switch"] = xla_flags.cap_full_unrolling()
        del os.environ["JNN_CAP_FULL_UNROLLING"]
        os.environ["XLA_FLAGS"] = "--xla_backend_extra_options=-some-option=1"
        out["own"] = xla_flags.cap_full_unrolling()
        out["own_kept"] = os.environ["XLA_FLAGS"]
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=true"
        jax.config.update("jax_platforms", "cuda")
        out["accelerator"] = xla_flags.cap_full_unrolling()
        jax.config.update("jax_platforms", "cpu")
        out["set"] = xla_flags.cap_full_unrolling()
        out["flags"] = os.environ["XLA_FLAGS"]
        jax.devices()
        os.environ["XLA_FLAGS"] = ""
        out["running"] = xla_flags.cap_full_unrolling()
        out["after"] = os.environ["XLA_FLAGS"]
        print(json.dumps(out))
    """))
    from train import xla_flags

    assert reasons["switch"] == "$JNN_CAP_FULL_UNROLLING is 0"
    assert reasons["own"] == "$XLA_FLAGS already sets xla_backend_extra_options"
    assert reasons["own_kept"] == "--xla_backend_extra_options=-some-option=1"
    assert reasons["accelerator"] == ("the process may compute on an accelerator "
                                      "(JAX_PLATFORMS=cuda)")
    assert reasons["set"] is None
    assert reasons["flags"] == f"--xla_cpu_multi_thread_eigen=true {xla_flags.FLAG}"
    assert "already running" in reasons["running"] and reasons["after"] == ""


def test_in_a_running_process_it_changes_nothing(monkeypatch):
    import jax

    from train import xla_flags

    jax.devices()
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.delenv("JNN_CAP_FULL_UNROLLING", raising=False)
    reason = xla_flags.cap_full_unrolling()
    if xla_flags._accelerator_possible() is None:  # otherwise it says so first
        assert "already running" in reason
    assert reason is not None and os.environ["XLA_FLAGS"] == ""


# One process per setting: LLVM's options are the process's. Each compiles an Adam-style
# update of a (128, 10) array (a loop of 10 inside) with its optimized IR dumped, and takes
# a gradient of the digits MLP.
_CAPPED_OR_NOT = """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_dump_to=" + sys.argv[1] + " --xla_dump_hlo_module_re=.*update.*"
    from train.xla_flags import cap_full_unrolling
    print(cap_full_unrolling(), file=sys.stderr)
    import jax, jax.numpy as jnp, numpy as np, optax
    import jnn
    from sklearn.datasets import load_digits

    def update(p, m, v, g):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        return p - 1e-3 * m / (jnp.sqrt(v) + 1e-8), m, v

    jax.jit(update).lower(*[jnp.ones((128, 10))] * 4).compile()
    digits = load_digits()
    x, y = (digits.data[:128] / 16).astype(np.float32), digits.target[:128].astype(np.int32)
    model = jnn.models.MLP()
    state = jnn.create_train_state(model, optax.adam(1e-3), jax.random.PRNGKey(0), x[:1])
    step = jax.jit(jnn.make_train_step(), compiler_options=jnn.train_compiler_options())
    for _ in range(2):
        state, metrics = step(state, {"x": x, "y": y})
    leaves = jax.tree.leaves((state.params, metrics))
    np.savez(os.path.join(sys.argv[1], "values.npz"), *[np.asarray(a) for a in leaves])
    print("done")
"""


def _capped_or_not(tmp_path, capped: bool):
    folder = tmp_path / ("capped" if capped else "default")
    folder.mkdir()
    env = {"JAX_PLATFORMS": "cpu", "JNN_CAP_FULL_UNROLLING": "1" if capped else "0"}
    script = tmp_path / "capped_or_not.py"
    script.write_text(textwrap.dedent(_CAPPED_OR_NOT))
    clean = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, str(script), str(folder)], cwd=ROOT,
                            env={**clean, **env, "PYTHONPATH": ROOT}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ir_bytes = sum(os.path.getsize(folder / name) for name in os.listdir(folder)
                   if name.endswith(".ir-with-opt.ll"))
    values = np.load(folder / "values.npz")
    return ir_bytes, [values[k] for k in sorted(values.files, key=lambda k: int(k[4:]))]


@pytest.mark.slow
def test_the_cap_keeps_a_loop_of_10_a_loop_and_the_step_values_as_they_were(tmp_path):
    capped_ir, capped = _capped_or_not(tmp_path, True)
    default_ir, default = _capped_or_not(tmp_path, False)
    assert 0 < capped_ir < default_ir / 2, (capped_ir, default_ir)
    assert len(capped) == len(default)
    for a, b in zip(capped, default):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_the_harness_caps_unrolling_before_it_trains(monkeypatch, tmp_path):
    import train.loop
    from train import xla_flags
    from train.__main__ import main

    calls = []

    class Stop(Exception):
        pass

    def train_and_evaluate(*args, **kwargs):
        calls.append("train")
        raise Stop

    monkeypatch.setattr(xla_flags, "cap_full_unrolling", lambda: calls.append("cap") or None)
    monkeypatch.setattr(train.loop, "train_and_evaluate", train_and_evaluate)
    monkeypatch.setenv("JNN_COMPILATION_CACHE", "0")
    with pytest.raises(Stop):
        main(["--workdir", str(tmp_path / "run"), "--traceback"])
    assert calls == ["cap", "train"]
