"""vmap: ensembles equal separate runs; per-example gradients average to the batch gradient; DP-SGD."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

import jnn
from jnn import dp_sgd, ensemble, per_example

SEEDS = [3, 5, 7]


def _batches(n=4, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(size, 8, 8, 1)).astype(np.float32),
             "y": rng.integers(0, 10, size=size)} for _ in range(n)]


def _model(name="mlp"):
    if name == "cnn":  # convolutions: what members="map" is for
        return jnn.models.get("cnn", features=4, hidden=16, dropout_rate=0.3)
    return jnn.models.get("mlp", hidden_sizes=(32,), dropout_rate=0.3)


# how the compiled steps run the members (jnn.ensemble's module), for a dense model and a CNN
MEMBERS_CASES = [("mlp", "vmap"), ("mlp", "map"), ("mlp", "auto"), ("cnn", "vmap"),
                 ("cnn", "map"), ("cnn", "auto")]


def _mapped(model, members):
    """Whether the members should run one after another (a loop in the step's program)."""
    auto_maps = model == "cnn" and jax.default_backend() == "cpu"
    return members == "map" or (members == "auto" and auto_maps)


def _runs_mapped(step, states, batch):
    return "scan[" in str(jax.make_jaxpr(step)(states, batch))


@pytest.mark.parametrize("model,members", MEMBERS_CASES)
def test_an_ensemble_equals_separate_runs_with_the_same_seeds(model, members):
    batches, tx = _batches(), jnn.make_optimizer("adam", 1e-2)
    scales = [1.0, 0.5, 2.0]
    states = ensemble.create_ensemble_state(_model(model), tx, SEEDS, np.zeros((1, 8, 8, 1)),
                                            learning_rate_scales=scales)
    step = jax.jit(ensemble.ensemble_step(jnn.make_train_step(), members))
    assert _runs_mapped(step, states, batches[0]) == _mapped(model, members)
    for b in batches:
        states, metrics = step(states, b)
    assert metrics["loss"][0].shape == metrics["loss"][1].shape == (3,)
    for k, (seed, scale) in enumerate(zip(SEEDS, scales)):
        single_tx = optax.chain(tx, optax.scale(scale))
        state = jnn.create_train_state(_model(model), single_tx, jax.random.PRNGKey(seed),
                                       np.zeros((1, 8, 8, 1)))
        single = jax.jit(jnn.make_train_step())
        for b in batches:
            state, single_metrics = single(state, b)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                     ensemble.member(states, k).params, state.params)
        for name in single_metrics:
            for value, single_value in zip(metrics[name], single_metrics[name]):  # sum, count
                np.testing.assert_allclose(value[k], single_value, rtol=1e-4)


@pytest.mark.parametrize("model,members", MEMBERS_CASES)
def test_ensemble_eval_reports_members_and_the_averaged_prediction(model, members):
    states = ensemble.create_ensemble_state(_model(model), jnn.make_optimizer("sgd", 0.1),
                                            SEEDS, np.zeros((1, 8, 8, 1)))
    b = jnn.data.pad_batch({k: v[:10] for k, v in _batches(1)[0].items()}, 16)
    eval_step = jax.jit(ensemble.make_ensemble_eval_step(members=members))
    assert _runs_mapped(eval_step, states, b) == _mapped(model, members)
    metrics = eval_step(states, b)
    outputs = [jnn.predict(ensemble.member(states, k), b["x"][:10]) for k in range(3)]
    assert set(metrics) == {"loss", "accuracy", "ensemble_loss", "ensemble_accuracy"}
    for k in range(3):
        hits, count = metrics["accuracy"][0][k], metrics["accuracy"][1][k]
        assert float(hits) == float((outputs[k].argmax(-1) == b["y"][:10]).sum())
        assert float(count) == 10 and float(metrics["loss"][1][k]) == 10
        member_loss = optax.softmax_cross_entropy_with_integer_labels(outputs[k], b["y"][:10])
        np.testing.assert_allclose(metrics["loss"][0][k], member_loss.sum(), rtol=1e-5)
    probs = jnp.mean(jnp.stack([jax.nn.softmax(o) for o in outputs]), 0)
    hits, count = metrics["ensemble_accuracy"]
    assert float(hits) == float((probs.argmax(-1) == b["y"][:10]).sum())
    assert float(count) == 10
    loss_sum, count = metrics["ensemble_loss"]  # cross-entropy of the averaged probabilities
    assert float(count) == 10
    np.testing.assert_allclose(
        loss_sum, -jnp.log(probs[jnp.arange(10), b["y"][:10]]).sum(), rtol=1e-5)


