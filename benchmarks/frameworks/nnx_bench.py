"""Flax NNX: today's Flax example shape, with nnx.jit and nnx.Optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from benchmarks.frameworks import Bench, random_batch
from benchmarks.models import RESMLP_WIDTH, model_spec
from benchmarks.timing import compile_phases


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(784, 128, rngs=rngs)
        self.out = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x.reshape((x.shape[0], -1)))))


class CNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 32, (3, 3), padding="VALID", rngs=rngs)
        self.hidden = nnx.Linear(13 * 13 * 32, 128, rngs=rngs)
        self.out = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(nnx.relu(self.conv(x)), (2, 2), strides=(2, 2))
        return self.out(nnx.relu(self.hidden(x.reshape((x.shape[0], -1)))))


class CifarCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv1 = nnx.Conv(3, 32, (3, 3), padding=1, rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), padding=1, rngs=rngs)
        self.fc1 = nnx.Linear(4096, 120, rngs=rngs)
        self.fc2 = nnx.Linear(120, 84, rngs=rngs)
        self.fc3 = nnx.Linear(84, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), strides=(2, 2))
        x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), strides=(2, 2))
        x = nnx.relu(self.fc1(x.reshape((x.shape[0], -1))))
        return self.fc3(nnx.relu(self.fc2(x)))


class Block(nnx.Module):
    def __init__(self, rngs):
        self.norm = nnx.LayerNorm(RESMLP_WIDTH, rngs=rngs)
        self.fc1 = nnx.Linear(RESMLP_WIDTH, RESMLP_WIDTH, rngs=rngs)
        self.fc2 = nnx.Linear(RESMLP_WIDTH, RESMLP_WIDTH, rngs=rngs)

    def __call__(self, x):
        return x + self.fc2(nnx.relu(self.fc1(self.norm(x))))


class ResMLP(nnx.Module):
    def __init__(self, depth, rngs):
        self.inp = nnx.Linear(784, RESMLP_WIDTH, rngs=rngs)
        self.blocks = nnx.List([Block(rngs) for _ in range(depth)])
        self.out = nnx.Linear(RESMLP_WIDTH, 10, rngs=rngs)

    def __call__(self, x):
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.out(x)


def make_model(name: str):
    spec, rngs = model_spec(name), nnx.Rngs(0)
    if spec.family == "resmlp":
        return ResMLP(spec.depth, rngs)
    return {"mlp": MLP, "cnn": CNN, "cifar_cnn": CifarCNN}[spec.family](rngs)


def build(spec: dict) -> Bench:
    if spec["transform"] != "jit":
        raise ValueError("the nnx peer runs under jit only")
    model = make_model(spec["model"])
    x, y = random_batch(model_spec(spec["model"]).input_shape, spec["batch"])
    x, y = jax.device_put(x), jax.device_put(y)
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def eval_step(model, x, y):
        logits = model(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), jnp.mean(
            logits.argmax(-1) == y)

    # The phases of nnx.jit's own trace/lower/compile; the steps then run through nnx.jit
    # as users call it (its first call hits the persistent cache this filled).
    _, train_phases = compile_phases(train_step, model, optimizer, x, y)
    _, eval_phases = compile_phases(eval_step, model, x, y)

    def train():
        jax.block_until_ready(train_step(model, optimizer, x, y))

    def evaluate():
        jax.block_until_ready(eval_step(model, x, y))

    count = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return Bench(count, train, evaluate, phases={"train": train_phases, "eval": eval_phases})
