"""jnn.create_train_state compiles the model's init as one program (with
jnn.init_compiler_options on CPU): the same bits as Flax's own init dispatched op by op,
one compile, kept for equal models, and the op-by-op init where a module needs concrete
values."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jnn

SEED_MODELS = [("mlp", {}, (28, 28, 1)), ("cnn", {}, (28, 28, 1)),
               ("cnn", {"batch_norm": True}, (28, 28, 1)), ("cifar_cnn", {}, (32, 32, 3)),
               ("resmlp", {"depth": 3, "width": 32}, (28, 28, 1))]


def _flax_init(module, key, x):
    """The reference: Flax's init run op by op, with the keys jnn.create_train_state uses."""
    init_key, _, state_key = jax.random.split(key, 3)
    variables = dict(module.init({"params": init_key, "dropout": jax.random.fold_in(init_key, 1)},
                                 x, train=False))
    return variables.pop("params"), variables, state_key


@pytest.mark.parametrize("name,kwargs,shape", SEED_MODELS)
def test_the_compiled_init_gives_the_bits_of_flaxs_op_by_op_init(name, kwargs, shape):
    module = jnn.models.get(name, **kwargs)
    x = np.ones((2, *shape), np.float32)
    state = jnn.create_train_state(module, optax.adam(1e-3), jax.random.PRNGKey(3), x)
    params, model_state, state_key = _flax_init(module, jax.random.PRNGKey(3), x)
    assert jax.tree.structure(state.params) == jax.tree.structure(params)
    for ours, theirs in zip(jax.tree.leaves((state.params, state.model_state, state.rng)),
                            jax.tree.leaves((params, model_state, state_key))):
        np.testing.assert_array_equal(ours, theirs)  # bit for bit: no value changes
    for moment in (state.opt_state[0].mu, state.opt_state[0].nu):
        assert all(not np.any(leaf) for leaf in jax.tree.leaves(moment))


def test_the_init_is_one_program_and_is_kept_for_an_equal_model(compile_counter):
    x = np.zeros((1, 13), np.float32)  # a shape no other test uses: nothing cached in-process
    compile_counter.counting = True
    first = jnn.create_train_state(jnn.models.get("mlp", hidden_sizes=(29, 31)), optax.sgd(0.1),
                                   jax.random.PRNGKey(0), x)
    compiled = compile_counter.count
    again = jnn.create_train_state(jnn.models.get("mlp", hidden_sizes=(29, 31)), optax.sgd(0.1),
                                   jax.random.PRNGKey(1), x)
    assert compiled == 1, compile_counter.names  # op by op, it compiles a program per op
    assert compile_counter.count == compiled  # an equal model (and a new optimizer): kept
    assert not np.array_equal(first.params["Dense_0"]["kernel"], again.params["Dense_0"]["kernel"])


class _NeedsConcreteValues(nn.Module):
    """Its init branches in Python on the data, which tracing cannot do."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        scale = 2.0 if float(jnp.max(x)) > 0 else 1.0
        return nn.Dense(3)(x) * scale


def test_a_module_that_needs_concrete_values_is_initialised_op_by_op():
    x = np.ones((2, 5), np.float32)
    state = jnn.create_train_state(_NeedsConcreteValues(), optax.sgd(0.1), jax.random.PRNGKey(0), x)
    params, _, _ = _flax_init(_NeedsConcreteValues(), jax.random.PRNGKey(0), x)
    np.testing.assert_array_equal(state.params["Dense_0"]["kernel"], params["Dense_0"]["kernel"])


def test_an_nnx_instance_keeps_its_own_values():
    from flax import nnx

    layer = nnx.Linear(4, 2, rngs=nnx.Rngs(5))
    state = jnn.create_train_state(layer, optax.sgd(0.1), jax.random.PRNGKey(0),
                                   np.ones((1, 4), np.float32))
    np.testing.assert_array_equal(state.params["kernel"], layer.kernel[...])


def test_init_compiler_options_are_for_the_cpu_only():
    assert jnn.init_compiler_options("cpu") == {"xla_backend_optimization_level": 1,
                                                 "xla_cpu_use_fusion_emitters": False}
    assert jnn.init_compiler_options("gpu") == {}
    with pytest.raises(ValueError, match="unknown platform"):
        jnn.init_compiler_options("cpus")
