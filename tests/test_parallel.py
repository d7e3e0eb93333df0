"""pmap and sharded jit (data parallel and FSDP) against the single-device step, on 8 CPU devices."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jnn
from jnn import parallel

NUM_DEVICES = 8


def _batches(n=3, size=32, real=None, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        batch = {"x": rng.normal(size=(size, 8, 8, 1)).astype(np.float32),
                 "y": rng.integers(0, 10, size=size)}
        if real is not None and i == n - 1:  # the last batch is partial: pad it
            batch = jnn.data.pad_batch({k: v[:real] for k, v in batch.items()}, size)
        out.append(batch)
    return out


MODELS = {
    "cnn": dict(name="cnn"),
    "cnn_batchnorm": dict(name="cnn", batch_norm=True),
    "mlp_dropout": dict(name="mlp", hidden_sizes=(64,), dropout_rate=0.5),
}


def _state(model_kwargs, axis_name=None):
    kwargs = dict(model_kwargs)
    model = jnn.models.get(kwargs.pop("name"), axis_name=axis_name, **kwargs)
    tx = jnn.make_optimizer("momentum", 0.05)
    return jnn.create_train_state(model, tx, jax.random.PRNGKey(1), np.zeros((1, 8, 8, 1)))


def _single_device(model_kwargs, batches):
    state, step = _state(model_kwargs), jax.jit(jnn.make_train_step())
    metrics = []
    for b in batches:
        state, m = step(state, b)
        metrics.append(m)
    return state, jnn.sum_metrics(metrics)


def _assert_same(state_a, metrics_a, state_b, metrics_b):
    for tree_a, tree_b in ((state_a.params, state_b.params),
                           (state_a.batch_stats, state_b.batch_stats)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                             rtol=1e-4, atol=1e-5), tree_a, tree_b)
    for key in metrics_a:
        np.testing.assert_allclose(metrics_a[key], metrics_b[key], rtol=1e-5)


def _sharded(model_kwargs, batches, fsdp=False):
    mesh = parallel.make_mesh()
    state = parallel.shard_state(_state(model_kwargs), mesh, fsdp=fsdp)
    step = parallel.jit_sharded(jnn.make_train_step(), state, mesh, fsdp=fsdp)
    metrics = []
    for b in batches:
        state, m = step(state, parallel.shard_batch(b, mesh))
        metrics.append(m)
    return state, jnn.sum_metrics(metrics)


def _pmapped(model_kwargs, batches):
    state = parallel.replicate(_state(model_kwargs, axis_name=parallel.PMAP_AXIS))
    step = parallel.pmap_train_step(jnn.make_train_step(axis_name=parallel.PMAP_AXIS))
    metrics = []
    for b in batches:
        state, m = step(state, parallel.split_batch(b))
        metrics.append(parallel.unreplicate(m))
    return parallel.unreplicate(state), jnn.sum_metrics(metrics)


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("fsdp", [False, True])
def test_sharded_jit_equals_the_single_device_step(model, fsdp):
    batches = _batches()
    _assert_same(*_single_device(MODELS[model], batches), *_sharded(MODELS[model], batches, fsdp))


def test_fsdp_splits_large_parameters_over_the_devices():
    mesh = parallel.make_mesh()
    state = parallel.shard_state(_state(MODELS["cnn"]), mesh, fsdp=True)
    kernel = state.params["Dense_0"]["kernel"]  # (288, 128)
    assert kernel.sharding.spec[0] == "data"
    assert kernel.addressable_shards[0].data.shape == (288 // NUM_DEVICES, 128)
    mu = state.opt_state[0].trace["Dense_0"]["kernel"]
    assert mu.addressable_shards[0].data.shape == (288 // NUM_DEVICES, 128)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_pmap_equals_the_single_device_step(model):
    batches = _batches()
    _assert_same(*_single_device(MODELS[model], batches), *_pmapped(MODELS[model], batches))


def test_masking_stays_exact_when_the_last_batch_is_split_over_devices():
    # 32 rows, 11 real: devices 3..7 hold only padding, device 2 a mix
    batches = _batches(real=11)
    unpadded = batches[:-1] + [{k: v[:11] for k, v in batches[-1].items() if k != "mask"}]
    expected = _single_device(MODELS["cnn"], unpadded)
    _assert_same(*expected, *_pmapped(MODELS["cnn"], batches))
    sharded_state, sharded_metrics = _sharded(MODELS["cnn"], batches)
    _assert_same(*expected, sharded_state, sharded_metrics)
    assert jnn.metrics.count(sharded_metrics) == 32 * 2 + 11
    assert float(sharded_metrics["accuracy"][1]) == 32 * 2 + 11


def test_pmap_and_sharded_eval_steps_sum_like_one_device():
    state = _state(MODELS["cnn"])
    b = _batches(n=1, real=13)[0]
    expected = jnn.make_eval_step()(state, b)
    pmapped = parallel.pmap_eval_step(jnn.make_eval_step(axis_name=parallel.PMAP_AXIS))
    got = parallel.unreplicate(pmapped(parallel.replicate(state), parallel.split_batch(b)))
    mesh = parallel.make_mesh()
    sharded = parallel.jit_sharded(jnn.make_eval_step(), state, mesh, donate=False)
    sharded_state = parallel.shard_state(state, mesh)
    got_sharded = sharded(sharded_state, parallel.shard_batch(b, mesh))
    # an eval step is never donated, even with the default donate=True (a train step is)
    default = parallel.jit_sharded(jnn.make_eval_step(), sharded_state, mesh)
    got_default = [default(sharded_state, parallel.shard_batch(b, mesh)) for _ in range(2)]
    donation = re.compile(r"jax\.buffer_donor|tf\.aliasing_output")
    assert not donation.search(default.lower(sharded_state, parallel.shard_batch(b, mesh))
                               .as_text())
    train = parallel.jit_sharded(jnn.make_train_step(), sharded_state, mesh)
    assert donation.search(train.lower(sharded_state, parallel.shard_batch(b, mesh)).as_text())
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5)
        np.testing.assert_allclose(got_sharded[key], expected[key], rtol=1e-5)
        for metrics in got_default:
            np.testing.assert_allclose(metrics[key], expected[key], rtol=1e-5)


def test_a_global_batch_that_does_not_divide_says_what_to_use():
    with pytest.raises(ValueError, match="a batch of 30 examples does not divide over 8 "
                                         "devices; use a batch size of 24 or 32"):
        parallel.split_batch({"x": np.zeros((30, 2)), "y": np.zeros(30)}, 8)


def test_process_slice_gives_each_process_a_contiguous_share():
    batch = {"x": np.arange(8)[:, None], "y": np.arange(8)}
    shares = [parallel.process_slice(batch, i, 4)["y"] for i in range(4)]
    np.testing.assert_array_equal(np.concatenate(shares), np.arange(8))
    assert [len(s) for s in shares] == [2, 2, 2, 2]


def test_donating_a_sharded_state_leaves_the_original_usable():
    state = _state(MODELS["cnn"])
    mesh = parallel.make_mesh()
    sharded = parallel.shard_state(state, mesh)
    step = parallel.jit_sharded(jnn.make_train_step(), sharded, mesh)
    step(sharded, parallel.shard_batch(_batches(n=1)[0], mesh))
    assert int(state.step) == 0 and np.isfinite(np.asarray(state.params["Dense_0"]["kernel"])).all()


# ------------------------------------------------- BatchNorm that knows nothing of devices
# Neither module gives BatchNorm an axis_name: under pmap each device normalises its own
# rows, and it is the step (make_train_step(axis_name=...)) that must average the updated
# statistics over the devices. Under sharded jit the module sees the global batch.
class _LinenBatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(16)(x.reshape((x.shape[0], -1)))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        return nn.Dense(10)(nn.relu(x))


class _NNXBatchNormNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, momentum=0.5, rngs=rngs)
        self.out = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.norm(self.hidden(x.reshape((x.shape[0], -1))))))


def _device_shifted_batch(size=32, seed=3):
    """Rows of device d (pmap split into 8 slices) are shifted by d and scaled by 1 + d/4,
    so every device's statistics differ, their average differs from device 0's, and the
    average of per-device variances differs from the global batch's variance."""
    rng = np.random.default_rng(seed)
    device = np.repeat(np.arange(NUM_DEVICES), size // NUM_DEVICES)[:, None, None, None]
    x = rng.normal(size=(size, 8, 8, 1)) * (1 + device / 4) + device
    return {"x": x.astype(np.float32), "y": rng.integers(0, 10, size=size)}


def _stats_by_hand(kind, params, model_state, x):
    """The statistics after one training forward pass on `x`, straight from Flax."""
    if kind == "linen":
        _, updates = _LinenBatchNormNet().apply({"params": params, **model_state}, x,
                                                train=True, mutable=["batch_stats"])
        return {"batch_stats": jax.device_get(updates["batch_stats"])}
    module = _NNXBatchNormNet(nnx.Rngs(0))  # the same initial values as the state's
    module.train()
    module(jnp.asarray(x))
    return jax.device_get(nnx.to_pure_dict(nnx.state(module, nnx.BatchStat)))


def _device_unaware_state(kind, learning_rate=0.1):
    module = _LinenBatchNormNet() if kind == "linen" else _NNXBatchNormNet(nnx.Rngs(0))
    return jnn.create_train_state(module, optax.sgd(learning_rate), jax.random.PRNGKey(0),
                                  np.zeros((1, 8, 8, 1), np.float32))


def _assert_trees_close(got, expected, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                         rtol=rtol, atol=atol), got, expected)


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_pmap_averages_the_statistics_of_a_batchnorm_without_axis_name(kind):
    state = _device_unaware_state(kind)
    batch = _device_shifted_batch()
    step = parallel.pmap_train_step(jnn.make_train_step(axis_name=parallel.PMAP_AXIS))
    new, _ = step(parallel.replicate(state), parallel.split_batch(batch))

    per_device = [_stats_by_hand(kind, state.params, state.model_state, x)
                  for x in parallel.split_batch(batch)["x"]]
    expected = jax.tree.map(lambda *s: np.mean(s, axis=0), *per_device)
    stats = jax.device_get(new.model_state)
    for d in range(NUM_DEVICES):  # every replica holds the average, not its own statistics
        _assert_trees_close(jax.tree.map(lambda s: s[d], stats), expected)
    # the data make the average distinguishable from any one device's statistics
    for own in per_device:
        assert not np.allclose(jax.tree.leaves(own)[0], jax.tree.leaves(expected)[0], atol=1e-2)


