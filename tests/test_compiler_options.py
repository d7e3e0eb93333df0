"""jnn.train_compiler_options: what it returns per platform, that this jaxlib's XLA does
what the module says with it, and that a step compiled with it computes the same."""

from __future__ import annotations

import re

import jax
import numpy as np
import optax
import pytest

import jnn
from jnn.compiler_options import CPU_YNN_FUSION_TYPES

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU compiler options")

YNN_KEY = "xla_cpu_experimental_ynn_fusion_type"


def ynn_fused_ops(hlo_text: str) -> set[str]:
    """The HLO opcodes inside the computations that YNNPACK fusions call."""
    called = re.findall(r'fusion\(.*calls=(%[\w.\-]+).*"kind":"__ynn_fusion"', hlo_text)
    ops = set()
    for name in called:
        body = re.search(r"^" + re.escape(name) + r" .*?^}", hlo_text, re.M | re.S).group(0)
        ops.update(re.findall(r"= \S+ (\w[\w-]*)\(", body))
    return ops


@pytest.fixture(scope="module")
def cnn_case():
    rng = np.random.default_rng(0)
    # YNNPACK leaves small convolutions to XLA anyway: these are big enough for it to take
    x = rng.standard_normal((16, 16, 16, 3)).astype(np.float32)
    y = rng.integers(0, 10, 16).astype(np.int32)
    model = jnn.models.get("cnn", features=32, hidden=16)
    state = jnn.create_train_state(model, optax.adam(1e-2), jax.random.PRNGKey(0), x[:1])
    return state, {"x": x, "y": y}


def test_cpu_gets_the_ynn_option_and_other_backends_none():
    assert jnn.train_compiler_options("cpu") == {YNN_KEY: CPU_YNN_FUSION_TYPES}
    assert jnn.train_compiler_options("CPU") == {YNN_KEY: CPU_YNN_FUSION_TYPES}
    assert jnn.train_compiler_options() == jnn.train_compiler_options(jax.default_backend())
    for platform in ("gpu", "cuda", "rocm", "tpu", "METAL"):
        assert jnn.train_compiler_options(platform) == {}


@pytest.mark.parametrize("platform", ["cpuu", "", 3])
def test_an_unknown_platform_is_an_error_naming_the_known_ones(platform):
    with pytest.raises(ValueError, match=r"unknown platform .*'cpu'.*jax.default_backend"):
        jnn.train_compiler_options(platform)


def test_the_option_moves_convolutions_out_of_ynnpack_and_keeps_its_dots(cnn_case):
    lowered = jax.jit(jnn.make_train_step()).lower(*cnn_case)
    default = ynn_fused_ops(lowered.compile().as_text())
    optioned = ynn_fused_ops(lowered.compile(
        compiler_options=jnn.train_compiler_options("cpu")).as_text())
    # If this fails after a jax upgrade, see CPU_YNN_FUSION_TYPES in jnn/compiler_options.py
    assert "convolution" in default
    assert "convolution" not in optioned
    # single dots and reductions, nothing fused into them: the list DOT also fuses the
    # pooling gradient's broadcast into a dot, which made a vmap of the CNN 2.3x slower
    assert {"dot", "reduce"} <= optioned <= {"dot", "reduce", "parameter"}


def test_a_step_compiled_with_the_options_computes_the_default_steps_values(cnn_case):
    state, batch = cnn_case
    step = jnn.make_train_step()
    reference = jax.jit(step)
    optioned = jax.jit(step, compiler_options=jnn.train_compiler_options())
    ref_state, opt_state = state, state
    for _ in range(3):
        ref_state, ref_metrics = reference(ref_state, batch)
        opt_state, opt_metrics = optioned(opt_state, batch)
        np.testing.assert_allclose(opt_metrics["loss"], ref_metrics["loss"], rtol=1e-5)
    for got, want in zip(jax.tree.leaves(opt_state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_jit_sharded_compiles_train_steps_with_the_options_and_eval_steps_without(cnn_case):
    state, batch = cnn_case
    mesh = jnn.parallel.make_mesh(jax.devices()[:1])
    state = jnn.parallel.shard_state(state, mesh)
    batch = jnn.parallel.shard_batch(batch, mesh)
    train = jnn.parallel.jit_sharded(jnn.make_train_step(), state, mesh)
    evaluate = jnn.parallel.jit_sharded(jnn.make_eval_step(), state, mesh, donate=False)
    assert "convolution" not in ynn_fused_ops(train.lower(state, batch).compile().as_text())
    assert "convolution" in ynn_fused_ops(evaluate.lower(state, batch).compile().as_text())


def test_the_harness_compiles_pmap_train_steps_with_the_options(monkeypatch):
    """jax.pmap takes no compiler options: the harness gives them to its ahead-of-time compile.
    Marked by an option that takes every op out of YNNPACK: the digits CNN's dense layers
    are YNNPACK dots otherwise, as in its eval step."""
    from train import config as configs
    from train import loop, runner

    config = configs.get_config("digits_cnn")
    config.update({"parallel": "pmap", "batch_size": 8 * jax.local_device_count(),
                   "steps_per_call": 1})
    dataset = jnn.data.load(config["dataset"], data_dir=config["data_dir"],
                            validation_fraction=config["validation_fraction"])
    monkeypatch.setattr(jnn, "train_compiler_options", lambda platform=None: {YNN_KEY: ""})
    built = runner.build_runner(config, dataset, loop.make_batches(config, dataset, "train")[0])
    assert built.mode == "pmap"
    assert ynn_fused_ops(built.train_step.as_text()) == set()
    assert "dot" in ynn_fused_ops(built.eval_step.as_text())
