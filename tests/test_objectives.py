"""Objectives: per-unit losses and weights, next-token loss over padded sequences, your own
objective and metric; exact means over batches, devices and uneven splits."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jnn
from jnn import parallel

VOCAB, LENGTH = 11, 6


class TinyLM(nn.Module):
    """Embeds each token and predicts the next from it and a running mean of the prefix."""

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        h = nn.Embed(VOCAB, 16)(tokens)  # (B, T, 16)
        prefix = jnp.cumsum(h, axis=1) / jnp.arange(1, tokens.shape[1] + 1)[None, :, None]
        return nn.Dense(VOCAB)(jnp.tanh(nn.Dense(16)(jnp.concatenate([h, prefix], -1))))


def _sequences(rng, size=16, lengths=None):
    tokens = rng.integers(0, VOCAB, size=(size, LENGTH + 1))
    lengths = rng.integers(2, LENGTH + 2, size=size) if lengths is None else np.asarray(lengths)
    mask = np.arange(LENGTH + 1)[None, :] < lengths[:, None]  # (B, T+1)
    return jnn.objectives.next_token_batch(tokens, mask)


def _lm_state(batch, tx=None):
    return jnn.create_train_state(TinyLM(), tx or optax.sgd(0.5), jax.random.PRNGKey(0), batch)


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_next_token_loss_is_the_exact_mean_over_real_tokens(rng):
    batch = _sequences(rng)
    state = _lm_state(batch)
    logits = np.asarray(jnn.predict(state, batch), np.float64)  # (B, T, V)
    nll = -np.take_along_axis(_log_softmax(logits), batch["y"][..., None], -1)[..., 0]
    mask = batch["mask"]
    sums = jnn.sum_metrics([jax.jit(jnn.make_eval_step("next_token"))(state, batch)])
    means = jnn.summarize(sums)
    assert float(sums["loss"][1]) == mask.sum()  # one unit per real token
    np.testing.assert_allclose(means["loss"], nll[mask].mean(), rtol=1e-5)
    np.testing.assert_allclose(means["perplexity"], np.exp(nll[mask].mean()), rtol=1e-5)
    hits = logits.argmax(-1) == batch["y"]
    np.testing.assert_allclose(means["accuracy"], hits[mask].mean(), rtol=1e-6)


def test_next_token_gradient_is_that_of_the_token_mean(rng):
    batch = _sequences(rng)
    state = _lm_state(batch)

    def token_mean(params):
        logits = state.model.module.apply({"params": params}, batch["x"], train=True)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
        return (nll * batch["mask"]).sum() / batch["mask"].sum()

    expected = jax.tree.map(lambda p, g: p - 0.5 * g, state.params,
                            jax.grad(token_mean)(state.params))
    new_state, _ = jax.jit(jnn.make_train_step("next_token"))(state, batch)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 new_state.params, expected)


@pytest.mark.parametrize("transform", ["pmap", "shard"])
def test_next_token_under_uneven_splits_matches_one_device(rng, transform):
    # 16 sequences over 8 devices; the last 6 are all padding, so devices 5-7 hold none
    lengths = np.concatenate([rng.integers(2, LENGTH + 2, size=10), np.zeros(6, int)])
    batches = [_sequences(rng, lengths=lengths) for _ in range(2)]
    state = _lm_state(batches[0])
    expected, expected_metrics = state, []
    for b in batches:
        expected, m = jax.jit(jnn.make_train_step("next_token"))(expected, b)
        expected_metrics.append(m)
    if transform == "pmap":
        step = parallel.pmap_train_step(jnn.make_train_step("next_token",
                                                            axis_name=parallel.PMAP_AXIS))
        got, metrics = parallel.replicate(state), []
        for b in batches:
            got, m = step(got, parallel.split_batch(b))
            metrics.append(jax.tree.map(lambda v: v[0], m))
        got = parallel.unreplicate(got)
    else:
        mesh = parallel.make_mesh()
        got = parallel.shard_state(state, mesh)
        step, metrics = parallel.jit_sharded(jnn.make_train_step("next_token"), got, mesh), []
        for b in batches:
            got, m = step(got, parallel.shard_batch(b, mesh))
            metrics.append(m)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 got.params, expected.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5),
                 jnn.sum_metrics(metrics), jnn.sum_metrics(expected_metrics))


def squared_error_with_hits(outputs, batch):
    """A researcher's own objective: squared error per example, and its own metric."""
    losses = ((outputs[:, 0] - batch["target"]) ** 2)
    weights = jnn.objectives.unit_weights(batch, losses.shape)
    within = jnp.abs(outputs[:, 0] - batch["target"]) < 0.5
    return losses, weights, {"within_half": jnn.objectives.weighted_mean_metric(within, weights)}


