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


# --- every name against the optax construction it stands for -------------------------
# Non-default hyperparameters everywhere, so that a name mapped to optax with a default
# (nesterov off, b1/b2 swapped or ignored, rmsprop without momentum) gives other updates.
# The references are chains of optax's primitives, built here by hand, not by jnn.
LR, MOMENTUM, B1, B2, WD, CLIP = 0.03, 0.7, 0.8, 0.95, 0.05, 1.0


def _reference(name, weight_decay, clip_norm):
    core = {
        "sgd": [],
        "momentum": [optax.trace(decay=MOMENTUM, nesterov=False)],
        "nesterov": [optax.trace(decay=MOMENTUM, nesterov=True)],
        "adam": [optax.scale_by_adam(b1=B1, b2=B2, eps=1e-8)],
        # decoupled: the decay is added to adam's direction, not to the gradient
        "adamw": [optax.scale_by_adam(b1=B1, b2=B2, eps=1e-8),
                  optax.add_decayed_weights(weight_decay)],
        "rmsprop": [optax.scale_by_rms(decay=0.9, eps=1e-8), optax.trace(decay=MOMENTUM)],
    }[name]
    parts = [] if clip_norm is None else [optax.clip_by_global_norm(clip_norm)]
    if weight_decay and name != "adamw":  # an L2 term on the (clipped) gradient, first
        parts.append(optax.add_decayed_weights(weight_decay))
    return optax.chain(*parts, *core, optax.scale(-LR))


def _run(tx, steps=5, seed=0):
    """Updates of `tx` over `steps` steps on random params and gradients (a small tree)."""
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
    state = tx.init(params)
    out = []
    # global gradient norms from about 0.5 to 17: clipping at 1.0 is active on some steps
    # only, so a lost clip changes even Adam's scale-invariant direction
    for scale in (4.0, 0.15, 5.0, 0.4, 2.0)[:steps]:
        grads = {k: jnp.asarray(rng.normal(size=v.shape) * scale, jnp.float32)
                 for k, v in params.items()}
        updates, state = tx.update(grads, state, params)
        out.append(updates)
        params = optax.apply_updates(params, updates)
    return out


def _assert_same_updates(ours, ref):
    for step, (a, b) in enumerate(zip(ours, ref)):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-7,
                                       err_msg=f"step {step}, leaf {k}")


_HYPER = {"momentum": MOMENTUM, "b1": B1, "b2": B2}


@pytest.mark.parametrize("weight_decay,clip_norm", [(0.0, None), (WD, None), (WD, CLIP)])
@pytest.mark.parametrize("name", jnn.optimizer_names())
def test_every_optimizer_equals_its_optax_construction(name, weight_decay, clip_norm):
    ours = jnn.make_optimizer(name, LR, weight_decay=weight_decay, clip_norm=clip_norm,
                              **_HYPER)
    _assert_same_updates(_run(ours), _run(_reference(name, weight_decay, clip_norm)))


def test_optimizer_takes_a_schedule_as_its_learning_rate():
    schedule = optax.linear_schedule(0.1, 0.01, transition_steps=4)
    ours = jnn.make_optimizer("nesterov", schedule, momentum=MOMENTUM)
    ref = optax.chain(optax.trace(decay=MOMENTUM, nesterov=True),
                      optax.scale_by_schedule(lambda t: -schedule(t)))
    _assert_same_updates(_run(ours), _run(ref))


# --- every schedule name against the optax schedule (and formula) it stands for --------
SPE, EPOCHS, PEAK = 7, 6, 0.2
TOTAL = SPE * EPOCHS


def _formula(name, step, *, step_epochs=2, gamma=0.5, warmup_epochs=1.5, final_fraction=0.1):
    """The documented value of each schedule at `step`, in float64."""
    if name == "constant":
        return PEAK
    if name == "step":  # StepLR: gamma ** (completed epochs // step_epochs)
        return PEAK * gamma ** ((step // SPE) // step_epochs)
    t = min(step, TOTAL)
    end = PEAK * final_fraction
    if name == "cosine":
        return end + (PEAK - end) * 0.5 * (1 + np.cos(np.pi * t / TOTAL))
    warmup = int(warmup_epochs * SPE)  # 10 steps
    if t < warmup:
        return PEAK * t / warmup
    return end + (PEAK - end) * 0.5 * (1 + np.cos(np.pi * (t - warmup) / (TOTAL - warmup)))


_OPTAX_SCHEDULES = {
    "constant": optax.constant_schedule(PEAK),
    "step": optax.exponential_decay(PEAK, transition_steps=2 * SPE, decay_rate=0.5,
                                    staircase=True),
    "cosine": optax.cosine_decay_schedule(PEAK, decay_steps=TOTAL, alpha=0.1),
    "warmup_cosine": optax.warmup_cosine_decay_schedule(0.0, PEAK, warmup_steps=10,
                                                        decay_steps=TOTAL, end_value=PEAK * 0.1),
}


@pytest.mark.parametrize("name", jnn.schedule_names())
def test_every_schedule_equals_its_optax_schedule_at_every_step(name):
    schedule = jnn.make_schedule(name, PEAK, steps_per_epoch=SPE, epochs=EPOCHS, step_epochs=2,
                                 gamma=0.5, warmup_epochs=1.5, final_fraction=0.1)
    steps = np.arange(TOTAL + 10)  # every step, the step boundaries, and past the end
    ours = np.array([float(schedule(s)) for s in steps])
    np.testing.assert_allclose(ours, [float(_OPTAX_SCHEDULES[name](s)) for s in steps],
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours, [_formula(name, s) for s in steps], rtol=1e-5, atol=1e-8)


def test_step_and_warmup_schedules_turn_exactly_where_documented():
    step = jnn.make_schedule("step", PEAK, steps_per_epoch=SPE, epochs=EPOCHS, step_epochs=2,
                             gamma=0.5)
    # constant through epochs 0-1 (steps 0..13), halved from step 14 on
    assert float(step(13)) == pytest.approx(PEAK) and float(step(14)) == pytest.approx(PEAK / 2)
    assert float(step(27)) == pytest.approx(PEAK / 2) and float(step(28)) == pytest.approx(PEAK / 4)
    warm = jnn.make_schedule("warmup_cosine", PEAK, steps_per_epoch=SPE, epochs=EPOCHS,
                             warmup_epochs=1.5, final_fraction=0.1)
    values = np.array([float(warm(s)) for s in range(TOTAL + 1)])
    assert values[0] == 0.0 and int(np.argmax(values)) == 10  # the peak ends the warm-up
    assert values[10] == pytest.approx(PEAK) and values[9] == pytest.approx(0.9 * PEAK)
    assert np.all(np.diff(values[:11]) > 0) and np.all(np.diff(values[10:]) < 0)
    assert values[TOTAL] == pytest.approx(0.1 * PEAK)
