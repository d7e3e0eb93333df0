"""Keras 3 on the JAX backend: model.compile(...) then train_on_batch / test_on_batch."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402

from benchmarks.frameworks import Bench, random_batch  # noqa: E402
from benchmarks.models import RESMLP_WIDTH, model_spec  # noqa: E402


def make_model(name: str) -> keras.Model:
    spec = model_spec(name)
    L = keras.layers
    inputs = keras.Input(spec.input_shape)
    if spec.family == "mlp":
        x = L.Dense(128, activation="relu")(L.Flatten()(inputs))
    elif spec.family == "cnn":
        x = L.MaxPooling2D(2)(L.Conv2D(32, 3, activation="relu")(inputs))
        x = L.Dense(128, activation="relu")(L.Flatten()(x))
    elif spec.family == "cifar_cnn":
        x = L.MaxPooling2D(2)(L.Conv2D(32, 3, padding="same", activation="relu")(inputs))
        x = L.MaxPooling2D(2)(L.Conv2D(64, 3, padding="same", activation="relu")(x))
        x = L.Dense(120, activation="relu")(L.Flatten()(x))
        x = L.Dense(84, activation="relu")(x)
    else:
        x = L.Dense(RESMLP_WIDTH)(inputs)
        for _ in range(spec.depth):
            h = L.Dense(RESMLP_WIDTH, activation="relu")(L.LayerNormalization(epsilon=1e-6)(x))
            x = L.Add()([x, L.Dense(RESMLP_WIDTH)(h)])
    return keras.Model(inputs, L.Dense(10)(x))


def build(spec: dict) -> Bench:
    if spec["transform"] != "jit":
        raise ValueError("the keras peer runs under jit only")
    keras.utils.set_random_seed(0)
    model = make_model(spec["model"])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=True)
    x, y = random_batch(model_spec(spec["model"]).input_shape, spec["batch"])

    def train():
        model.train_on_batch(x, y)  # returns host values: blocks

    def evaluate():
        model.test_on_batch(x, y)

    return Bench(model.count_params(), train, evaluate, phases=None)