class Regressor(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(1)(nn.tanh(nn.Dense(8)(x)))


def test_your_own_objective_and_metric_add_up_over_any_split_of_the_batch(rng):
    x = rng.normal(size=(12, 3)).astype(np.float32)
    batch = {"x": x, "target": x.sum(1).astype(np.float32), "mask": np.arange(12) < 10}
    state = jnn.create_train_state(Regressor(), optax.sgd(0.1), jax.random.PRNGKey(0), x)
    evaluate = jax.jit(jnn.make_eval_step(squared_error_with_hits))
    whole = jnn.sum_metrics([evaluate(state, batch)])
    parts = jnn.sum_metrics([evaluate(state, jax.tree.map(lambda v: v[a:b], batch))
                             for a, b in ((0, 7), (7, 12))])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), whole, parts)
    prediction = np.asarray(jnn.predict(state, batch))[:10, 0]
    error = (prediction - batch["target"][:10]) ** 2
    means = jnn.summarize(whole)
    np.testing.assert_allclose(means["loss"], error.mean(), rtol=1e-5)
    np.testing.assert_allclose(means["within_half"], (np.sqrt(error) < 0.5).mean())
    new_state, _ = jax.jit(jnn.make_train_step(squared_error_with_hits))(state, batch)
    assert int(new_state.step) == 1


def test_an_objective_that_returns_the_wrong_thing_is_named(rng):
    x = rng.normal(size=(4, 3)).astype(np.float32)
    state = jnn.create_train_state(Regressor(), optax.sgd(0.1), jax.random.PRNGKey(0), x)
    whole = lambda text: "^" + re.escape(text) + "$"  # noqa: E731
    with pytest.raises(ValueError, match=whole(
            "an objective must return (losses, weights, metrics): per-unit losses, their "
            "weights (0 on padding) and {name: (sum, count)}")):
        jnn.make_eval_step(lambda outputs, batch: outputs.sum())(state, {"x": x})
    with pytest.raises(ValueError, match=whole(
            "the objective's losses (4,) and weights (3,) differ in shape; give one weight "
            "per unit")):
        jnn.make_eval_step(lambda o, b: (o[:, 0], jnp.ones(3), {}))(state, {"x": x})
    with pytest.raises(ValueError, match="sum, count"):
        jnn.make_eval_step(lambda o, b: (o[:, 0], jnp.ones(4), {"m": o.sum()}))(state, {"x": x})


def test_objective_names_and_options_are_checked():
    names = "binary_cross_entropy, cross_entropy, mse, next_token"
    whole = lambda text: "^" + re.escape(text) + "$"  # noqa: E731
    with pytest.raises(ValueError, match=whole(
            f"unknown objective 'hinge'; choose one of {names} or pass a function "
            "(outputs, batch) -> (losses, weights, metrics)")):
        jnn.objectives.get("hinge")
    with pytest.raises(ValueError, match=whole(
            "objective 'mse' has no option label_smoothing, tokens; its options are "
            "target, mask")):
        jnn.objectives.get("mse", label_smoothing=0.1, tokens=1)
    for smoothing in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
            jnn.objectives.get("cross_entropy", label_smoothing=smoothing)
    with pytest.raises(ValueError, match=whole(
            f"objective must be a name ({names}) or a function (outputs, batch) -> (losses, "
            "weights, metrics), got 3")):
        jnn.make_train_step(3)


