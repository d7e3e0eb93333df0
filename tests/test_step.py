"""The train step against a hand-written Flax + Optax step, masking, BatchNorm, recompiles."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jnn


def _batches(rng, n, shape=(16, 8, 8, 1), classes=10):
    return [{"x": rng.normal(size=shape).astype(np.float32),
             "y": rng.integers(0, classes, size=shape[0])} for _ in range(n)]


def _hand_written_flax_optax_run(model, params, tx, batches, l2=0.0):
    """The canonical Flax example step, written out by hand as the reference."""
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            kernels = [w for w in jax.tree.leaves(p) if w.ndim > 1]
            return loss + l2 * 0.5 * sum((w ** 2).sum() for w in kernels)

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for b in batches:
        params, opt_state = step(params, opt_state, b["x"], b["y"])
    return params


@pytest.mark.parametrize("model_name,optimizer,l2", [("cnn", "adam", 0.0), ("mlp", "momentum", 1e-2)])
def test_train_step_matches_a_hand_written_flax_optax_step(rng, model_name, optimizer, l2):
    model = jnn.models.get(model_name)
    tx = jnn.make_optimizer(optimizer, 1e-2)
    batches = _batches(rng, 6)
    state = jnn.create_train_state(model, tx, jax.random.PRNGKey(0), batches[0]["x"])
    expected = _hand_written_flax_optax_run(model, state.params, tx, batches, l2=l2)
    step = jax.jit(jnn.make_train_step("cross_entropy", l2=l2))
    for b in batches:
        state, _ = step(state, b)
    assert int(state.step) == 6
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                 state.params, expected)


def test_metrics_are_sums_and_counts(rng):
    model = jnn.models.get("mlp")
    b = _batches(rng, 1)[0]
    state = jnn.create_train_state(model, jnn.make_optimizer("sgd", 0.1), jax.random.PRNGKey(0),
                                   b["x"])
    logits = model.apply({"params": state.params}, b["x"])
    _, metrics = jnn.make_train_step()(state, b)
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, b["y"])
    correct = float((logits.argmax(-1) == b["y"]).sum())
    assert set(metrics) == {"loss", "accuracy"}
    loss_sum, loss_count = metrics["loss"]
    hits, hit_count = metrics["accuracy"]
    assert float(loss_count) == 16 and float(hit_count) == 16
    np.testing.assert_allclose(loss_sum, per_example.sum(), rtol=1e-5)
    assert float(hits) == correct
    assert jnn.make_eval_step()(state, b).keys() == metrics.keys()
    means = jnn.summarize(jnn.sum_metrics([metrics, metrics]))  # two batches: sums add up
    np.testing.assert_allclose(means["loss"], per_example.mean(), rtol=1e-5)
    np.testing.assert_allclose(means["accuracy"], correct / 16, rtol=1e-6)
    assert float(jnn.metrics.count(jnn.sum_metrics([metrics, metrics]))) == 32


def test_masked_padding_changes_neither_the_update_nor_the_metrics(rng):
    model = jnn.models.get("cnn")
    tx = jnn.make_optimizer("adam", 1e-2)
    real = _batches(rng, 1, shape=(11, 8, 8, 1))[0]
    padded = jnn.data.pad_batch(real, 16)
    padded["x"][11:] = 100.0  # garbage in the padding must not leak
    state = jnn.create_train_state(model, tx, jax.random.PRNGKey(0), real["x"])
    step, evaluate = jax.jit(jnn.make_train_step()), jax.jit(jnn.make_eval_step())
    s_real, m_real = step(state, real)
    s_pad, m_pad = step(state, padded)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 s_real.params, s_pad.params)
    for metrics_real, metrics_pad in ((m_real, m_pad), (evaluate(state, real), evaluate(state, padded))):
        for key in metrics_real:
            np.testing.assert_allclose(metrics_real[key], metrics_pad[key], rtol=1e-5)


@pytest.mark.parametrize("step", [0, 5])
def test_dropout_key_is_folded_from_state_rng_and_step(rng, step):
    model = jnn.models.get("mlp", dropout_rate=0.5)
    b = _batches(rng, 1)[0]
    state = jnn.create_train_state(model, jnn.make_optimizer("sgd", 0.1), jax.random.PRNGKey(0),
                                   b["x"])
    state = state.replace(step=jnp.asarray(step, jnp.int32))
    key = jax.random.fold_in(state.rng, step)  # the step's key
    # The Linen adapter feeds its RNG stream i (here only "dropout", i = 0) fold_in(key, i).

    def update_with(dropout_key):
        def loss_fn(p):
            logits = model.apply({"params": p}, b["x"], train=True, rngs={"dropout": dropout_key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, b["y"]).mean()

        return jax.tree.map(lambda p, g: p - 0.1 * g, state.params, jax.grad(loss_fn)(state.params))

    new_state, _ = jax.jit(jnn.make_train_step())(state, b)
    assert int(new_state.step) == step + 1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 new_state.params, update_with(jax.random.fold_in(key, 0)))
    # the test pins the key down: any other key (the step's key itself, the key of
    # another step) gives a different update
    for other in (key, jax.random.fold_in(jax.random.fold_in(state.rng, step + 1), 0)):
        assert not np.allclose(new_state.params["Dense_0"]["kernel"],
                               update_with(other)["Dense_0"]["kernel"], rtol=1e-5, atol=1e-6)


class _BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(8)(x.reshape((x.shape[0], -1)))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        return nn.Dense(3)(nn.relu(x))


def test_batch_stats_are_updated_in_training_and_used_in_eval(rng):
    x = rng.normal(2.0, 3.0, size=(32, 5)).astype(np.float32)
    batch = {"x": x, "y": rng.integers(0, 3, size=32)}
    state = jnn.create_train_state(_BatchNormNet(), jnn.make_optimizer("sgd", 0.0),
                                   jax.random.PRNGKey(0), x)
    assert set(state.batch_stats["BatchNorm_0"]) == {"mean", "var"}
    new_state, _ = jax.jit(jnn.make_train_step())(state, batch)
    kernel, bias = state.params["Dense_0"]["kernel"], state.params["Dense_0"]["bias"]
    batch_mean = (x @ kernel + bias).mean(0)
    np.testing.assert_allclose(new_state.batch_stats["BatchNorm_0"]["mean"], 0.5 * batch_mean,
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(jnn.predict(new_state, x), jnn.predict(state, x))


class _NoTrainFlag(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(x)


def test_a_module_without_a_train_argument_trains(rng):
    b = {"x": rng.normal(size=(8, 3)).astype(np.float32), "y": rng.integers(0, 4, size=8)}
    state = jnn.create_train_state(_NoTrainFlag(), jnn.make_optimizer("adam", 0.1),
                                   jax.random.PRNGKey(0), b["x"], mode=None)
    step = jax.jit(jnn.make_train_step())
    first = None
    for _ in range(20):
        state, metrics = step(state, b)
        first = first if first is not None else float(metrics["loss"][0])
    assert float(metrics["loss"][0]) < first


def test_a_module_without_a_train_argument_is_refused_unless_told_with_mode_none(rng):
    x = rng.normal(size=(8, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"_NoTrainFlag.__call__ takes no `train` argument.*"
                                         r"pass mode=None") as err:
        jnn.create_train_state(_NoTrainFlag(), jnn.make_optimizer("adam", 0.1),
                               jax.random.PRNGKey(0), x)
    assert "\n" not in str(err.value)


def test_regression_step_reports_no_accuracy(rng):
    b = {"x": rng.normal(size=(8, 3)).astype(np.float32), "y": rng.normal(size=8).astype(np.float32)}
    state = jnn.create_train_state(jnn.models.get("mlp", num_outputs=1),
                                   jnn.make_optimizer("sgd", 0.1), jax.random.PRNGKey(0), b["x"])
    _, metrics = jnn.make_train_step("mse")(state, b)
    assert set(metrics) == {"loss"}
    assert float(metrics["loss"][1]) == 8
    assert set(jnn.make_eval_step("mse")(state, b)) == {"loss"}


def test_a_second_call_of_the_jitted_steps_does_not_recompile(rng, compile_counter):
    batches = _batches(rng, 3)
    state = jnn.create_train_state(jnn.models.get("cnn"), jnn.make_optimizer("adam", 1e-3),
                                   jax.random.PRNGKey(0), batches[0]["x"])
    step, evaluate = jax.jit(jnn.make_train_step()), jax.jit(jnn.make_eval_step())
    state, _ = step(state, batches[0])
    evaluate(state, batches[0])
    compile_counter.counting = True
    for b in batches[1:]:
        state, _ = step(state, b)
        evaluate(state, b)
    jax.block_until_ready(state)
    assert compile_counter.count == 0


def test_a_callable_loss_is_accepted_and_a_bad_loss_is_rejected(rng):
    b = _batches(rng, 1)[0]
    state = jnn.create_train_state(jnn.models.get("mlp"), jnn.make_optimizer("sgd", 0.1),
                                   jax.random.PRNGKey(0), b["x"])

    def custom(logits, batch):  # an objective: (outputs, batch) -> (losses, weights, metrics)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
        weights = jnn.objectives.unit_weights(batch, losses.shape)
        hits = logits.argmax(-1) == batch["y"]
        return losses, weights, {"accuracy": jnn.objectives.weighted_mean_metric(hits, weights)}

    s_custom, m_custom = jnn.make_train_step(custom)(state, b)
    s_named, m_named = jnn.make_train_step("cross_entropy")(state, b)
    assert m_custom.keys() == m_named.keys() == {"loss", "accuracy"}
    for key in m_named:
        np.testing.assert_allclose(m_custom[key], m_named[key], rtol=1e-6)
    jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7),
                 s_custom.params, s_named.params)
    with pytest.raises(ValueError, match="objective must be a name"):
        jnn.make_train_step(3)
    with pytest.raises(ValueError, match="unknown objective 'hinge'"):
        jnn.make_train_step("hinge")


class _MergedModeNet(nn.Module):
    """Flax's idiom for a mode set at construction or at call time (nn.merge_param): a
    call that passes train=None where False is meant fails."""
    train: bool | None = None

    @nn.compact
    def __call__(self, x, train: bool | None = None):
        train = nn.merge_param("train", self.train, train)
        x = nn.Dense(10)(x.reshape((x.shape[0], -1)))
        return nn.Dropout(0.5, deterministic=not train)(x)


def test_eval_and_predict_pass_train_false_to_a_module_that_merges_its_mode(rng):
    b = _batches(rng, 1)[0]
    state = jnn.create_train_state(_MergedModeNet(), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   b["x"])
    logits = _MergedModeNet().apply({"params": state.params}, b["x"], train=False)
    np.testing.assert_allclose(jnn.predict(state, b), logits, rtol=1e-6)
    metrics = jax.jit(jnn.make_eval_step())(state, b)
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, b["y"]).sum()
    np.testing.assert_allclose(metrics["loss"][0], expected, rtol=1e-5)
    _, train_metrics = jax.jit(jnn.make_train_step())(state, b)  # train=True: dropout on
    assert not np.isclose(float(train_metrics["loss"][0]), float(expected), rtol=1e-3)


@pytest.mark.parametrize("real,unit_weight", [(1, 1.0), (5, 0.1), (16, 0.01)])
def test_the_update_is_the_mean_gradient_over_the_weights_whatever_their_sum(
        rng, real, unit_weight):
    # plain SGD: the update is lr * sum(w * grad l) / sum(w), also for one real example
    # and for weights that sum to less than 1
    model = jnn.models.get("mlp", hidden_sizes=(16,))
    b = {**_batches(rng, 1)[0], "mask": np.arange(16) < real}
    state = jnn.create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), b["x"])

    def weighted(outputs, batch):
        losses = optax.softmax_cross_entropy_with_integer_labels(outputs, batch["y"])
        return losses, unit_weight * jnn.objectives.unit_weights(batch, losses.shape), {}

    new, metrics = jax.jit(jnn.make_train_step(weighted))(state, b)

    def mean_loss(params):
        logits = model.apply({"params": params}, b["x"][:real])
        return optax.softmax_cross_entropy_with_integer_labels(logits, b["y"][:real]).mean()

    expected = jax.tree.map(lambda p, g: p - 0.1 * g, state.params,
                            jax.grad(mean_loss)(state.params))
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-7),
                 new.params, expected)
    np.testing.assert_allclose(metrics["loss"][1], real * unit_weight, rtol=1e-6)


def test_a_batch_of_padding_only_changes_no_parameter_under_sgd(rng):
    b = {**_batches(rng, 1)[0], "mask": np.zeros(16, bool)}
    state = jnn.create_train_state(jnn.models.get("mlp"), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   b["x"])
    new, metrics = jax.jit(jnn.make_train_step())(state, b)
    jax.tree.map(lambda a, e: np.testing.assert_array_equal(a, e), new.params, state.params)
    assert metrics["loss"] == (0.0, 0.0)
