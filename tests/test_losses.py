import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnn import losses, objectives

LOGITS = jnp.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-3.0, 4.0, 1.0]])
LABELS = jnp.array([0, 2, 1])


def _manual_ce(logits, probs):
    return -(probs * jax.nn.log_softmax(logits)).sum(-1)


def test_cross_entropy_with_integer_labels_matches_the_formula():
    expected = _manual_ce(LOGITS, jax.nn.one_hot(LABELS, 3))
    np.testing.assert_allclose(losses.softmax_cross_entropy(LOGITS, LABELS), expected, rtol=1e-5)


def test_cross_entropy_accepts_one_hot_labels():
    np.testing.assert_allclose(losses.softmax_cross_entropy(LOGITS, jax.nn.one_hot(LABELS, 3)),
                               losses.softmax_cross_entropy(LOGITS, LABELS), rtol=1e-5)


def test_label_smoothing_mixes_targets_with_the_uniform_distribution():
    smoothed = 0.9 * jax.nn.one_hot(LABELS, 3) + 0.1 / 3
    np.testing.assert_allclose(losses.softmax_cross_entropy(LOGITS, LABELS, label_smoothing=0.1),
                               _manual_ce(LOGITS, smoothed), rtol=1e-5)


def test_cross_entropy_rejects_labels_of_the_wrong_shape():
    with pytest.raises(ValueError, match="integer labels"):
        losses.softmax_cross_entropy(LOGITS, jnp.zeros((3, 5)))


def test_mse_is_per_example_mean_of_squares_and_accepts_flat_targets():
    preds = jnp.array([[1.0], [2.0], [4.0]])
    np.testing.assert_allclose(losses.mean_squared_error(preds, jnp.array([0.0, 2.0, 1.0])),
                               [1.0, 0.0, 9.0])


def test_binary_cross_entropy_matches_the_formula():
    logits, labels = jnp.array([[0.3], [-2.0]]), jnp.array([1, 0])
    p = jax.nn.sigmoid(logits[:, 0])
    expected = -(labels * jnp.log(p) + (1 - labels) * jnp.log(1 - p))
    np.testing.assert_allclose(losses.binary_cross_entropy(logits, labels), expected, rtol=1e-5)


def test_masked_sum_ignores_masked_examples():
    # The mask becomes per-unit weights (0 on padding); a metric is (weighted sum, weight sum).
    weights = objectives.unit_weights({"mask": jnp.array([True, True, False])}, (3,))
    np.testing.assert_array_equal(weights, [1.0, 1.0, 0.0])
    total, count = objectives.weighted_mean_metric(jnp.array([1.0, 2.0, 100.0]), weights)
    assert float(total) == 3.0 and float(count) == 2.0
    total, count = objectives.weighted_mean_metric(
        jnp.array([1.0, 2.0, 100.0]), objectives.unit_weights({}, (3,)))  # no mask: all count
    assert float(total) == 103.0 and float(count) == 3.0
    # and an objective's loss ignores masked examples the same way
    batch = {"y": LABELS, "mask": jnp.array([True, True, False])}
    unit_losses, weights, _ = objectives.get("cross_entropy")(LOGITS, batch)
    np.testing.assert_array_equal(weights, [1.0, 1.0, 0.0])
    np.testing.assert_allclose((unit_losses * weights).sum(),
                               losses.softmax_cross_entropy(LOGITS, LABELS)[:2].sum(), rtol=1e-6)


def test_penalties_cover_kernels_not_biases():
    params = {"Dense_0": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([5.0, 5.0])}}
    assert float(losses.l1_penalty(params)) == 3.0
    assert float(losses.l2_penalty(params)) == 2.5


def test_get_loss_binds_options_and_rejects_unknown_names():
    objective = objectives.get("cross_entropy", label_smoothing=0.2)
    unit_losses, weights, _ = objective(LOGITS, {"y": LABELS})
    np.testing.assert_allclose(unit_losses,
                               losses.softmax_cross_entropy(LOGITS, LABELS, label_smoothing=0.2))
    np.testing.assert_array_equal(weights, [1.0, 1.0, 1.0])
    assert not np.allclose(unit_losses, losses.softmax_cross_entropy(LOGITS, LABELS))
    with pytest.raises(ValueError, match="unknown objective 'hinge'.*binary_cross_entropy"):
        objectives.get("hinge")
    with pytest.raises(ValueError, match="has no option smoothing; its options are "
                                         "label_smoothing"):
        objectives.get("cross_entropy", smoothing=0.2)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
