import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jnn


def test_step_schedule_is_the_seeds_steplr():
    # StepLR(step_size=7, gamma=0.7) with 10 steps an epoch: lr * 0.7 ** (epoch // 7)
    schedule = jnn.make_schedule("step", 1e-3, steps_per_epoch=10, epochs=30)
    for epoch in (0, 6, 7, 13, 14, 29):
        assert np.isclose(float(schedule(epoch * 10)), 1e-3 * 0.7 ** (epoch // 7))


def test_cosine_schedule_decays_to_final_fraction():
    schedule = jnn.make_schedule("cosine", 0.1, steps_per_epoch=5, epochs=4, final_fraction=0.1)
    assert np.isclose(float(schedule(0)), 0.1) and np.isclose(float(schedule(20)), 0.01)


def test_warmup_cosine_rises_then_falls():
    schedule = jnn.make_schedule("warmup_cosine", 0.1, steps_per_epoch=10, epochs=5,
                                 warmup_epochs=1)
    values = [float(schedule(s)) for s in (0, 5, 10, 30, 50)]
    assert values[0] == 0.0 and values[1] < values[2] and np.isclose(values[2], 0.1)
    assert values[2] > values[3] > values[4]


def test_constant_schedule_is_constant():
    schedule = jnn.make_schedule("constant", 0.3, steps_per_epoch=3, epochs=3)
    assert float(schedule(0)) == float(schedule(100)) == pytest.approx(0.3)


@pytest.mark.parametrize("name", jnn.optimizer_names())
def test_every_optimizer_reduces_a_quadratic(name):
    tx = jnn.make_optimizer(name, 0.05)
    params = jnp.array([3.0, -2.0])
    state = tx.init(params)
    for _ in range(50):
        updates, state = tx.update(2 * params, state, params)
        params = optax.apply_updates(params, updates)
    assert float((params ** 2).sum()) < 13.0 * 0.5


def test_clipping_bounds_the_update_norm():
    tx = jnn.make_optimizer("sgd", 1.0, clip_norm=0.5)
    params = jnp.zeros(3)
    updates, _ = tx.update(jnp.array([30.0, 40.0, 0.0]), tx.init(params), params)
    assert np.isclose(float(jnp.linalg.norm(updates)), 0.5)


def test_weight_decay_adds_a_term_proportional_to_the_weights():
    tx = jnn.make_optimizer("sgd", 1.0, weight_decay=0.1)
    params = jnp.array([2.0])
    updates, _ = tx.update(jnp.zeros(1), tx.init(params), params)
    np.testing.assert_allclose(updates, [-0.2])


@pytest.mark.parametrize("call,match", [
    (lambda: jnn.make_optimizer("adagrad9", 0.1), "unknown optimizer 'adagrad9'.*adamw"),
    (lambda: jnn.make_schedule("linear9", 0.1, steps_per_epoch=1, epochs=1), "unknown schedule"),
    (lambda: jnn.make_schedule("constant", -1.0, steps_per_epoch=1, epochs=1), "must be > 0"),
    (lambda: jnn.make_optimizer("sgd", 0.1, clip_norm=0.0), "clip_norm must be > 0"),
])
def test_bad_optimizer_settings_raise_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
