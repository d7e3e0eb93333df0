"""Checks that refuse a config's mistakes in one line that names the fix.

`validate(config)` runs before any data is read: unknown fields at every level, values
of the wrong kind, names that nothing registers, values out of range, and options that
contradict each other. `check_dataset(config, dataset)` runs once the data is loaded:
splits too small for the batch, labels the model cannot predict. `check_batch_divides`
runs once the device count is known.
"""

from __future__ import annotations

import dataclasses
import math

import jnn
from train.config_fields import (GROUPS, Field, format_value, group_fields, is_group,
                                 top_level_fields, unknown_field_message)


@dataclasses.dataclass(frozen=True)
class Range:
    """Numbers from `low` to `high` (None: unbounded), each end open or closed;
    `example` is a value inside, to name in the fix."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    example: float | None = None

    def contains(self, value) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or self.low_open and value == self.low):
            return False
        return self.high is None or not (value > self.high or self.high_open and
                                         value == self.high)

    def describe(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {format_value(self.low)}"
        return (f"in {'(' if self.low_open else '['}{format_value(self.low)}, "
                f"{format_value(self.high)}{')' if self.high_open else ']'}")


def _at_least(low, example=None) -> Range:
    return Range(low, example=low if example is None else example)


def _positive(example) -> Range:
    return Range(0, low_open=True, example=example)


_FRACTION = Range(0, 1, high_open=True, example=0.1)  # [0, 1)

RANGES = {  # top-level numbers (None passes where the field is optional)
    "validation_fraction": Range(0, 1, high_open=True, example=0.2),
    "label_smoothing": _FRACTION,
    "l1": _at_least(0), "l2": _at_least(0, 1e-4),
    "learning_rate": _positive(1e-3),
    "momentum": Range(0, 1, example=0.9),
    "weight_decay": _at_least(0, 1e-4),
    "clip_norm": _positive(1.0),
    "batch_size": _at_least(1, 32), "epochs": _at_least(1, 10), "microbatches": _at_least(1),
    "steps_per_call": _at_least(1, 8),
    "early_stopping_patience": _at_least(0, 5), "early_stopping_min_delta": _at_least(0),
    "seed": _at_least(0),
    "checkpoint_every_steps": _at_least(0, 500), "max_to_keep": _at_least(1, 3),
    "per_device_batch_size": _at_least(0, 32), "ensemble": _at_least(1, 4),
    "dp_clip_norm": _positive(1.0), "dp_noise_multiplier": _at_least(0, 1.0),
}
GROUP_RANGES = {  # fields of models and schedules, wherever they occur
    "model_kwargs": {"dropout_rate": _FRACTION, "hidden_sizes": _at_least(1, 64),
                     "features": _at_least(1, 32), "hidden": _at_least(1, 128),
                     "depth": _at_least(1, 8), "width": _at_least(1, 128)},
    "schedule_kwargs": {"step_epochs": _at_least(1, 7),
                        "gamma": Range(0, 1, low_open=True, example=0.7),
                        "warmup_epochs": _at_least(0, 1.0),
                        "final_fraction": Range(0, 1, example=0.0)},
}


def _choices() -> dict:
    """Fields that name something, with what they may name."""
    return {
        "dataset": jnn.data.dataset_names(), "model": jnn.models.names(),
        "optimizer": jnn.optimizer_names(), "schedule": jnn.schedule_names(),
        "loss": jnn.objectives.names(), "parallel": ["auto", "none", "pmap", "shard"],
        "compute_dtype": [None, "float32", "bfloat16", "float16"],
        "ensemble_members": list(jnn.ensemble.MEMBERS),
    }


GROUP_CHOICES = {"model_kwargs": {"activation": jnn.models.activation_names,
                                  "kernel_init": jnn.models.initializer_names}}


# --------------------------------------------------------------------- one field
def _check_kind(path: str, field: Field, value) -> None:
    if not field.kind.accepts(value):
        example = field.default if field.default is not None else field.kind.example()
        raise ValueError(f"{path} must be {field.kind.describe()}, got {value!r} "
                         f"(--set {path}={format_value(example)})")


def _check_range(path: str, span: Range | None, value) -> None:
    if span is None or value is None:
        return
    for item in value if isinstance(value, (tuple, list)) else (value,):
        if not span.contains(item):
            each = "each of " if isinstance(value, (tuple, list)) else ""
            raise ValueError(f"{each}{path} must be {span.describe()}, got {format_value(item)} "
                             f"(--set {path}={format_value(span.example)})")


def _check_choice(path: str, known, value) -> None:
    if value not in known:
        names = ", ".join(format_value(k) for k in known)
        raise ValueError(f"unknown {path} {value!r}; choose one of {names} "
                         f"(--set {path}={format_value(known[-1] if None in known else 'NAME')})")


# ------------------------------------------------------------------------ levels
def _check_top_level(config, fields: dict[str, Field]) -> None:
    for name in config.keys():
        if name not in fields:
            raise ValueError(unknown_field_message(None, name, fields, value=config[name]))
    missing = [name for name in fields if name not in config]
    if missing:
        raise ValueError(f"config lacks the fields {', '.join(missing)}; build it from "
                         "train.configs.base.base_config(), which has them all")
    for name, field in fields.items():
        _check_kind(name, field, config[name])
    for name, known in _choices().items():
        _check_choice(name, known, config[name])
    for name, span in RANGES.items():
        _check_range(name, span, config[name])


def _check_group(config, group: str) -> None:
    fields, owner = group_fields(config, group)
    values = config[group]
    for name in values.keys():
        if name not in fields:
            raise ValueError(unknown_field_message(group, name, fields, owner, values[name]))
    for name, field in fields.items():
        path = f"{group}.{name}"
        if name not in values:
            if field.required:
                raise ValueError(f"{owner} needs {path} ({field.kind.describe()}): "
                                 f"--set {path}={format_value(field.kind.example())}")
            continue
        _check_kind(path, field, values[name])
        _check_range(path, GROUP_RANGES.get(group, {}).get(name), values[name])
        if name in GROUP_CHOICES.get(group, {}):
            _check_choice(path, GROUP_CHOICES[group][name](), values[name])


# --------------------------------------------------------------- combined fields
def _check_combinations(config) -> None:
    task = jnn.data.SPECS[config["dataset"]].task
    fitting = {"regression": "mse", "binary": "binary_cross_entropy"}.get(task, "cross_entropy")
    if config["loss"] != fitting:
        raise ValueError(f"dataset {config['dataset']!r} is a {task} task but loss is "
                         f"{config['loss']!r}; use --set loss={fitting}")
    if config["label_smoothing"] and config["loss"] != "cross_entropy":
        raise ValueError(f"label_smoothing applies to cross_entropy, not {config['loss']}; "
                         "use --set label_smoothing=0")
    if config["early_stopping_patience"] and not config["validation_fraction"]:
        raise ValueError("early stopping watches the validation loss, but validation_fraction "
                         "is 0; use --set validation_fraction=0.2 or --set "
                         "early_stopping_patience=0")
    batch, batch_field = ((config["per_device_batch_size"], "per_device_batch_size")
                          if config["per_device_batch_size"] else
                          (config["batch_size"], "batch_size"))
    k = config["microbatches"]
    if batch % k:
        divisors = [d for d in range(1, batch + 1) if batch % d == 0]
        near = sorted(divisors, key=lambda d: abs(d - k))[:2]
        raise ValueError(f"{batch_field} {batch} does not split into {k} microbatches; use "
                         f"--set microbatches={' or '.join(map(str, sorted(near)))}")
    if config["ensemble"] > 1 and config["parallel"] == "pmap":
        raise ValueError("an ensemble runs under jit or sharded jit, not pmap; use --parallel "
                         "shard or --parallel none with --ensemble")
    if config["fsdp"] and config["parallel"] in ("none", "pmap"):
        raise ValueError("--fsdp shards parameters under sharded jit; use --parallel shard")
    scales = config["ensemble_learning_rate_scales"]
    if scales is not None:
        if len(scales) != config["ensemble"]:
            raise ValueError(f"ensemble_learning_rate_scales has {len(scales)} values for "
                             f"{config['ensemble']} members; give one per member")
        _check_range("ensemble_learning_rate_scales", _positive(1.0), scales)
    _check_dp(config)


def _check_dp(config) -> None:
    if config["dp_clip_norm"] is None:
        if config["dp_noise_multiplier"]:
            raise ValueError("dp_noise_multiplier is scaled by dp_clip_norm, which is none "
                             "(DP-SGD off); use --set dp_clip_norm=1.0 to turn DP-SGD on, or "
                             "--set dp_noise_multiplier=0")
        return
    for field, plain in (("microbatches", 1), ("compute_dtype", None)):
        if config[field] != plain:
            raise ValueError(f"DP-SGD (dp_clip_norm) computes each example's gradient in "
                             f"float32 and ignores {field}; use --set {field}="
                             f"{format_value(plain)}")
    if config["parallel"] == "pmap":
        raise ValueError("DP-SGD (dp_clip_norm) has no pmap variant; use --parallel shard or "
                         "--parallel none")


def validate(config) -> None:
    """Checks every field of `config` (a ConfigDict or a dict) before any data is read.

    Raises:
      ValueError: one line naming the field and the fix, for an unknown field at any
        level (top level, model_kwargs against the model's fields, schedule_kwargs
        against the schedule's options), a value of the wrong kind, an unknown name, a
        value out of range, or fields that contradict each other.
    """
    if not is_group(config):
        raise ValueError(f"a config is a ConfigDict (or dict), got {type(config).__name__}")
    fields = top_level_fields()
    _check_top_level(config, fields)
    for group in GROUPS:
        _check_group(config, group)
    _check_combinations(config)


# ------------------------------------------------------------------ after loading
def _global_batch(config) -> tuple[int, str]:
    """The global batch size and the field that sets it."""
    if config["per_device_batch_size"]:
        from train.runner import global_batch_size  # the device count decides

        return global_batch_size(config), "per_device_batch_size"
    return config["batch_size"], "batch_size"


def check_dataset(config, dataset: jnn.data.Dataset) -> None:
    """Checks the loaded `dataset` against `config`.

    Raises:
      ValueError: one line naming the fix, for an empty train or test split, a
        validation fraction that leaves fewer training examples than one batch, a batch
        larger than the training split, labels outside [0, num_classes), or augmentation
        of inputs that are not images.
    """
    name = config["dataset"]
    n_train, n_val = len(dataset.train["y"]), len(dataset.validation["y"])
    n_test = len(dataset.test["y"])
    if n_train + n_val == 0:
        raise ValueError(f"dataset {name!r} has an empty train split; give it training "
                         "examples")
    if n_test == 0:
        raise ValueError(f"dataset {name!r} has an empty test split; give it test examples")
    batch, field = _global_batch(config)
    if batch > n_train:
        fraction = config["validation_fraction"]
        total = n_train + n_val
        if n_val and batch <= total:
            most = math.floor(100 * (total - batch) / total) / 100
            fix = f"{most} or less" if most > 0 else "0"
            left = "none" if n_train == 0 else f"only {n_train}"
            raise ValueError(f"validation_fraction {fraction} leaves {left} of the {total} "
                             f"training examples to train on, fewer than one batch of {batch}; "
                             f"use --set validation_fraction={fix}, or a smaller {field}")
        held = f" (validation_fraction {fraction} holds out {n_val})" if n_val else ""
        if field == "per_device_batch_size":
            devices = batch // config["per_device_batch_size"]
            raise ValueError(f"the global batch of {batch} ({devices} devices x "
                             f"per_device_batch_size {config['per_device_batch_size']}) is "
                             f"larger than the {n_train} training examples{held}; use --set "
                             f"per_device_batch_size={max(1, n_train // devices)} or less")
        raise ValueError(f"batch_size {batch} is larger than the {n_train} training "
                         f"examples{held}; use --set batch_size={n_train} or less")
    if dataset.spec.task == "classification":
        for split in ("train", "validation", "test"):
            try:
                jnn.data.check_labels(getattr(dataset, split)["y"], dataset.num_outputs,
                                      f"{name}/{split}")
            except ValueError as err:
                raise ValueError(f"{err}; remap the labels or give the dataset "
                                 "num_classes to match") from None
    if config["augment"] and len(dataset.input_shape) != 3:
        raise ValueError(f"augment (random crop and flip) needs images (H, W, C), but "
                         f"dataset {name!r} has inputs of shape {dataset.input_shape}; use "
                         "--set augment=false")


def check_batch_divides(batch_size: int, num_devices: int) -> None:
    """Raises a one-line ValueError, naming the flags to change, unless the global batch
    splits evenly over the devices (checked before jnn sees the batch)."""
    if batch_size % num_devices:
        sizes = " or ".join(map(str, jnn.parallel.nearest_divisible_sizes(batch_size,
                                                                          num_devices)))
        raise ValueError(f"global batch size {batch_size} does not divide over {num_devices} "
                         f"devices; use --set batch_size={sizes} (or --per-device-batch-size)")
