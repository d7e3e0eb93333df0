"""The seed MLP (one hidden layer of 128, ReLU) on the bundled digits with SGD.

    python -m train --config digits_mlp

Expected: test accuracy about 97% in a few seconds on 2 CPU cores.
"""

from train.configs.base import base_config


def get_config() -> dict:
    config = base_config()
    config.update(dataset="digits", model="mlp", model_kwargs={"hidden_sizes": (128,)},
                  optimizer="momentum", learning_rate=0.05, batch_size=32, epochs=40)
    return config
