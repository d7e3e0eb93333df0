"""The seed MLP (one hidden layer of 128, ReLU) on the bundled digits with SGD.

    python -m train --config digits_mlp

Expected: test accuracy about 97% in a few seconds on 2 CPU cores.
"""

import ml_collections

from train.configs.base import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.dataset = "digits"
    config.model = "mlp"
    config.model_kwargs.hidden_sizes = (128,)
    config.optimizer = "momentum"
    config.learning_rate = 0.05
    config.batch_size = 32
    config.epochs = 40
    return config