def test_one_hot_labels_over_tokens_count_like_integer_labels():
    rng = np.random.default_rng(7)
    logits = jnp.asarray(rng.normal(size=(4, 5, 3)), jnp.float32)  # (B, T, C)
    labels = rng.integers(0, 3, size=(4, 5))
    objective = jnn.objectives.get("cross_entropy", confusion_matrix=True)
    by_index = objective(logits, {"y": labels})
    by_one_hot = objective(logits, {"y": jax.nn.one_hot(labels, 3)})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), by_index, by_one_hot)
    assert np.shape(by_one_hot[2]["confusion_matrix"][0]) == (3, 3)


def test_a_mask_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="^" + re.escape(
            "batch['mask'] has shape (3, 2), which fits neither the examples nor the units of "
            "shape (4, 2); give a (B,) mask per example or one of the units' shape") + "$"):
        jnn.objectives.unit_weights({"mask": np.ones((3, 2), bool)}, (4, 2))


def test_a_per_example_mask_spreads_over_each_examples_units():
    mask = np.array([True, False, True])
    weights = jnn.objectives.unit_weights({"mask": mask}, (3, 4, 2))  # (B, T, C) units
    assert weights.dtype == jnp.float32 and weights.shape == (3, 4, 2)
    np.testing.assert_array_equal(weights, np.broadcast_to(mask[:, None, None], (3, 4, 2)))


def test_a_missing_target_names_the_batch_keys_and_the_option():
    with pytest.raises(ValueError, match="^" + re.escape(
            "the batch has no 'y' entry for the objective's targets (its keys: mask, x); pass "
            "target=... naming it") + "$"):
        jnn.objectives.get("mse")(jnp.ones((2, 3)), {"x": np.ones((2, 3)), "mask": np.ones(2)})


@pytest.mark.parametrize("labels", ["integer", "one_hot"])
def test_classification_accepts_integer_and_one_hot_labels_alike(rng, labels):
    logits = jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)
    y = rng.integers(0, 5, size=8)
    target = y if labels == "integer" else np.eye(5)[y]
    losses, weights, metrics = jnn.objectives.get("cross_entropy")(logits, {"y": target})
    np.testing.assert_allclose(losses, optax.softmax_cross_entropy_with_integer_labels(logits, y),
                               rtol=1e-6)
    assert float(metrics["accuracy"][0]) == float((np.asarray(logits).argmax(-1) == y).sum())
    assert float(metrics["accuracy"][1]) == 8.0 == float(weights.sum())


def _ensemble(rng, num_outputs):
    x = rng.normal(size=(10, 3)).astype(np.float32)
    model = jnn.models.get("mlp", hidden_sizes=(8,), num_outputs=num_outputs)
    return x, jnn.ensemble.create_ensemble_state(model, optax.sgd(0.1), [0, 1, 2], x[:1])


