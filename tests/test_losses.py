import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnn import losses

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
    total, count = losses.masked_sum(jnp.array([1.0, 2.0, 100.0]), jnp.array([True, True, False]))
    assert float(total) == 3.0 and float(count) == 2.0


def test_penalties_cover_kernels_not_biases():
    params = {"Dense_0": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([5.0, 5.0])}}
    assert float(losses.l1_penalty(params)) == 3.0
    assert float(losses.l2_penalty(params)) == 2.5


def test_get_loss_binds_options_and_rejects_unknown_names():
    fn = losses.get_loss("cross_entropy", label_smoothing=0.2)
    np.testing.assert_allclose(fn(LOGITS, LABELS),
                               losses.softmax_cross_entropy(LOGITS, LABELS, label_smoothing=0.2))
    with pytest.raises(ValueError, match="unknown loss 'hinge'.*binary_cross_entropy"):
        losses.get_loss("hinge")


def test_cross_entropy_agrees_with_optax_mean():
    assert np.isclose(float(losses.softmax_cross_entropy(LOGITS, LABELS).mean()),
                      float(optax.softmax_cross_entropy_with_integer_labels(LOGITS, LABELS).mean()))
