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
    # 12 train steps per compiled call: 0.80x the train time of one step per call, the
    # same run (benchmarks/results/cpu-2core/steps_per_call.md); 36 steps an epoch
    config.steps_per_call = 12
    return config