def test_an_unknown_way_to_run_the_members_is_rejected():
    for make in (lambda m: ensemble.ensemble_step(jnn.make_train_step(), m),
                 lambda m: ensemble.make_ensemble_eval_step(members=m)):
        with pytest.raises(ValueError, match="use one of 'auto', 'vmap', 'map'"):
            make("pmap")


def test_mismatched_learning_rate_scales_are_rejected():
    with pytest.raises(ValueError, match="give one per member"):
        ensemble.create_ensemble_state(_model(), jnn.make_optimizer("sgd", 0.1), SEEDS,
                                       np.zeros((1, 8, 8, 1)), learning_rate_scales=[1.0])


def test_the_mean_of_per_example_gradients_is_the_batch_gradient():
    model = jnn.models.get("cnn")
    b = _batches(1)[0]
    state = jnn.create_train_state(model, jnn.make_optimizer("sgd", 0.1), jax.random.PRNGKey(0),
                                   b["x"])
    grads = per_example.per_example_grads(state, b)
    assert jax.tree.leaves(grads)[0].shape[0] == 16

    def batch_loss(p):
        logits = model.apply({"params": p}, b["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, b["y"]).mean()

    jax.tree.map(lambda g, ref: np.testing.assert_allclose(g.mean(0), ref, rtol=1e-4, atol=1e-6),
                 grads, jax.grad(batch_loss)(state.params))


def test_dp_sgd_without_clipping_or_noise_is_plain_sgd():
    b = _batches(1)[0]
    state = jnn.create_train_state(jnn.models.get("cnn"), jnn.make_optimizer("sgd", 0.1),
                                   jax.random.PRNGKey(0), b["x"])
    plain, plain_metrics = jax.jit(jnn.make_train_step())(state, b)
    dp, dp_metrics = jax.jit(dp_sgd.make_dp_train_step(clip_norm=1e6, noise_multiplier=0.0))(
        state, b)
    jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6),
                 plain.params, dp.params)
    assert dp_metrics.keys() == plain_metrics.keys()
    for name in plain_metrics:
        np.testing.assert_allclose(dp_metrics[name], plain_metrics[name], rtol=1e-5)


def test_dp_sgd_clips_each_example_and_ignores_padding():
    b = jnn.data.pad_batch({k: v[:12] for k, v in _batches(1)[0].items()}, 16)
    state = jnn.create_train_state(jnn.models.get("cnn"), jnn.make_optimizer("sgd", 1.0),
                                   jax.random.PRNGKey(0), b["x"])
    grads = per_example.per_example_grads(state, b)
    norms = np.sqrt(sum((np.asarray(g).reshape(16, -1) ** 2).sum(1) for g in jax.tree.leaves(grads)))
    assert (norms[:12] > 0).all() and (norms[12:] == 0).all()  # padding has no gradient
    clip = float(np.median(norms[:12]))
    weights = np.minimum(1.0, clip / np.maximum(norms, 1e-30)) * (np.arange(16) < 12)
    expected = jax.tree.map(lambda p, g: p - np.tensordot(weights, g, axes=1) / 12,
                            state.params, grads)
    dp, metrics = jax.jit(dp_sgd.make_dp_train_step(clip_norm=clip, noise_multiplier=0.0))(state, b)
    assert float(metrics["loss"][1]) == 12
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-6),
                 dp.params, expected)