@pytest.mark.parametrize("shape", [(256, 10), (4, 16, 50)])  # classes; a sequence model's
def test_integer_label_cross_entropy_has_optaxs_values_and_eager_gradients_bit_for_bit(
        scale, shape):
    # the one-hot pick replaces optax's take_along_axis for its compile time: the values must
    # be the same bits, eagerly and under jit, and so must the gradients eagerly; under jit
    # XLA fuses each version's gradient its own way (0.5% of elements 1 ulp apart)
    key_logits, key_labels, key_cotangent = jax.random.split(jax.random.PRNGKey(int(scale)), 3)
    logits = scale * jax.random.normal(key_logits, shape)
    labels = jax.random.randint(key_labels, shape[:-1], 0, shape[-1])
    cotangent = jax.random.uniform(key_cotangent, shape[:-1])  # per-unit weights, as a mask

    def weighted(loss_fn):
        return lambda x: (loss_fn(x, labels) * cotangent).sum()

    ours, reference = losses.integer_label_cross_entropy, optax.softmax_cross_entropy_with_integer_labels
    for transform in (lambda f: f, jax.jit):
        np.testing.assert_array_equal(transform(ours)(logits, labels),
                                      transform(reference)(logits, labels))
    np.testing.assert_array_equal(jax.grad(weighted(ours))(logits),
                                  jax.grad(weighted(reference))(logits))
    np.testing.assert_array_max_ulp(jax.jit(jax.grad(weighted(ours)))(logits),
                                    jax.jit(jax.grad(weighted(reference)))(logits), maxulp=1)


@pytest.mark.parametrize("label_dtype", [np.int8, np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("logit_dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_integer_label_cross_entropy_takes_any_integer_labels_and_keeps_the_logits_dtype(
        label_dtype, logit_dtype):
    logits = LOGITS.astype(logit_dtype)
    labels = np.asarray(LABELS).astype(label_dtype)  # numpy, as a data pipeline gives them
    got = losses.softmax_cross_entropy(logits, labels)
    assert got.dtype == logit_dtype
    np.testing.assert_array_equal(
        got, optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(np.int32)))


def test_cross_entropy_refuses_float_labels_and_integer_logits_in_one_line():
    with pytest.raises(ValueError, match=r"integer labels must be integers of shape \(3,\)"):
        losses.softmax_cross_entropy(LOGITS, LABELS.astype(jnp.float32))
    with pytest.raises(ValueError, match="not int32 \\(2,\\)"):
        losses.softmax_cross_entropy(LOGITS, LABELS[:2])
    with pytest.raises(TypeError, match="logits must be floating point, not int32"):
        losses.softmax_cross_entropy(LOGITS.astype(jnp.int32), LABELS)


def test_integer_label_cross_entropy_of_a_label_outside_the_classes_is_the_log_normalizer():
    got = losses.integer_label_cross_entropy(LOGITS, jnp.array([-1, 3, 1]))
    np.testing.assert_array_equal(got[:2], jax.nn.logsumexp(LOGITS[:2], axis=-1))
    np.testing.assert_array_equal(got[2], optax.softmax_cross_entropy_with_integer_labels(
        LOGITS, LABELS)[2])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_a_label_outside_the_classes_is_nan_for_a_real_unit_and_nothing_for_padding(
        label_smoothing):
    objective = objectives.get("cross_entropy", label_smoothing=label_smoothing)
    batch = {"y": jnp.array([-1, 3, 1]), "mask": jnp.array([False, True, True])}
    unit_losses, weights, _ = objective(LOGITS, batch)
    unit_losses = np.asarray(unit_losses)
    assert np.isnan(unit_losses[1]) and np.isfinite(unit_losses[[0, 2]]).all()
    # padding alone carrying -1: the loss sum and its gradient are those of the real units
    batch = {"y": jnp.array([-1, 2, 1]), "mask": jnp.array([False, True, True])}
    real = {"y": LABELS[1:], "mask": jnp.array([True, True])}

    def loss_sum(logits, batch):
        unit_losses, weights, _ = objective(logits, batch)
        return (unit_losses * weights).sum()

    np.testing.assert_array_equal(loss_sum(LOGITS, batch), loss_sum(LOGITS[1:], real))
    grads = jax.grad(loss_sum)(LOGITS, batch)
    assert (grads[0] == 0).all()
    np.testing.assert_array_equal(grads[1:], jax.grad(loss_sum)(LOGITS[1:], real))
