"""The seed CIFAR-10 CNN: SGD lr 0.001 momentum 0.9, StepLR(7, 0.7), crop+flip, normalise 0.5/0.5.

    python -m train --config cifar10_cnn   # needs CIFAR-10 prepared (see README)

Expected: not yet measured on this project's machines (they cannot download CIFAR-10).
The step takes about 90 ms per batch of 128 on 2 CPU cores, so an epoch of 313 steps
takes about 30 s.
"""

import ml_collections

from train.configs.base import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.dataset = "cifar10"
    config.augment = True
    config.model = "cifar_cnn"
    config.optimizer = "momentum"
    config.learning_rate = 1e-3
    config.momentum = 0.9
    config.schedule = "step"
    config.schedule_kwargs = dict(step_epochs=7, gamma=0.7)
    config.batch_size = 128
    config.epochs = 30
    return config