def test_dp_sgd_noise_has_the_requested_scale():
    # An objective whose per-example gradients are all zero: the update is the noise alone,
    # std noise_multiplier * clip_norm = 6, divided by the 4 real (unmasked) examples.
    def zero_loss(outputs, batch):
        losses = 0.0 * outputs.sum(-1)
        return losses, jnn.objectives.unit_weights(batch, losses.shape), {}

    b = _batches(1, size=6)[0]
    b["mask"] = np.arange(6) < 4
    state = jnn.create_train_state(jnn.models.get("mlp", hidden_sizes=(64,)),
                                   jnn.make_optimizer("sgd", 1.0), jax.random.PRNGKey(0), b["x"])
    step = jax.jit(dp_sgd.make_dp_train_step(zero_loss, clip_norm=2.0, noise_multiplier=3.0))
    new_state, _ = step(state, b)
    delta = np.concatenate([np.ravel(p - q) for p, q in zip(jax.tree.leaves(state.params),
                                                             jax.tree.leaves(new_state.params))])
    assert delta.size > 4000
    assert abs(float(delta.std()) * 4 - 6.0) < 0.5
    assert abs(float(delta.mean())) < 0.1  # zero mean (4.6 standard errors)
    second, _ = step(new_state, b)  # each step draws fresh noise
    assert not np.allclose(np.asarray(second.params["Dense_0"]["kernel"] -
                                      new_state.params["Dense_0"]["kernel"]),
                           np.asarray(new_state.params["Dense_0"]["kernel"] -
                                      state.params["Dense_0"]["kernel"]))


def test_dp_sgd_rejects_batchnorm_and_bad_settings():
    with pytest.raises(ValueError, match="clip_norm > 0"):
        dp_sgd.make_dp_train_step(clip_norm=0.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="noise_multiplier >= 0"):
        dp_sgd.make_dp_train_step(clip_norm=1.0, noise_multiplier=-0.5)
    state = jnn.create_train_state(jnn.models.get("cnn", batch_norm=True),
                                   jnn.make_optimizer("sgd", 0.1), jax.random.PRNGKey(0),
                                   np.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="without batch statistics.*instead of BatchNorm"):
        dp_sgd.make_dp_train_step(clip_norm=1.0, noise_multiplier=0.0)(state, _batches(1)[0])


@pytest.mark.parametrize("name,auto", [("digits_cnn", "map"), ("digits_mlp", "vmap")])
def test_auto_runs_convolutional_members_one_after_another_on_cpu(name, auto):
    from train import config as configs
    from train import runner

    config = configs.get_config(name)
    config.ensemble = 2
    dataset = jnn.data.load(config["dataset"])
    states = runner.make_state(config, dataset)
    batch = {"x": dataset.train["x"][:8], "y": dataset.train["y"][:8]}
    expected = auto if jax.default_backend() == "cpu" else "vmap"
    for fn in (jnn.make_train_step(), jnn.predict):
        assert ensemble.resolve_members(fn, states, batch) == expected
        for chosen in ("vmap", "map"):  # a way named is kept
            assert ensemble.resolve_members(fn, states, batch, chosen) == chosen
    config.ensemble_members = "pmap"  # the harness's field takes the same names
    with pytest.raises(ValueError, match="unknown ensemble_members 'pmap'; choose one of "
                                         "auto, vmap, map"):
        configs.validate(config)


class _LaxConvolutionCNN(nn.Module):
    """A CNN on flax's own convolution (lax's, whose gradients are not canonical)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Dense(10)(x.mean(axis=(1, 2)))


def test_auto_keeps_lax_convolution_gradients_vmapped():
    # XLA:CPU runs lax's kernel gradient 30-60x slower inside a loop (jnn.ensemble): a
    # train step with one stays vmapped, while its prediction (a canonical NHWC/HWIO
    # forward convolution) and jnn's CNN train step (canonical gradients) are mapped
    states = ensemble.create_ensemble_state(_LaxConvolutionCNN(), jnn.make_optimizer("sgd", 0.1),
                                            SEEDS[:2], np.zeros((1, 8, 8, 1)))
    batch = _batches(1)[0]
    cpu = jax.default_backend() == "cpu"
    assert ensemble.resolve_members(jnn.make_train_step(), states, batch) == "vmap"
    assert ensemble.resolve_members(jnn.predict, states, batch) == ("map" if cpu else "vmap")
    step = jax.jit(ensemble.ensemble_step(jnn.make_train_step()))
    assert not _runs_mapped(step, states, batch)
    ours = ensemble.create_ensemble_state(_model("cnn"), jnn.make_optimizer("sgd", 0.1),
                                          SEEDS[:2], np.zeros((1, 8, 8, 1)))
    assert ensemble.resolve_members(jnn.make_train_step(), ours, batch) == (
        "map" if cpu else "vmap")
