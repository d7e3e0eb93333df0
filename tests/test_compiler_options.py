"""jnn.train_compiler_options / eval_compiler_options: what they return per platform and
program, that this jaxlib's XLA does what the module says with them, and that a step
compiled with them computes the same."""

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
def mlp_case():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 64)).astype(np.float32)
    y = rng.integers(0, 10, 32).astype(np.int32)
    model = jnn.models.get("mlp", hidden_sizes=(128,))
    state = jnn.create_train_state(model, optax.adam(1e-2), jax.random.PRNGKey(0), x[:1])
    return state, {"x": x, "y": y}


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


def assert_trains_the_same(reference, optioned, state, batch, steps: int = 3):
    """Both compiled train steps, run `steps` times from `state`, give the same losses and
    parameters up to float rounding."""
    ref_state, opt_state = state, state
    for _ in range(steps):
        ref_state, ref_metrics = reference(ref_state, batch)
        opt_state, opt_metrics = optioned(opt_state, batch)
        np.testing.assert_allclose(opt_metrics["loss"], ref_metrics["loss"], rtol=1e-5)
    for got, want in zip(jax.tree.leaves(opt_state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def sharded_programs(case) -> tuple[str, str]:
    """The compiled HLO text of jit_sharded's train and eval steps on a one-device mesh."""
    state, batch = case
    mesh = jnn.parallel.make_mesh(jax.devices()[:1])
    state = jnn.parallel.shard_state(state, mesh)
    batch = jnn.parallel.shard_batch(batch, mesh)
    train = jnn.parallel.jit_sharded(jnn.make_train_step(), state, mesh)
    evaluate = jnn.parallel.jit_sharded(jnn.make_eval_step(), state, mesh, donate=False)
    return (train.lower(state, batch).compile().as_text(),
            evaluate.lower(state, batch).compile().as_text())


def test_a_step_compiled_with_the_options_computes_the_default_steps_values(cnn_case):
    step = jnn.make_train_step()
    assert_trains_the_same(jax.jit(step),
                           jax.jit(step, compiler_options=jnn.train_compiler_options()),
                           *cnn_case)


def test_jit_sharded_compiles_a_cnns_train_step_with_the_options_and_eval_step_without(
        cnn_case):
    train, evaluate = sharded_programs(cnn_case)
    assert "convolution" not in ynn_fused_ops(train)
    assert "convolution" in ynn_fused_ops(evaluate)


def built_runner(name: str, parallel: str, steps_per_call: int = 1):
    from train import config as configs
    from train import loop, runner

    config = configs.get_config(name)
    config.update({"parallel": parallel, "batch_size": 8 * jax.local_device_count(),
                   "steps_per_call": steps_per_call})
    dataset = jnn.data.load(config["dataset"], data_dir=config["data_dir"],
                            validation_fraction=config["validation_fraction"])
    built = runner.build_runner(config, dataset, loop.make_batches(config, dataset, "train")[0])
    assert built.mode == parallel
    return built


def test_the_harness_compiles_pmap_steps_with_the_options_for_their_programs():
    """jax.pmap takes no compiler options: the harness gives them to its ahead-of-time
    compile, chosen from each step's jaxpr."""
    cnn = built_runner("digits_cnn", "pmap")
    assert "convolution" not in ynn_fused_ops(cnn.train_step.as_text())
    assert "dot" in ynn_fused_ops(cnn.train_step.as_text())
    assert {"convolution", "dot"} <= ynn_fused_ops(cnn.eval_step.as_text())
    mlp = built_runner("digits_mlp", "pmap")
    assert ynn_fused_ops(mlp.train_step.as_text()) == set()
    assert ynn_fused_ops(mlp.eval_step.as_text()) == set()


@pytest.mark.parametrize("steps_per_call", [1, 3])
def test_the_harness_compiles_an_mlps_steps_without_ynnpack(steps_per_call):
    mlp = built_runner("digits_mlp", "none", steps_per_call)
    assert ynn_fused_ops(mlp.train_step.as_text()) == set()
    assert ynn_fused_ops(mlp.eval_step.as_text()) == set()


def jaxpr_of(step, case):
    return jax.make_jaxpr(step)(*case)


def test_a_program_without_convolutions_gets_ynnpack_off_train_and_eval(mlp_case):
    train = jaxpr_of(jnn.make_train_step(), mlp_case)
    evaluate = jaxpr_of(jnn.make_eval_step(), mlp_case)
    assert jnn.train_compiler_options("cpu", jaxpr=train) == {YNN_KEY: ""}
    assert jnn.eval_compiler_options("cpu", jaxpr=evaluate) == {YNN_KEY: ""}
    # a Jaxpr does as well as a ClosedJaxpr; other backends get nothing either way
    assert jnn.train_compiler_options("cpu", jaxpr=train.jaxpr) == {YNN_KEY: ""}
    assert jnn.train_compiler_options("gpu", jaxpr=train) == {}
    assert jnn.eval_compiler_options("tpu", jaxpr=evaluate) == {}
    # without the program: the options that suit convolutions
    assert jnn.eval_compiler_options("cpu") == {}


def test_a_program_with_convolutions_gets_the_convolution_options(cnn_case):
    from flax import linen as nn

    assert jnn.train_compiler_options("cpu", jaxpr=jaxpr_of(jnn.make_train_step(), cnn_case)) \
        == {YNN_KEY: CPU_YNN_FUSION_TYPES}
    assert jnn.eval_compiler_options("cpu", jaxpr=jaxpr_of(jnn.make_eval_step(), cnn_case)) == {}

    class PlainConv(nn.Module):  # lax's own convolution, not jnn's platform-dependent one
        @nn.compact
        def __call__(self, x):
            return nn.Dense(10)(nn.Conv(4, (3, 3))(x).reshape(x.shape[0], -1))

    state, batch = cnn_case
    plain = jnn.create_train_state(jnn.from_linen(PlainConv(), mode=None), optax.sgd(0.1),
                                   jax.random.PRNGKey(0), batch["x"][:1])
    jaxpr = jaxpr_of(jnn.make_train_step(), (plain, batch))
    assert jnn.train_compiler_options("cpu", jaxpr=jaxpr) == {YNN_KEY: CPU_YNN_FUSION_TYPES}
    # a convolution inside a loop (several steps per call) is found too
    stacked = jnn.multistep.stack_batches([batch, batch], 2)
    looped = jaxpr_of(jnn.multistep.scan_steps(jnn.make_train_step()), (state, stacked))
    assert jnn.train_compiler_options("cpu", jaxpr=looped) == {YNN_KEY: CPU_YNN_FUSION_TYPES}


@pytest.mark.parametrize("options", [jnn.train_compiler_options, jnn.eval_compiler_options])
@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_a_jaxpr_argument_that_is_not_one_is_a_clear_error(options, platform):
    with pytest.raises(TypeError, match=r"expected a jaxpr .*make_jaxpr.*got function"):
        options(platform, jaxpr=jnn.make_train_step())


def test_ynnpack_off_leaves_an_mlp_step_no_ynnpack_fusion_and_the_same_values(mlp_case):
    state, batch = mlp_case
    traced = jax.jit(jnn.make_train_step()).trace(state, batch)
    default = traced.lower().compile()
    dense = traced.lower().compile(jnn.train_compiler_options(jaxpr=traced.jaxpr))
    # If this fails after a jax upgrade, see CPU_YNN_FUSION_TYPES_DENSE
    assert "dot" in ynn_fused_ops(default.as_text())
    assert ynn_fused_ops(dense.as_text()) == set()
    assert_trains_the_same(default, dense, state, batch)


def test_jit_sharded_compiles_an_mlps_steps_without_ynnpack(mlp_case):
    train, evaluate = sharded_programs(mlp_case)
    assert ynn_fused_ops(train) == set()
    assert ynn_fused_ops(evaluate) == set()
    # XLA's defaults fuse this eval step's dots into YNNPACK: the options are what moved them
    assert "dot" in ynn_fused_ops(jax.jit(jnn.make_eval_step()).lower(*mlp_case)
                                  .compile().as_text())


@pytest.mark.parametrize("members", ["vmap", "map"])
def test_an_ensembles_step_gets_the_options_of_its_members_program(mlp_case, cnn_case, members):
    def ensemble_jaxpr(case):
        state, batch = case
        states = jax.tree.map(lambda a: np.stack([a, a]), state)
        step = jnn.ensemble.ensemble_step(jnn.make_train_step(), members)
        return jax.make_jaxpr(step)(states, batch)

    assert jnn.train_compiler_options("cpu", jaxpr=ensemble_jaxpr(mlp_case)) == {YNN_KEY: ""}
    assert jnn.train_compiler_options("cpu", jaxpr=ensemble_jaxpr(cnn_case)) \
        == {YNN_KEY: CPU_YNN_FUSION_TYPES}