def test_an_ensemble_counts_hits_alike_for_integer_and_one_hot_labels(rng):
    x, states = _ensemble(rng, 4)
    y = rng.integers(0, 4, size=10)
    evaluate = jax.jit(jnn.ensemble.make_ensemble_eval_step("cross_entropy"))
    integer = evaluate(states, {"x": x, "y": y})
    one_hot = evaluate(states, {"x": x, "y": np.eye(4, dtype=np.float32)[y]})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), integer, one_hot)
    outputs = np.stack([np.asarray(jnn.predict(jnn.ensemble.member(states, k), x))
                        for k in range(3)])  # (K, B, C)
    probs = np.exp(outputs - outputs.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    assert float(integer["ensemble_accuracy"][0]) == float((probs.mean(0).argmax(-1) == y).sum())
    np.testing.assert_allclose(integer["accuracy"][0], (outputs.argmax(-1) == y).sum(1))


def test_binary_ensemble_members_and_their_average_get_an_accuracy(rng):
    x, states = _ensemble(rng, 1)
    y = rng.integers(0, 2, size=10)
    metrics = jax.jit(jnn.ensemble.make_ensemble_eval_step("binary_cross_entropy"))(
        states, {"x": x, "y": y})
    outputs = np.stack([np.asarray(jnn.predict(jnn.ensemble.member(states, k), x))[:, 0]
                        for k in range(3)])  # (K, B) logits
    np.testing.assert_allclose(metrics["accuracy"][0], ((outputs > 0) == y).sum(1))
    mean_p = (1 / (1 + np.exp(-outputs))).mean(0)
    assert float(metrics["ensemble_accuracy"][0]) == float(((mean_p > 0.5) == y).sum())
    nll = -(y * np.log(mean_p) + (1 - y) * np.log(1 - mean_p))
    np.testing.assert_allclose(metrics["ensemble_loss"][0], nll.sum(), rtol=1e-4)


@pytest.mark.parametrize("shape", [(6, 3), (6, 2, 2)])
def test_mse_averages_every_output_entry_of_an_example(rng, shape):
    outputs = rng.normal(size=shape).astype(np.float32)
    targets = rng.normal(size=shape).astype(np.float32)
    losses, weights, metrics = jnn.objectives.get("mse")(jnp.asarray(outputs), {"y": targets})
    expected = ((outputs - targets) ** 2).reshape(6, -1).mean(1)
    np.testing.assert_allclose(losses, expected, rtol=1e-6)
    assert weights.shape == (6,) and metrics == {}


def test_an_l1_penalty_adds_its_subgradient_on_kernels_only(rng):
    x = rng.normal(size=(8, 3)).astype(np.float32)
    batch = {"x": x, "y": x.sum(1, keepdims=True)}
    state = jnn.create_train_state(Regressor(), optax.sgd(0.1), jax.random.PRNGKey(0), x)

    def loss(params):
        out = state.model.module.apply({"params": params}, x)
        kernels = [w for w in jax.tree.leaves(params) if w.ndim > 1]
        return ((out - batch["y"]) ** 2).mean() + 0.01 * sum(jnp.abs(w).sum() for w in kernels)

    expected = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, jax.grad(loss)(state.params))
    new_state, _ = jax.jit(jnn.make_train_step("mse", l1=0.01))(state, batch)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 new_state.params, expected)


def test_the_confusion_matrix_counts_real_units_by_true_row_and_predicted_column(rng):
    logits = rng.normal(size=(12, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=12)
    mask = np.arange(12) < 9
    objective = jnn.objectives.get("cross_entropy", confusion_matrix=True)
    _, _, metrics = objective(jnp.asarray(logits), {"y": labels, "mask": mask})
    counts, total = metrics["confusion_matrix"]
    expected = np.zeros((4, 4))
    for true, predicted in zip(labels[:9], logits[:9].argmax(-1)):
        expected[true, predicted] += 1
    np.testing.assert_array_equal(counts, expected)
    assert total == 9
    assert np.trace(counts) / total == pytest.approx(metrics["accuracy"][0] / metrics["accuracy"][1])
    assert "confusion_matrix" not in jnn.objectives.get("cross_entropy")(
        jnp.asarray(logits), {"y": labels})[2]


def test_an_mse_ensemble_scores_the_members_mean_prediction(rng):
    x, states = _ensemble(rng, 2)
    y = rng.normal(size=(10, 2)).astype(np.float32)
    metrics = jax.jit(jnn.ensemble.make_ensemble_eval_step("mse"))(states, {"x": x, "y": y})
    outputs = np.stack([np.asarray(jnn.predict(jnn.ensemble.member(states, k), x))
                        for k in range(3)])  # (K, B, 2)
    mean = outputs.mean(0)
    np.testing.assert_allclose(metrics["ensemble_loss"][0], ((mean - y) ** 2).mean(1).sum(),
                               rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"][0], ((outputs - y) ** 2).mean(2).sum(1),
                               rtol=1e-5)


def test_the_objective_names_are_the_built_ins():
    assert jnn.objectives.names() == ["binary_cross_entropy", "cross_entropy", "mse",
                                      "next_token"]


@pytest.mark.parametrize("name", ["mse", "binary_cross_entropy", "cross_entropy"])
def test_an_objective_reads_its_targets_and_mask_under_the_keys_it_is_given(rng, name):
    outputs = rng.normal(size=(4, 3)).astype(np.float32)
    targets = {"mse": rng.normal(size=(4, 3)).astype(np.float32),
               "binary_cross_entropy": rng.integers(0, 2, (4, 3)).astype(np.float32),
               "cross_entropy": rng.integers(0, 3, 4)}[name]
    keep = np.array([True, False, True, True])
    # the default keys hold something else: reading them gives other losses and weights
    batch = {"t": targets, "keep": keep, "y": np.zeros_like(targets),
             "mask": np.array([False, True, False, False])}
    renamed = jnn.objectives.get(name, target="t", mask="keep")(jnp.asarray(outputs), batch)
    plain = jnn.objectives.get(name)(jnp.asarray(outputs), {"y": targets, "mask": keep})
    for a, b in zip(jax.tree.leaves(renamed), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_array_equal(renamed[1], keep.astype(np.float32))


def test_binary_accuracy_is_the_share_of_an_examples_outputs_on_the_right_side_of_zero():
    # a logit of exactly 0 (probability 0.5) predicts 0; a label counts as 1 above 0.5 only
    outputs = jnp.array([[2.0, -1.0, 0.0], [-3.0, 4.0, 1.0]])
    labels = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.5]])
    _, _, metrics = jnn.objectives.get("binary_cross_entropy")(outputs, {"y": labels})
    hits, count = metrics["accuracy"]
    np.testing.assert_allclose(hits, 1.0 + 1.0 / 3.0, rtol=1e-6)  # 3/3, then 1/3
    assert float(count) == 2.0
    _, _, masked = jnn.objectives.get("binary_cross_entropy")(
        outputs, {"y": labels, "mask": np.array([False, True])})
    np.testing.assert_allclose(masked["accuracy"][0], 1.0 / 3.0, rtol=1e-6)  # the second only
    assert float(masked["accuracy"][1]) == 1.0


