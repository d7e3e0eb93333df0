"""The seed MLP 784-128-10 with ReLU, cross-entropy and SGD lr 0.01 for 10 epochs, on MNIST.

    python -m train --config mnist_mlp   # needs MNIST prepared (see README)

Expected: not yet measured on this project's machines (they cannot download MNIST);
plain SGD at lr 0.01 converges slowly, so expect low-90s accuracy after 10 epochs. The
step takes about 0.5 ms per batch of 128 on 2 CPU cores.
"""

import ml_collections

from train.configs.base import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.dataset = "mnist"
    config.model = "mlp"
    config.model_kwargs.hidden_sizes = (128,)
    config.optimizer = "sgd"
    config.learning_rate = 0.01
    config.batch_size = 128
    config.epochs = 10
    return config
