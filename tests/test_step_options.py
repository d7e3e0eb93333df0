"""Options that change how the step runs, not what it computes: microbatches, compute dtype,
loss scaling; and a state created already sharded."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jnn
from jnn import parallel


def _batch(rng, size=16, classes=10):
    return {"x": rng.normal(size=(size, 8, 8, 1)).astype(np.float32),
            "y": rng.integers(0, classes, size=size)}


def _close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)


# ----------------------------------------------------------------- microbatches
@pytest.mark.parametrize("k", [2, 4])
def test_microbatches_equal_one_step_on_the_whole_batch(rng, k):
    batches = [_batch(rng) for _ in range(3)]
    batches[-1]["mask"] = np.arange(16) < 9  # padding spread unevenly over the slices
    state = jnn.create_train_state(jnn.models.get("cnn"), optax.sgd(0.3), jax.random.PRNGKey(0),
                                   batches[0]["x"])
    whole, micro = state, state
    whole_step = jax.jit(jnn.make_train_step(l2=1e-3))
    micro_step = jax.jit(jnn.make_train_step(microbatches=k, l2=1e-3))
    for b in batches:
        whole, m_whole = whole_step(whole, b)
        micro, m_micro = micro_step(micro, b)
        _close(m_whole, m_micro, rtol=1e-5, atol=1e-5)
    _close(whole.params, micro.params, rtol=1e-5, atol=1e-6)


def test_microbatches_split_a_batch_that_holds_inputs_only(rng):
    # an objective that needs no targets (here: outputs pulled towards zero)
    def shrink(outputs, batch):
        losses = jnp.square(outputs).mean(-1)
        return losses, jnn.objectives.unit_weights(batch, losses.shape), {}

    batch = {"x": _batch(rng)["x"]}
    state = jnn.create_train_state(jnn.models.get("mlp"), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   batch["x"])
    whole, m_whole = jax.jit(jnn.make_train_step(shrink))(state, batch)
    micro, m_micro = jax.jit(jnn.make_train_step(shrink, microbatches=4))(state, batch)
    _close(m_whole, m_micro)
    _close(whole.params, micro.params)


def test_microbatches_that_do_not_divide_the_batch_are_refused(rng):
    state = jnn.create_train_state(jnn.models.get("mlp"), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   _batch(rng)["x"])
    with pytest.raises(ValueError, match="microbatches=3 does not divide the batch of 16"):
        jnn.make_train_step(microbatches=3)(state, _batch(rng))
    with pytest.raises(ValueError, match="microbatches must be an integer >= 1"):
        jnn.make_train_step(microbatches=0)


def test_microbatches_lower_the_peak_of_live_activations(rng):
    # activations (4096 x 256 per layer) dwarf the parameters (82k), as in a large batch
    model = jnn.models.get("mlp", hidden_sizes=(256, 256))
    batch = _batch(rng, size=4096)
    state = jnn.create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), batch["x"])

    def temp_bytes(k):
        compiled = jax.jit(jnn.make_train_step(microbatches=k)).lower(state, batch).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes(8) < 0.5 * temp_bytes(1)


# -------------------------------------------------------------------- precision
def test_a_bfloat16_step_keeps_float32_parameters_and_tracks_the_float32_loss(digits):
    x, y = digits.train["x"][:512].astype(np.float32) / 16.0, digits.train["y"][:512]
    model = jnn.models.get("cnn")
    state = jnn.create_train_state(model, optax.adam(3e-3), jax.random.PRNGKey(0), x[:1])
    runs = {}
    for dtype in (None, "bfloat16"):
        s, step, losses = state, jax.jit(jnn.make_train_step(compute_dtype=dtype)), []
        for epoch in range(3):
            for i in range(0, 512, 64):
                s, m = step(s, {"x": x[i:i + 64], "y": y[i:i + 64]})
                losses.append(float(m["loss"][0] / m["loss"][1]))
        runs[dtype] = (s, np.asarray(losses))
    bf16_state, bf16_losses = runs["bfloat16"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(bf16_state.params))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(bf16_state.opt_state)
               if jnp.issubdtype(leaf.dtype, jnp.floating))
    f32_losses = runs[None][1]
    assert f32_losses[-8:].mean() < 0.5 * f32_losses[:8].mean()  # it learns
    # the stated tolerance: every step's loss within 5% (relative) + 0.02 of float32's
    np.testing.assert_allclose(bf16_losses, f32_losses, rtol=0.05, atol=0.02)
    assert not np.array_equal(bf16_losses, f32_losses)  # bfloat16 really ran


def test_the_compute_dtype_reaches_the_model_and_only_the_model(rng):
    batch = _batch(rng)
    state = jnn.create_train_state(jnn.models.get("mlp"), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   batch["x"])
    seen = {}

    def objective(outputs, b):
        seen["outputs"], seen["y"] = outputs.dtype, b["x"].dtype
        return jnn.objectives.get("cross_entropy")(outputs, b)

    jax.eval_shape(jnn.make_train_step(objective, compute_dtype="bfloat16"), state, batch)
    assert seen == {"outputs": jnp.float32, "y": jnp.float32}
    jaxpr = str(jax.make_jaxpr(jnn.make_train_step(compute_dtype="bfloat16"))(state, batch))
    assert "bf16[16,128]" in jaxpr  # the hidden layer computes in bfloat16
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        jnn.make_train_step(compute_dtype="int8")


def test_float16_needs_a_loss_scale(rng):
    batch = _batch(rng)
    state = jnn.create_train_state(jnn.models.get("mlp"), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   batch["x"])
    message = ("float16 compute needs loss scaling: create the state with create_train_state"
               "(..., loss_scale=jnn.precision.DynamicLossScale.create())")
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        jnn.make_train_step(compute_dtype="float16")(state, batch)


def test_an_overflowing_float16_step_is_skipped_and_the_scale_halved(rng):
    batch = _batch(rng)
    scale = jnn.precision.DynamicLossScale.create(initial_scale=2.0 ** 40, period=3)
    state = jnn.create_train_state(jnn.models.get("mlp"), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   batch["x"], loss_scale=scale)
    step = jax.jit(jnn.make_train_step(compute_dtype="float16"))
    skipped, _ = step(state, batch)  # loss * 2^40 overflows float16
    _close(skipped.params, state.params, rtol=0, atol=0)
    assert float(skipped.loss_scale.scale) == 2.0 ** 39
    assert int(skipped.step) == 1
    s = skipped.replace(loss_scale=jnn.precision.DynamicLossScale.create(2.0 ** 8, period=3))
    scales = []
    for _ in range(4):
        s, m = step(s, batch)
        scales.append(float(s.loss_scale.scale))
        assert np.isfinite(float(m["loss"][0]))
    assert scales == [2.0 ** 8, 2.0 ** 8, 2.0 ** 9, 2.0 ** 9]  # doubles after 3 finite steps
    assert not np.allclose(s.params["Dense_0"]["kernel"], state.params["Dense_0"]["kernel"])


def test_a_float16_step_with_loss_scaling_tracks_float32(rng):
    batch = _batch(rng)
    state = jnn.create_train_state(jnn.models.get("mlp"), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   batch["x"],
                                   loss_scale=jnn.precision.DynamicLossScale.create(2.0 ** 10))
    s16, _ = jax.jit(jnn.make_train_step(compute_dtype="float16"))(state, batch)
    s32, _ = jax.jit(jnn.make_train_step())(state, batch)
    _close(s16.params, s32.params, rtol=0, atol=2e-3)


# ----------------------------------------------------------- state born sharded
def test_an_fsdp_state_is_created_sharded_in_one_compiled_program(rng, compile_counter):
    model, tx = jnn.models.get("cnn"), optax.adam(1e-3)
    sample = _batch(rng)["x"][:1]
    mesh = parallel.make_mesh()
    key = jax.random.PRNGKey(0)
    compile_counter.counting = True
    state = parallel.create_sharded_train_state(model, tx, key, sample, mesh, fsdp=True)
    compile_counter.counting = False
    assert compile_counter.count == 1
    expected = parallel.state_shardings(state, mesh, fsdp=True)
    leaves = jax.tree.leaves(state)
    for leaf, sharding in zip(leaves, jax.tree.leaves(expected)):
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
    kernel = state.params["Dense_0"]["kernel"]  # (288, 128): split over 8 devices
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("data", None)
    assert {s.data.shape for s in kernel.addressable_shards} == {(36, 128)}
    assert state.opt_state[0].mu["Dense_0"]["kernel"].sharding.spec == kernel.sharding.spec
    reference = jnn.create_train_state(model, tx, key, sample)
    _close(jax.device_get(state.params), reference.params, rtol=0, atol=0)


def test_an_eval_step_goes_through_jit_sharded_as_it_is(rng):
    batch = _batch(rng)
    state = jnn.create_train_state(jnn.models.get("mlp"), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   batch["x"])
    mesh = parallel.make_mesh()
    sharded = parallel.shard_state(state, mesh, fsdp=True)
    evaluate = parallel.jit_sharded(jnn.make_eval_step(), sharded, mesh, fsdp=True)
    metrics = evaluate(sharded, parallel.shard_batch(batch, mesh))
    _close(metrics, jnn.make_eval_step()(state, batch), rtol=1e-5)
    evaluate(sharded, parallel.shard_batch(batch, mesh))  # the state was not donated


def test_the_pooling_gradient_keeps_a_bfloat16_dtype():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3), jnp.bfloat16)
    grad = jax.grad(lambda v: jnn.models.max_pool_2x2(v).astype(jnp.float32).sum())(x)
    assert grad.dtype == jnp.bfloat16
    assert float(grad.astype(jnp.float32).sum()) == 2 * 2 * 2 * 3  # one winner per window


def test_a_model_without_mutable_variables_has_an_empty_model_state_and_float32_metrics(rng):
    batch = _batch(rng)
    state = jnn.create_train_state(jnn.models.get("mlp"), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   batch["x"])
    assert state.model_state == {}
    _, metrics = jax.jit(jnn.make_train_step(compute_dtype="bfloat16"))(state, batch)
    assert {leaf.dtype for leaf in jax.tree.leaves(metrics)} == {jnp.dtype(jnp.float32)}
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))
    stacked = jax.vmap(lambda s: s)(jax.tree.map(lambda v: jnp.stack([v, v]), state))
    assert stacked.params["Dense_0"]["kernel"].shape[0] == 2


# ------------------------------------------------------------- non-finite steps
@pytest.mark.parametrize("skip", [False, True])
def test_skip_nonfinite_keeps_the_state_of_a_nan_step_and_counts_it(rng, skip):
    model = jnn.models.get("cnn", batch_norm=True)
    good, bad = _batch(rng), _batch(rng)
    bad["x"][3] = np.nan
    state = jnn.create_train_state(model, optax.adam(1e-3), jax.random.PRNGKey(0), good["x"])
    step = jax.jit(jnn.make_train_step(skip_nonfinite=skip))
    state, _ = step(state, good)
    after, metrics = step(state, bad)
    assert int(after.step) == int(state.step) + 1
    finite = all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(after.params))
    if skip:
        _close(after.params, state.params, rtol=0, atol=0)
        _close(after.opt_state, state.opt_state, rtol=0, atol=0)
        _close(after.model_state, state.model_state, rtol=0, atol=0)
        assert metrics["skipped"] == (1.0, 1.0) and metrics["loss"] == (0.0, 0.0)
        _, metrics = step(after, good)
        assert metrics["skipped"] == (0.0, 1.0) and metrics["loss"][1] == 16
    else:
        assert not finite and "skipped" not in metrics


# ------------------------------------------- microbatches with dropout and matrices
def test_microbatches_draw_each_slices_dropout_masks_from_the_step_key_and_slice(rng):
    model = jnn.models.get("mlp", hidden_sizes=(32,), dropout_rate=0.5)
    batch = _batch(rng)
    state = jnn.create_train_state(model, optax.sgd(0.5), jax.random.PRNGKey(3), batch["x"])
    state = state.replace(step=jnp.asarray(5, state.step.dtype))  # a step key that is not 0's
    new_state, _ = jax.jit(jnn.make_train_step(microbatches=2))(state, batch)

    # by hand: slice i of 8 examples draws its masks from fold_in(fold_in(rng, step), i)
    step_key = jax.random.fold_in(state.rng, 5)

    def loss_sum(params, micro, key):
        logits, _ = state.model.apply(params, {}, micro, train=True, rng=key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, micro["y"]).sum()

    grads = [jax.grad(loss_sum)(state.params, {k: v[8 * i:8 * i + 8] for k, v in batch.items()},
                                jax.random.fold_in(step_key, i)) for i in range(2)]
    expected = jax.tree.map(lambda p, g0, g1: p - 0.5 * (g0 + g1) / 16, state.params, *grads)
    _close(new_state.params, expected, rtol=1e-5, atol=1e-6)
    dropped = jax.jit(jnn.make_train_step())(state, batch)[0]  # one key for the whole batch
    assert not np.allclose(dropped.params["Dense_0"]["kernel"], expected["Dense_0"]["kernel"])


def test_microbatches_add_up_a_confusion_matrix_cell_by_cell(rng):
    objective = jnn.objectives.get("cross_entropy", confusion_matrix=True)
    batch = _batch(rng, size=32, classes=4)
    batch["mask"] = np.arange(32) < 27
    model = jnn.models.get("mlp", num_outputs=4)
    state = jnn.create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), batch["x"])
    _, whole = jax.jit(jnn.make_train_step(objective))(state, batch)
    _, micro = jax.jit(jnn.make_train_step(objective, microbatches=4))(state, batch)
    assert np.shape(micro["confusion_matrix"][0]) == (4, 4)
    _close(micro, whole, rtol=1e-5, atol=1e-5)
    assert float(np.sum(micro["confusion_matrix"][0])) == 27


# ------------------------------------------------------------ evaluation precision
def test_an_eval_step_computes_in_its_compute_dtype(rng):
    batch = _batch(rng, size=64)
    state = jnn.create_train_state(jnn.models.get("mlp"), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   batch["x"])
    bf16 = jax.jit(jnn.make_eval_step(compute_dtype="bfloat16"))(state, batch)
    f32 = jax.jit(jnn.make_eval_step())(state, batch)
    # by hand: bfloat16 parameters and inputs, float32 logits into the loss
    cast = lambda tree: jax.tree.map(lambda v: v.astype(jnp.bfloat16), tree)  # noqa: E731
    logits, _ = state.model.apply(cast(state.params), {}, {"x": cast(batch["x"])}, train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                             batch["y"])
    np.testing.assert_allclose(bf16["loss"][0], losses.sum(), rtol=1e-6)
    # float32's loss is 30x further from it than the tolerance above
    assert abs(float(bf16["loss"][0]) - float(f32["loss"][0])) > 30 * 1e-6 * float(losses.sum())
    assert {leaf.dtype for leaf in jax.tree.leaves(bf16)} == {jnp.dtype(jnp.float32)}


def test_skip_nonfinite_also_skips_a_non_finite_loss_whose_gradients_are_finite(rng):
    # a loss term the gradient does not see (stop_gradient) turns infinite on one batch
    def poisoned(outputs, batch):
        losses, weights, metrics = jnn.objectives.get("cross_entropy")(outputs, batch)
        return losses + jax.lax.stop_gradient(batch["poison"]), weights, metrics

    batch = {**_batch(rng), "poison": np.zeros(16, np.float32)}
    state = jnn.create_train_state(jnn.models.get("mlp"), optax.sgd(0.1), jax.random.PRNGKey(0),
                                   batch["x"])
    step = jax.jit(jnn.make_train_step(poisoned, skip_nonfinite=True))
    kept, metrics = step(state, {**batch, "poison": np.full(16, np.inf, np.float32)})
    _close(kept.params, state.params, rtol=0, atol=0)
    assert metrics["skipped"] == (1.0, 1.0) and int(kept.step) == 1
    moved, metrics = step(state, batch)
    assert metrics["skipped"] == (0.0, 1.0)
    assert not np.allclose(moved.params["Dense_0"]["kernel"], state.params["Dense_0"]["kernel"])
    assert {leaf.dtype for leaf in jax.tree.leaves(metrics)} == {jnp.dtype(jnp.float32)}
