"""The model adapter: Linen and NNX modules behind one init/apply, explicit train/eval mode,
padding that never reaches BatchNorm statistics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jnn
from jnn import parallel


def _batch(rng, size=16, features=(8, 8, 1), classes=10):
    return {"x": rng.normal(size=(size, *features)).astype(np.float32),
            "y": rng.integers(0, classes, size=size)}


def _close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(32)(x.reshape((x.shape[0], -1))))
        return nn.Dense(10)(x)


class NNXMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.out = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x.reshape((x.shape[0], -1)))))


class NNXBatchNormNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.norm = nnx.BatchNorm(32, rngs=rngs)
        self.out = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x, mask=None):
        h = self.hidden(x.reshape((x.shape[0], -1)))
        h = self.norm(h, mask=None if mask is None else mask[:, None])
        return self.out(nnx.relu(h))


def _nnx_state_with_linen_weights(linen_state, tx):
    """An NNX state whose parameters are the Linen state's, mapped by layer."""
    p = linen_state.params
    params = {"hidden": dict(p["Dense_0"]), "out": dict(p["Dense_1"])}
    state = jnn.create_train_state(NNXMLP(nnx.Rngs(1)), tx, jax.random.PRNGKey(0),
                                   np.zeros((1, 8, 8, 1), np.float32))
    return state.replace(params=params, opt_state=tx.init(params))


# ---------------------------------------------------------------- train/eval mode
class TrainingFlagNet(nn.Module):
    @nn.compact
    def __call__(self, x, training: bool = False):
        x = nn.Dense(16)(x.reshape((x.shape[0], -1)))
        x = nn.BatchNorm(use_running_average=not training)(x)
        return nn.Dense(10)(nn.Dropout(0.5, deterministic=not training)(x))


