"""Fields every config has, with their defaults and why.

Named configs and your own config files start from `base_config()` and change what
they need (big_vision / Flax style):

    def get_config():
        config = base_config()
        config.model = "mlp"
        config.model_kwargs.hidden_sizes = (64, 32)
        return config

A field whose default is None declares its type with `placeholder`, so that
`--set clip_norm=1.5` knows it is a number. The harness refuses any field not listed
here (train/config_checks.py checks names, types and ranges).
"""

import ml_collections
from ml_collections.config_dict import placeholder


def base_config() -> ml_collections.ConfigDict:
    """A fresh config holding every field with its default."""
    return ml_collections.ConfigDict(dict(
        dataset="digits",
        data_dir=placeholder(str),  # tfds data dir; None: $TFDS_DATA_DIR or ~/tensorflow_datasets
        validation_fraction=0.2,  # the seed holds out 20% of train for validation
        augment=False,  # the seed CIFAR augmentation: random crop (pad 4) + flip
        model="cnn",
        model_kwargs={},  # fields of the model, e.g. hidden_sizes, dropout_rate, kernel_init
        loss="cross_entropy",  # the objective: cross_entropy, mse, binary_cross_entropy
        label_smoothing=0.0,  # cross_entropy only: the share of each label spread over classes
        l1=0.0,  # L1 penalty on kernels
        l2=0.0,  # L2 penalty on kernels
        optimizer="adam",
        learning_rate=1e-3,
        momentum=0.9,  # for momentum / nesterov / rmsprop
        weight_decay=0.0,  # decoupled for adamw, an L2 gradient term otherwise
        clip_norm=placeholder(float),  # global-norm gradient clipping; None: off
        schedule="constant",
        schedule_kwargs={},  # the schedule's options, e.g. step: step_epochs, gamma
        batch_size=128,  # the seed's batch size
        epochs=10,
        microbatches=1,  # > 1: gradient accumulation over this many slices of each batch
        steps_per_call=1,  # train steps per call of the compiled step (a lax.scan); same results
        compute_dtype=placeholder(str),  # None (float32) or bfloat16 / float16 (mixed precision)
        early_stopping_patience=0,  # stop after this many epochs without a better val loss; 0: off
        early_stopping_min_delta=0.0,  # a val loss counts as better only if lower by more than this
        seed=0,
        save_checkpoint=True,  # checkpoints in WORKDIR (orbax); the same command resumes
        checkpoint_every_steps=500,  # save every this many steps; 0: only at the end of each epoch
        max_to_keep=3,  # the latest checkpoints kept on disk (the best one is kept apart)
        skip_nonfinite=False,  # skip updates with a non-finite loss or gradient instead of stopping
        # transforms (see README): how the one pure step is run
        parallel="auto",  # auto (shard when there are several devices), none, pmap, shard
        fsdp=False,  # with shard: split params and optimizer state over the devices
        per_device_batch_size=0,  # > 0: the global batch is this x the device count
        ensemble=1,  # K > 1: train K members (seeds seed..seed+K-1) in one compiled step
        ensemble_learning_rate_scales=placeholder(tuple),  # one learning-rate multiplier per member
        ensemble_members="auto",  # vmap (side by side), map (one after another), auto (map on CPU
        # for models with convolutions, whose vmapped form XLA's CPU backend runs slowly)
        dp_clip_norm=placeholder(float),  # DP-SGD: clip each example's gradient to this L2 norm
        dp_noise_multiplier=0.0,  # DP-SGD: noise std as a multiple of dp_clip_norm
        config_file=placeholder(str),  # the config file this came from (absolute); None: named
    ))
