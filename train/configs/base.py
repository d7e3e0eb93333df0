"""Fields every config has, with their defaults and why."""


def base_config() -> dict:
    return dict(
        dataset="digits",
        data_dir=None,  # tfds data dir; None: $TFDS_DATA_DIR or ~/tensorflow_datasets
        validation_fraction=0.2,  # the seed holds out 20% of train for validation
        augment=False,  # the seed CIFAR augmentation: random crop (pad 4) + flip
        model="cnn",
        model_kwargs={},  # fields of the model, e.g. hidden_sizes, dropout_rate, kernel_init
        loss="cross_entropy",  # the objective: cross_entropy, mse, binary_cross_entropy
        label_smoothing=0.0,
        l1=0.0,  # L1 penalty on kernels
        l2=0.0,  # L2 penalty on kernels
        optimizer="adam",
        learning_rate=1e-3,
        momentum=0.9,  # for momentum / nesterov / rmsprop
        weight_decay=0.0,  # decoupled for adamw, an L2 gradient term otherwise
        clip_norm=None,  # global-norm gradient clipping; None: off
        schedule="constant",
        schedule_kwargs={},  # step: step_epochs, gamma; warmup_cosine: warmup_epochs
        batch_size=128,  # the seed's batch size
        epochs=10,
        microbatches=1,  # > 1: gradient accumulation over this many slices of each batch
        compute_dtype=None,  # None (float32) or bfloat16 / float16 (mixed precision)
        early_stopping_patience=0,  # stop after this many epochs without a better val loss; 0: off
        seed=0,
        save_checkpoint=True,  # the final state to WORKDIR/checkpoint (orbax)
        # transforms (see README): how the one pure step is run
        parallel="auto",  # auto (shard when there are several devices), none, pmap, shard
        fsdp=False,  # with shard: split params and optimizer state over the devices
        per_device_batch_size=0,  # > 0: the global batch is this x the device count
        ensemble=1,  # K > 1: train K members (seeds seed..seed+K-1) in one vmapped step
        ensemble_learning_rate_scales=None,  # one learning-rate multiplier per member
        dp_clip_norm=None,  # DP-SGD: clip each example's gradient to this L2 norm
        dp_noise_multiplier=0.0,  # DP-SGD: noise std as a multiple of dp_clip_norm
    )
