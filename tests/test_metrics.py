"""Metric sums into means: summarize's edge cases (fractional weights, empty counts)."""

import numpy as np

import jnn


def test_a_mean_divides_by_fractional_counts_exactly():
    # weights need not be 0/1: a count of 0.5 units is a real denominator
    means = jnn.summarize({"loss": (np.float64(1.0), np.float64(0.5))})
    assert float(means["loss"]) == 2.0


def test_an_empty_count_gives_zero_and_a_count_of_one_is_a_mean():
    means = jnn.summarize({"loss": (np.float64(3.0), np.float64(0.0)),
                           "accuracy": (np.float64(1.0), np.float64(1.0))})
    assert float(means["loss"]) == 0.0
    assert float(means["accuracy"]) == 1.0


def test_perplexity_is_the_exponential_of_the_mean_log_likelihood():
    means = jnn.summarize({"perplexity": (np.float64(6.0), np.float64(3.0))})
    np.testing.assert_allclose(means["perplexity"], np.exp(2.0))


def test_sums_add_up_per_member_and_keep_the_ensemble_axis():
    batches = [{"loss": (np.array([1.0, 2.0], np.float32), np.array([2.0, 2.0], np.float32))},
               {"loss": (np.array([3.0, 4.0], np.float32), np.array([1.0, 1.0], np.float32))}]
    sums = jnn.sum_metrics(batches)
    np.testing.assert_array_equal(sums["loss"][0], [4.0, 6.0])
    assert sums["loss"][0].dtype == np.float64
    np.testing.assert_allclose(jnn.summarize(sums)["loss"], [4.0 / 3.0, 2.0])
    np.testing.assert_array_equal(jnn.metrics.count(sums), [3.0, 3.0])
    assert jnn.sum_metrics([]) == {}


def test_a_sum_with_more_axes_than_its_count_is_divided_along_the_trailing_axes():
    counts = np.array([2.0, 0.0])  # two ensemble members, the second saw nothing
    matrices = np.arange(8.0).reshape(2, 2, 2)
    means = jnn.summarize({"confusion_matrix": (matrices, counts)})["confusion_matrix"]
    np.testing.assert_array_equal(means, [matrices[0] / 2, np.zeros((2, 2))])