def test_pmap_gradient_of_a_batchnorm_without_axis_name_is_the_mean_over_devices():
    # Each device normalises its own rows; the update is the gradient of the sum of the
    # devices' losses over the global number of examples (plain SGD: no optimizer rescales).
    state, learning_rate = _device_unaware_state("linen"), 0.1
    batch = parallel.split_batch(_device_shifted_batch())
    step = parallel.pmap_train_step(jnn.make_train_step(axis_name=parallel.PMAP_AXIS))
    new, metrics = step(parallel.replicate(state), batch)

    def loss_sum(params):
        total = 0.0
        for x, y in zip(batch["x"], batch["y"]):
            logits, _ = _LinenBatchNormNet().apply({"params": params, **state.model_state}, x,
                                                   train=True, mutable=["batch_stats"])
            total += optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
        return total

    total, grads = jax.jit(jax.value_and_grad(loss_sum))(state.params)
    count = batch["y"].size
    expected = jax.tree.map(lambda p, g: p - learning_rate * g / count, state.params, grads)
    _assert_trees_close(parallel.unreplicate(new.params), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(parallel.unreplicate(metrics)["loss"], (total, count), rtol=1e-5)


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_sharded_jit_batchnorm_statistics_are_those_of_the_global_batch(kind):
    state, batch = _device_unaware_state(kind), _device_shifted_batch()
    mesh = parallel.make_mesh()
    sharded = parallel.shard_state(state, mesh)
    step = parallel.jit_sharded(jnn.make_train_step(), sharded, mesh)
    got, _ = step(sharded, parallel.shard_batch(batch, mesh))
    single, _ = jax.jit(jnn.make_train_step())(state, batch)

    expected = _stats_by_hand(kind, state.params, state.model_state, batch["x"])
    _assert_trees_close(jax.device_get(got.model_state), expected)
    _assert_trees_close(jax.device_get(single.model_state), expected)
    _assert_trees_close(jax.device_get(got.params), jax.device_get(single.params),
                        rtol=1e-4, atol=1e-6)
    # global statistics, not the average of per-device ones (the two differ on this batch)
    per_device = [_stats_by_hand(kind, state.params, state.model_state, x)
                  for x in parallel.split_batch(batch)["x"]]
    averaged = jax.tree.map(lambda *s: np.mean(s, axis=0), *per_device)
    variances = [v for path, v in jax.tree_util.tree_flatten_with_path(averaged)[0]
                 if "var" in jax.tree_util.keystr(path)]
    global_variances = [v for path, v in jax.tree_util.tree_flatten_with_path(expected)[0]
                        if "var" in jax.tree_util.keystr(path)]
    assert not np.allclose(variances, global_variances, rtol=1e-2)


@pytest.mark.parametrize("batch_size,devices,sizes", [(30, 8, [24, 32]), (3, 8, [8]),
                                                      (1, 1, [1, 2]), (17, 4, [16, 20])])
def test_the_nearest_divisible_sizes_are_positive_multiples_next_to_the_batch(
        batch_size, devices, sizes):
    assert parallel.nearest_divisible_sizes(batch_size, devices) == sizes


def test_process_slice_defaults_to_this_processs_share(monkeypatch):
    batch = {"y": np.arange(12)}
    monkeypatch.setattr(jax, "process_index", lambda: 2)
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    np.testing.assert_array_equal(parallel.process_slice(batch)["y"], [8, 9, 10, 11])
    np.testing.assert_array_equal(parallel.process_slice(batch, 0)["y"], [0, 1, 2, 3])
    np.testing.assert_array_equal(parallel.process_slice(batch, process_count=4)["y"],
                                  [6, 7, 8])


def test_fsdp_splits_the_largest_divisible_axis_of_arrays_from_min_size_on():
    mesh = parallel.make_mesh()
    leaves = {"wide": np.zeros((8, 16)), "tall": np.zeros((24, 8)), "odd": np.zeros((8, 17)),
              "small": np.zeros((8, 15)), "none": np.zeros((7, 20))}
    specs = {k: s.spec for k, s in
             parallel.state_shardings(leaves, mesh, fsdp=True, min_size=120).items()}
    assert specs["wide"] == jax.sharding.PartitionSpec(None, "data")  # 16 > 8, both divide
    assert specs["tall"] == jax.sharding.PartitionSpec("data", None)
    assert specs["odd"] == jax.sharding.PartitionSpec("data", None)  # 17 does not divide
    assert specs["small"] == jax.sharding.PartitionSpec("data", None)  # 120: exactly min_size
    assert specs["none"] == jax.sharding.PartitionSpec()  # neither axis divides
    assert parallel.state_shardings({"t": np.zeros((7, 17))}, mesh, fsdp=True,
                                    min_size=120)["t"].spec == jax.sharding.PartitionSpec()
    big = {**leaves, "big": np.zeros((8, 1024))}
    replicated = parallel.state_shardings(big, mesh)  # without fsdp: all replicated
    assert all(s.spec == jax.sharding.PartitionSpec() for s in replicated.values())


def test_a_sharded_state_is_replicated_by_default_and_takes_create_options():
    mesh = parallel.make_mesh()
    model = jnn.models.get("mlp", hidden_sizes=(64,), num_outputs=8)
    sample = np.zeros((1, 8, 8, 1), np.float32)
    state = parallel.create_sharded_train_state(
        model, optax.sgd(0.1), jax.random.PRNGKey(0), sample, mesh,
        loss_scale=jnn.precision.DynamicLossScale.create(2.0 ** 10))
    kernel = state.params["Dense_0"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec()
    assert float(state.loss_scale.scale) == 2.0 ** 10


def test_a_sharded_steps_trace_lowers_and_compiles_to_the_step(rng):
    mesh = parallel.make_mesh()
    state = parallel.shard_state(_state(MODELS["cnn"]), mesh)
    batch = parallel.shard_batch(_batches(1)[0], mesh)
    eval_step = parallel.jit_sharded(jnn.make_eval_step(), state, mesh)
    traced = eval_step.trace(state, batch)
    assert traced.jaxpr is not None
    compiled = traced.lower().compile()
    for a, b in zip(jax.tree.leaves(compiled(state, batch)),
                    jax.tree.leaves(eval_step(state, batch))):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_unreplicate_takes_the_first_replica_and_replicate_places_one_per_device():
    tree = {"a": np.arange(3.0)}
    replicated = parallel.replicate(tree)
    assert replicated["a"].shape == (NUM_DEVICES, 3)
    assert replicated["a"].sharding.spec == jax.sharding.PartitionSpec(parallel.PMAP_AXIS)
    assert {s.device for s in replicated["a"].addressable_shards} == set(jax.local_devices())
    differing = {"a": np.arange(NUM_DEVICES)[:, None] * np.ones(3)}  # replica k holds k
    np.testing.assert_array_equal(parallel.unreplicate(differing)["a"], [0, 0, 0])


def test_pmap_train_step_donates_the_state(rng):
    state = parallel.replicate(_state(MODELS["cnn"], axis_name=parallel.PMAP_AXIS))
    step = parallel.pmap_train_step(jnn.make_train_step(axis_name=parallel.PMAP_AXIS))
    kernel = state.params["Dense_0"]["kernel"]
    new_state, _ = step(state, parallel.split_batch(_batches(1)[0]))
    assert kernel.is_deleted() and not new_state.params["Dense_0"]["kernel"].is_deleted()


def test_make_mesh_uses_the_devices_it_is_given():
    assert parallel.make_mesh(jax.devices()[:2]).devices.tolist() == jax.devices()[:2]
    assert parallel.make_mesh().devices.size == NUM_DEVICES


def test_state_shardings_accept_plain_python_numbers_as_leaves():
    mesh = parallel.make_mesh()
    shardings = parallel.state_shardings({"lr": 0.1, "w": np.zeros((8, 1024))}, mesh, fsdp=True)
    assert shardings["lr"].spec == jax.sharding.PartitionSpec()
    assert shardings["w"].spec == jax.sharding.PartitionSpec(None, "data")
    placed = parallel.shard_state({"lr": 0.1, "w": np.ones((8, 1024), np.float32)}, mesh,
                                  fsdp=True)
    assert float(placed["lr"]) == np.float32(0.1) and placed["w"].sharding.spec == shardings["w"].spec


@pytest.mark.parametrize("fsdp", [False, True])
def test_a_sharded_step_is_compiled_for_the_state_and_batch_shardings_it_promises(fsdp):
    mesh = parallel.make_mesh()
    state = parallel.shard_state(_state(MODELS["cnn"]), mesh, fsdp=fsdp)
    batch = parallel.shard_batch(_batches(1)[0], mesh)
    assert batch["x"].sharding.spec == jax.sharding.PartitionSpec("data")
    assert {s.data.shape[0] for s in batch["x"].addressable_shards} == {32 // NUM_DEVICES}
    if fsdp:  # the (288, 128) kernel is split; the rest is under min_size
        assert state.params["Dense_0"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(
            "data", None)
    for make, returns_state in ((jnn.make_train_step, True), (jnn.make_eval_step, False)):
        # lowered for host arrays: the shardings come from jit_sharded, not the arguments
        host_state, host_batch = jax.device_get(state), _batches(1)[0]
        compiled = parallel.jit_sharded(make(), state, mesh, fsdp=fsdp).lower(
            host_state, host_batch).compile()
        (state_in, batch_in), _ = compiled.input_shardings
        every = lambda tree: jax.tree.leaves(tree, is_leaf=lambda x: x is None)  # noqa: E731
        leaves = every(state)  # None: no loss scale
        assert len(every(state_in)) == len(leaves)
        for got, leaf in zip(every(state_in), leaves):  # None: an input the step never reads
            assert got is None or got.is_equivalent_to(leaf.sharding, leaf.ndim), got
        assert batch_in["x"].is_equivalent_to(parallel.batch_sharding(mesh), 4)
        outputs = compiled.output_shardings
        metrics_out = outputs[1] if returns_state else outputs
        assert all(s.is_fully_replicated for s in jax.tree.leaves(metrics_out))
        if returns_state:
            assert len(every(outputs[0])) == len(leaves)
            for got, leaf in zip(every(outputs[0]), leaves):
                assert leaf is None or got.is_equivalent_to(leaf.sharding, leaf.ndim), got


def test_a_sharded_train_step_without_donation_leaves_the_state_usable():
    mesh = parallel.make_mesh()
    state = parallel.shard_state(_state(MODELS["cnn"]), mesh)
    batch = parallel.shard_batch(_batches(1)[0], mesh)
    kept = parallel.jit_sharded(jnn.make_train_step(), state, mesh, donate=False)
    kept(state, batch)
    assert not state.params["Dense_0"]["kernel"].is_deleted()
    donated = parallel.jit_sharded(jnn.make_train_step(), state, mesh)
    donated(state, batch)
    assert state.params["Dense_0"]["kernel"].is_deleted()


@pytest.mark.parametrize("fsdp", [False, True])
def test_a_sharded_step_places_its_outputs_as_promised_whatever_it_computes(fsdp):
    # outputs XLA alone would place otherwise: per-example values (split over "data" by
    # the batch) and parameters made afresh rather than from the sharded inputs
    mesh = parallel.make_mesh()
    state = parallel.shard_state(_state(MODELS["cnn"]), mesh, fsdp=fsdp)
    batch = parallel.shard_batch(_batches(1)[0], mesh)

    def per_example(s, b):
        return {"score": (b["x"].reshape(32, -1).sum(1), jnp.ones(32))}

    def reset(s, b):
        fresh = jax.tree.map(lambda p: jnp.full(p.shape, 0.5, p.dtype), s.params)
        return s.replace(params=fresh), per_example(s, b)

    scores = parallel.jit_sharded(per_example, state, mesh, fsdp=fsdp)(state, batch)
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(scores))
    expected = jax.tree.leaves(parallel.state_shardings(state, mesh, fsdp=fsdp))
    step = parallel.jit_sharded(reset, state, mesh, fsdp=fsdp)
    for _ in range(2):  # the second call takes the first one's output as it is
        state, metrics = step(state, batch)
        for leaf, sharding in zip(jax.tree.leaves(state), expected):
            assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (leaf.shape, leaf.sharding)
        assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(metrics))


def test_a_sharded_step_traces_its_step_once_however_often_it_is_called():
    traces = []
    step = jnn.make_train_step()

    def counted(state, batch):
        traces.append(1)
        return step(state, batch)

    mesh = parallel.make_mesh()
    state = parallel.shard_state(_state(MODELS["cnn"]), mesh)
    sharded = parallel.jit_sharded(counted, state, mesh)
    for b in _batches(3):
        state, _ = sharded(state, parallel.shard_batch(b, mesh))
    assert len(traces) == 1  # the output-structure query and jit share one trace