class DeterministicFlagNet(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = nn.Dense(16)(x.reshape((x.shape[0], -1)))
        return nn.Dense(10)(nn.Dropout(0.5, deterministic=deterministic)(x))


class NoFlagNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def test_a_module_whose_flag_is_named_training_is_refused_with_the_fix(rng):
    with pytest.raises(ValueError, match="mode='training'") as err:
        jnn.create_train_state(TrainingFlagNet(), optax.sgd(0.1), jax.random.PRNGKey(0),
                               _batch(rng)["x"])
    assert "\n" not in str(err.value)


def test_a_module_without_any_mode_flag_is_refused_unless_mode_is_none(rng):
    x = _batch(rng)["x"]
    with pytest.raises(ValueError, match="mode=None"):
        jnn.create_train_state(NoFlagNet(), optax.sgd(0.1), jax.random.PRNGKey(0), x)
    state = jnn.create_train_state(NoFlagNet(), optax.sgd(0.1), jax.random.PRNGKey(0), x,
                                   mode=None)
    new_state, _ = jax.jit(jnn.make_train_step())(state, _batch(rng))
    assert int(new_state.step) == 1


def test_mode_training_reaches_batchnorm_and_dropout(rng):
    batch = _batch(rng)
    state = jnn.create_train_state(TrainingFlagNet(), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   batch["x"], mode="training")
    new_state, _ = jax.jit(jnn.make_train_step())(state, batch)
    stats_before = state.model_state["batch_stats"]
    stats_after = new_state.model_state["batch_stats"]
    assert not np.allclose(stats_before["BatchNorm_0"]["mean"], stats_after["BatchNorm_0"]["mean"])
    key = jax.random.PRNGKey(3)
    train_out = [state.model.apply(state.params, state.model_state, batch, train=True,
                                   rng=jax.random.fold_in(key, i))[0] for i in range(2)]
    assert not np.allclose(train_out[0], train_out[1])  # dropout draws
    eval_out = state.model.apply(state.params, state.model_state, batch, train=False)[0]
    np.testing.assert_allclose(eval_out, jnn.predict(state, batch))


def test_mode_deterministic_is_inverted(rng):
    batch = _batch(rng)
    state = jnn.create_train_state(DeterministicFlagNet(), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   batch["x"], mode="deterministic")
    apply = lambda train, seed: state.model.apply(  # noqa: E731
        state.params, state.model_state, batch, train=train, rng=jax.random.PRNGKey(seed))[0]
    assert not np.allclose(apply(True, 0), apply(True, 1))
    np.testing.assert_allclose(apply(False, 0), apply(False, 1))
    zeros = (np.asarray(apply(True, 0)) == 0).mean()
    assert zeros == 0.0  # dropout acts before the last layer: outputs are not zeroed


# ------------------------------------------------------------------ Linen vs NNX
def test_the_same_mlp_in_linen_and_nnx_reaches_the_same_parameters(rng):
    tx = optax.adam(1e-2)
    batches = [_batch(rng) for _ in range(5)]
    linen = jnn.create_train_state(LinenMLP(), tx, jax.random.PRNGKey(0), batches[0]["x"])
    nnx_state = _nnx_state_with_linen_weights(linen, tx)
    step = jax.jit(jnn.make_train_step())
    for b in batches:
        linen, linen_metrics = step(linen, b)
        nnx_state, nnx_metrics = step(nnx_state, b)
        _close(linen_metrics, nnx_metrics)
    _close({"hidden": linen.params["Dense_0"], "out": linen.params["Dense_1"]}, nnx_state.params,
           rtol=1e-5, atol=1e-6)


def test_an_nnx_state_is_a_plain_pytree_of_arrays(rng):
    state = jnn.create_train_state(NNXBatchNormNet(nnx.Rngs(0)), optax.adam(1e-3),
                                   jax.random.PRNGKey(0), _batch(rng)["x"])
    leaves = jax.tree.leaves(state)
    assert leaves and all(isinstance(leaf, jax.Array) for leaf in leaves)
    assert set(state.model_state) == {"norm"}  # BatchNorm statistics: mean and var
    assert set(state.model_state["norm"]) == {"mean", "var"}


def test_nnx_evaluates_with_running_statistics(rng):
    batch = _batch(rng)
    state = jnn.create_train_state(NNXBatchNormNet(nnx.Rngs(0)), optax.adam(1e-3),
                                   jax.random.PRNGKey(0), batch["x"])
    state, _ = jax.jit(jnn.make_train_step())(state, batch)
    whole = jnn.predict(state, batch)
    alone = jnn.predict(state, {"x": batch["x"][:1]})
    np.testing.assert_allclose(whole[:1], alone, rtol=1e-5, atol=1e-6)


def test_an_nnx_ensemble_members_equal_separate_runs(rng):
    tx = optax.adam(1e-2)
    batches = [_batch(rng) for _ in range(3)]
    factory = lambda rngs: NNXMLP(rngs)  # noqa: E731
    states = jnn.ensemble.create_ensemble_state(factory, tx, [0, 1], batches[0]["x"])
    assert not np.allclose(states.params["out"]["kernel"][0], states.params["out"]["kernel"][1])
    step = jax.jit(jnn.ensemble.ensemble_step(jnn.make_train_step()))
    single = jax.jit(jnn.make_train_step())
    separate = [jnn.create_train_state(factory, jnn.ensemble.with_learning_rate_scale(tx),
                                       jax.random.PRNGKey(seed), batches[0]["x"])
                for seed in (0, 1)]
    for b in batches:
        states, _ = step(states, b)
        separate = [single(s, b)[0] for s in separate]
    for k in (0, 1):
        _close(jnn.ensemble.member(states, k).params, separate[k].params, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("transform", ["pmap", "shard"])
def test_nnx_under_pmap_and_sharded_jit_matches_one_device(rng, transform):
    tx = optax.sgd(0.1)
    batches = [_batch(rng) for _ in range(3)]
    state = jnn.create_train_state(NNXMLP(nnx.Rngs(0)), tx, jax.random.PRNGKey(0),
                                   batches[0]["x"])
    expected, step = state, jax.jit(jnn.make_train_step())
    for b in batches:
        expected, _ = step(expected, b)
    if transform == "pmap":
        pstep = parallel.pmap_train_step(jnn.make_train_step(axis_name=parallel.PMAP_AXIS))
        got = parallel.replicate(state)
        for b in batches:
            got, _ = pstep(got, parallel.split_batch(b))
        got = parallel.unreplicate(got)
    else:
        mesh = parallel.make_mesh()
        got = parallel.shard_state(state, mesh)
        sstep = parallel.jit_sharded(jnn.make_train_step(), got, mesh)
        for b in batches:
            got, _ = sstep(got, parallel.shard_batch(b, mesh))
    _close(expected.params, got.params, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- padding
def _padded(batch, size):
    padded = jnn.data.pad_batch(batch, size)
    padded["x"][len(batch["y"]):] = 100.0  # garbage in the padding must not leak
    return padded


@pytest.mark.parametrize("module", ["linen", "nnx"])
def test_padded_rows_change_neither_gradients_nor_batch_statistics_nor_metrics(rng, module):
    real = _batch(rng, size=11)
    padded = _padded(real, 16)
    model = (jnn.models.get("cnn", batch_norm=True) if module == "linen"
             else NNXBatchNormNet(nnx.Rngs(0)))
    # plain SGD: a wrong gradient scale cannot hide behind an adaptive optimizer
    state = jnn.create_train_state(model, optax.sgd(0.5), jax.random.PRNGKey(0), real["x"])
    step, evaluate = jax.jit(jnn.make_train_step()), jax.jit(jnn.make_eval_step())
    s_real, m_real = step(state, real)
    s_pad, m_pad = step(state, padded)
    _close(s_real.params, s_pad.params)
    _close(s_real.model_state, s_pad.model_state)
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(s_real.params),
                                                    jax.tree.leaves(state.params))]
    assert sum(moved) >= 3  # the step really trained
    _close(m_real, m_pad)
    _close(evaluate(s_real, real), evaluate(s_real, padded))
    assert float(m_pad["loss"][1]) == 11.0


class BatchNormWithoutMask(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x.reshape((x.shape[0], -1))))
        return nn.Dense(10)(x)


