"""Regression with MSE: a two-layer MLP on scikit-learn's bundled diabetes data (the seed's
house-price regression, with data that ships offline).

    python -m train --config diabetes_mlp

Expected: test MSE 3499 against 5128 for predicting the training mean (measured
with seed 0; early stopping ends it near epoch 45, about 5 s on 2 CPU cores). Targets
are standardised for training; MSE is reported in the original units.
"""

from train.configs.base import base_config


def get_config() -> dict:
    config = base_config()
    config.update(dataset="diabetes", model="mlp", loss="mse",
                  model_kwargs={"hidden_sizes": (32,), "dropout_rate": 0.0},
                  optimizer="sgd", learning_rate=0.01, batch_size=32, epochs=60,
                  l2=1e-3, early_stopping_patience=10)
    return config
