"""The canonical hand-written Flax Linen + Optax jit step (the Flax examples' shape).

The models are written here again with plain flax.linen layers (nn.max_pool included),
as a researcher would write them without jnn.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from benchmarks.frameworks import Bench, random_batch
from benchmarks.models import RESMLP_WIDTH, model_spec
from benchmarks.timing import compile_phases


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(128)(x.reshape((x.shape[0], -1))))
        return nn.Dense(10)(x)


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(32, (3, 3), padding="VALID")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Dense(128)(x.reshape((x.shape[0], -1))))
        return nn.Dense(10)(x)


class CifarCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3), padding=1)(x)), (2, 2), strides=(2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(64, (3, 3), padding=1)(x)), (2, 2), strides=(2, 2))
        x = nn.relu(nn.Dense(120)(x.reshape((x.shape[0], -1))))
        return nn.Dense(10)(nn.relu(nn.Dense(84)(x)))


class ResMLP(nn.Module):
    depth: int

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(RESMLP_WIDTH)(x)
        for _ in range(self.depth):
            h = nn.relu(nn.Dense(RESMLP_WIDTH)(nn.LayerNorm()(x)))
            x = x + nn.Dense(RESMLP_WIDTH)(h)
        return nn.Dense(10)(x)


def make_model(name: str) -> nn.Module:
    spec = model_spec(name)
    return {"mlp": MLP, "cnn": CNN, "cifar_cnn": CifarCNN}.get(
        spec.family, lambda: ResMLP(spec.depth))()


def build(spec: dict) -> Bench:
    if spec["transform"] != "jit":
        raise ValueError("the flax peer runs under jit only")
    model = make_model(spec["model"])
    x, y = random_batch(model_spec(spec["model"]).input_shape, spec["batch"])
    x, y = jax.device_put(x), jax.device_put(y)
    params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def eval_step(params, x, y):
        logits = model.apply({"params": params}, x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, jnp.mean(logits.argmax(-1) == y)

    train_c, train_phases = compile_phases(train_step, params, opt_state, x, y)
    eval_c, eval_phases = compile_phases(eval_step, params, x, y)
    holder = {"params": params, "opt_state": opt_state}

    def train():
        holder["params"], holder["opt_state"], loss = train_c(holder["params"],
                                                              holder["opt_state"], x, y)
        jax.block_until_ready(loss)

    def evaluate():
        jax.block_until_ready(eval_c(holder["params"], x, y))

    count = sum(p.size for p in jax.tree.leaves(params))
    return Bench(count, train, evaluate, phases={"train": train_phases, "eval": eval_phases})