def test_batch_statistics_that_cannot_see_the_mask_are_refused_for_a_masked_batch(rng):
    real = _batch(rng, size=11)
    state = jnn.create_train_state(BatchNormWithoutMask(), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   real["x"])
    jax.jit(jnn.make_train_step())(state, real)  # no mask: fine
    with pytest.raises(ValueError, match="does not receive the batch's mask"):
        jax.jit(jnn.make_train_step())(state, _padded(real, 16))
    jax.jit(jnn.make_eval_step())(state, _padded(real, 16))  # eval uses running statistics


def test_the_model_reads_the_batch_keys_it_declares(rng):
    class TwoInputs(nn.Module):
        @nn.compact
        def __call__(self, image, extra, train: bool = False):
            h = jnp.concatenate([image.reshape((image.shape[0], -1)), extra], axis=1)
            return nn.Dense(10)(h)

    batch = {**_batch(rng), "extra": rng.normal(size=(16, 3)).astype(np.float32)}
    batch["image"] = batch.pop("x")
    state = jnn.create_train_state(TwoInputs(), optax.sgd(0.1), jax.random.PRNGKey(0), batch,
                                   inputs=("image", "extra"))
    assert state.params["Dense_0"]["kernel"].shape == (64 + 3, 10)
    jax.jit(jnn.make_train_step())(state, batch)
    with pytest.raises(ValueError, match="inputs="):
        jnn.create_train_state(TwoInputs(), optax.sgd(0.1), jax.random.PRNGKey(0), batch)


def test_a_module_class_instead_of_an_instance_is_named(rng):
    with pytest.raises(ValueError, match=r"pass an instance, e.g. LinenMLP\(...\)"):
        jnn.create_train_state(LinenMLP, optax.sgd(0.1), jax.random.PRNGKey(0), _batch(rng)["x"])
