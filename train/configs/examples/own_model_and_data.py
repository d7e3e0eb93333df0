"""Your own Linen model and your own arrays, trained by the harness: three interleaved spirals.

    python -m train --config train/configs/examples/own_model_and_data.py

Copy this file to start an experiment of your own. It registers a model
(`jnn.models.register`) and a dataset of in-memory arrays (`jnn.data.register_arrays`)
when it is loaded, and names them in the config, which keeps this file's path: every
process of a run, a resumed run and `train.config.from_dict` of a saved config load the
file again, so the names resolve wherever the config goes. Every field is checked as
for a named config: `--set model_kwargs.width=64` and `--set model_kwargs.layer_norm=true`
are typed by the fields of `SpiralNet` below.

Expected: test accuracy 0.93 (seeds 0-2: 0.90-0.94) after 20 epochs, about 7 s of
training on 2 CPU cores (15 s wall). A linear model reaches 0.33, chance on three arms:
`--set model=mlp --set model_kwargs={} --set model_kwargs.hidden_sizes=`.
"""

import flax.linen as nn
import jax
import ml_collections
import numpy as np

import jnn
from train.configs.base import base_config


class SpiralNet(nn.Module):
    """Two hidden layers of `width` units with tanh, optionally layer-normalised."""

    width: int = 32
    layer_norm: bool = False
    num_outputs: int = 3  # the harness sets it from the dataset's classes

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape((x.shape[0], -1))  # (B, 2)
        for _ in range(2):
            x = nn.Dense(self.width)(x)
            x = nn.LayerNorm()(x) if self.layer_norm else x
            x = nn.tanh(x)
        return nn.Dense(self.num_outputs)(x)  # (B, num_outputs)


def spirals(n: int, seed: int, arms: int = 3, noise: float = 0.4) -> dict:
    """`n` points on `arms` spirals of one turn each, with `noise` (radians) on the angle:
    {"x": (n, 2) float32, "y": (n,) int32 arm}."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, arms, n)
    radius = rng.uniform(0.1, 1.0, n)
    angle = 2 * np.pi * (radius + y / arms) + rng.normal(0, noise, n)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return {"x": x.astype(np.float32), "y": y.astype(np.int32)}


jnn.models.register("spiral_net", SpiralNet)
jnn.data.register_arrays("spirals", train=spirals(1500, seed=0), test=spirals(300, seed=1),
                         num_classes=3)


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.dataset = "spirals"
    config.validation_fraction = 0.2
    config.model = "spiral_net"
    config.model_kwargs.width = 32
    config.optimizer = "adam"
    config.learning_rate = 1e-2
    config.batch_size = 64
    config.epochs = 20
    return config
