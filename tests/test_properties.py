"""Properties of the step over many generated cases (hypothesis): metrics add up over any
split of a batch, and padding to any size changes nothing."""

import functools

import jax
import numpy as np
import optax
from hypothesis import given, settings, strategies as st

import jnn

FEW = settings(max_examples=12, deadline=None, derandomize=True)


@functools.lru_cache(maxsize=None)
def _state():
    model = jnn.models.get("mlp", hidden_sizes=(16,), num_outputs=5)
    return jnn.create_train_state(model, optax.sgd(0.5), jax.random.PRNGKey(0),
                                  np.zeros((1, 6), np.float32))


def _data(seed, size):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(size, 6)).astype(np.float32),
            "y": rng.integers(0, 5, size=size)}


_eval = jax.jit(jnn.make_eval_step())
_train = jax.jit(jnn.make_train_step())


@FEW
@given(seed=st.integers(0, 2 ** 16), size=st.integers(2, 24), data=st.data())
def test_metrics_add_up_over_any_split_of_a_batch(seed, size, data):
    batch = _data(seed, size)
    cuts = sorted(data.draw(st.sets(st.integers(1, size - 1), max_size=3)))
    bounds = list(zip([0] + cuts, cuts + [size]))
    whole = jnn.sum_metrics([_eval(_state(), batch)])
    parts = jnn.sum_metrics([_eval(_state(), jax.tree.map(lambda v: v[a:b], batch))
                             for a, b in bounds])
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5), whole, parts)
    assert float(jnn.metrics.count(parts)) == size


@FEW
@given(seed=st.integers(0, 2 ** 16), size=st.integers(1, 12), pad=st.integers(1, 12))
def test_padding_to_any_size_changes_nothing(seed, size, pad):
    real = _data(seed, size)
    padded = jnn.data.pad_batch(real, size + pad)
    padded["x"][size:] = 1e3  # garbage rows must not leak
    s_real, m_real = _train(_state(), real)
    s_pad, m_pad = _train(_state(), padded)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6),
                 (s_real.params, m_real), (s_pad.params, m_pad))