def test_binary_ensemble_logits_stay_finite_when_every_member_is_certain():
    outputs = jnp.full((3, 2, 1), -200.0)  # sigmoid is exactly 0 in float32
    combined = jnn.objectives.get("binary_cross_entropy").combine_members(outputs)
    assert combined.shape == (2, 1) and bool(jnp.all(jnp.isfinite(combined)))
    assert float(combined[0, 0]) < -20.0


def test_with_label_smoothing_perplexity_stays_that_of_the_true_next_tokens(rng):
    batch = _sequences(rng)
    state = _lm_state(batch)
    logits = np.asarray(jnn.predict(state, batch), np.float64)
    nll = -np.take_along_axis(_log_softmax(logits), batch["y"][..., None], -1)[..., 0]
    smoothed = jnn.objectives.get("next_token", label_smoothing=0.3)
    means = jnn.summarize(jax.jit(jnn.make_eval_step(smoothed))(state, batch))
    mask = batch["mask"]
    np.testing.assert_allclose(means["perplexity"], np.exp(nll[mask].mean()), rtol=1e-5)
    smooth_targets = 0.7 * np.eye(VOCAB)[batch["y"]] + 0.3 / VOCAB
    smoothed_nll = -(smooth_targets * _log_softmax(logits)).sum(-1)
    np.testing.assert_allclose(means["loss"], smoothed_nll[mask].mean(), rtol=1e-5)
    assert abs(means["loss"] - nll[mask].mean()) > 1e-3  # the two differ here


@pytest.mark.parametrize("logits,targets", [((2, 5, VOCAB), (2, 4)), ((2, 5), (2, 5))])
def test_next_token_names_mismatched_logits_and_targets(logits, targets):
    with pytest.raises(ValueError, match=re.escape(
            f"next_token expects logits (B, T, V) and targets (B, T), got {logits} and "
            f"{targets}")):
        jnn.objectives.get("next_token")(jnp.zeros(logits), {"y": np.zeros(targets, int)})


def test_a_confident_ensemble_gets_finite_averaged_log_probabilities():
    outputs = jnp.array([[[200.0, -200.0, 0.0]], [[150.0, -300.0, 0.0]]])  # (K, B, C)
    combined = jnn.objectives.get("cross_entropy").combine_members(outputs)
    assert bool(jnp.all(jnp.isfinite(combined)))
    np.testing.assert_allclose(combined[0, 0], 0.0, atol=1e-6)  # log(1)
    assert float(combined[0, 1]) < -20.0
