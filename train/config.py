"""Harness configs: plain nested dicts, named configs in train/configs/, `--set` overrides.

A config is a dict whose values are numbers, strings, booleans, None, tuples, or nested
dicts (groups such as `model_kwargs`). `apply_override(config, "a.b=VALUE")` parses
VALUE by the type of the field it replaces, so a typo fails at once with a one-line
error instead of deep inside training.
"""

from __future__ import annotations

import ast
import copy
import importlib
import pkgutil

import jnn

REQUIRED_FIELDS = ("dataset", "model", "optimizer", "learning_rate", "batch_size", "epochs", "seed")


def config_names() -> list[str]:
    """The named configs in train/configs/ (every module there except `base`)."""
    import train.configs as package

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name != "base")


def config_doc(name: str) -> str:
    """The first line of a named config's docstring."""
    module = importlib.import_module(f"train.configs.{name}")
    return (module.__doc__ or "").strip().splitlines()[0]


def get_config(name: str) -> dict:
    """A fresh copy of the named config.

    Raises:
      ValueError: unknown name; the message lists the known ones.
    """
    if name not in config_names():
        raise ValueError(f"unknown config {name!r}; choose one of {', '.join(config_names())} "
                         "(python -m train --list describes them)")
    return copy.deepcopy(importlib.import_module(f"train.configs.{name}").get_config())


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _parse_literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_like(old, text: str, field: str):
    """Parses `text` as a value of the same type as `old`."""
    kinds = {bool: ("true or false", _parse_bool), int: ("an integer", int),
             float: ("a number", float)}
    for kind, (description, parse) in kinds.items():
        if type(old) is kind:
            try:
                return parse(text)
            except ValueError:
                raise ValueError(f"--set {field}={text}: {field} expects {description} "
                                 f"(it is {old!r} now), e.g. --set {field}={old!r}") from None
    if isinstance(old, (tuple, list)):
        items = [i for i in text.split(",") if i.strip()]
        return tuple(_parse_literal(i.strip()) for i in items)
    if isinstance(old, str):
        return text
    if isinstance(old, dict):
        raise ValueError(f"--set {field}=...: {field} is a group; set one of its fields as "
                         f"--set {field}.NAME=VALUE")
    return _parse_literal(text)  # None: take the literal's own type


def apply_override(config: dict, assignment: str) -> None:
    """Applies one `FIELD=VALUE` (FIELD may be dotted: `model_kwargs.dropout_rate=0.2`).

    New fields may be added inside groups (dict fields such as model_kwargs), not at
    the top level, where a new name is almost always a typo.
    """
    if "=" not in assignment:
        raise ValueError(f"--set {assignment}: expected FIELD=VALUE, e.g. --set epochs=5")
    field, text = assignment.split("=", 1)
    field = field.strip()
    *parents, leaf = field.split(".")
    node = config
    for i, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            raise ValueError(f"--set {assignment}: {'.'.join(parents[:i + 1])} is not a config "
                             "group; python -m train --show prints the config")
        node = node[part]
    if leaf not in node:
        if node is config:
            raise ValueError(f"--set {assignment}: unknown field {leaf!r}; fields are "
                             f"{', '.join(sorted(config))}")
        node[leaf] = _parse_literal(text)
        return
    node[leaf] = _parse_like(node[leaf], text, field)


def check_batch_divides(batch_size: int, num_devices: int) -> None:
    """Raises a one-line ValueError, naming the flags to change, unless the global batch
    splits evenly over the devices (checked before jnn sees the batch)."""
    if batch_size % num_devices:
        sizes = " or ".join(map(str, jnn.parallel.nearest_divisible_sizes(batch_size,
                                                                          num_devices)))
        raise ValueError(f"global batch size {batch_size} does not divide over {num_devices} "
                         f"devices; use --set batch_size={sizes} (or --per-device-batch-size)")


def _check_positive_int(config: dict, field: str) -> None:
    value = config[field]
    if type(value) is not int or value <= 0:
        raise ValueError(f"{field} must be a positive integer, got {value!r}")


def validate(config: dict) -> None:
    """Checks names and ranges before any data is read; raises a one-line ValueError."""
    missing = [f for f in REQUIRED_FIELDS if f not in config]
    if missing:
        raise ValueError(f"config lacks the fields {', '.join(missing)}")
    checks = (
        ("dataset", jnn.data.dataset_names()), ("model", jnn.models.names()),
        ("optimizer", jnn.optimizer_names()), ("schedule", jnn.schedule_names()),
        ("loss", jnn.objectives.names()),
    )
    for field, known in checks:
        if config.get(field) not in known:
            raise ValueError(f"unknown {field} {config.get(field)!r}; choose one of "
                             f"{', '.join(known)} (--set {field}=NAME)")
    if config["compute_dtype"] not in (None, "float32", "bfloat16", "float16"):
        raise ValueError(f"compute_dtype must be float32, bfloat16 or float16, got "
                         f"{config['compute_dtype']!r} (--set compute_dtype=bfloat16)")
    for field in ("batch_size", "epochs", "microbatches"):
        _check_positive_int(config, field)
    if type(config["seed"]) is not int:
        raise ValueError(f"seed must be an integer, got {config['seed']!r}")
    if not config["learning_rate"] > 0:
        raise ValueError(f"learning_rate must be > 0, got {config['learning_rate']}")
    if not 0.0 <= config.get("validation_fraction", 0.0) < 1.0:
        raise ValueError("validation_fraction must be in [0, 1), got "
                         f"{config['validation_fraction']}")
    if config["parallel"] not in ("auto", "none", "pmap", "shard"):
        raise ValueError(f"unknown parallel mode {config['parallel']!r}; choose auto, none, pmap "
                         "or shard (--parallel MODE)")
    if type(config["ensemble"]) is not int or config["ensemble"] < 1:
        raise ValueError(f"ensemble must be an integer >= 1, got {config['ensemble']!r}")
    if config["ensemble"] > 1 and config["parallel"] == "pmap":
        raise ValueError("an ensemble runs under jit or sharded jit, not pmap; use --parallel "
                         "shard or --parallel none with --ensemble")
    if config["fsdp"] and config["parallel"] in ("none", "pmap"):
        raise ValueError("--fsdp shards parameters under sharded jit; use --parallel shard")
    if type(config["per_device_batch_size"]) is not int or config["per_device_batch_size"] < 0:
        raise ValueError("per_device_batch_size must be an integer >= 0, got "
                         f"{config['per_device_batch_size']!r}")
    scales = config["ensemble_learning_rate_scales"]
    if scales is not None and len(scales) != config["ensemble"]:
        raise ValueError(f"ensemble_learning_rate_scales has {len(scales)} values for "
                         f"{config['ensemble']} members; give one per member")
    task = jnn.data.SPECS[config["dataset"]].task
    fitting = {"regression": "mse", "binary": "binary_cross_entropy"}.get(task, "cross_entropy")
    if config["loss"] != fitting:
        raise ValueError(f"dataset {config['dataset']!r} is a {task} task but loss is "
                         f"{config['loss']!r}; use --set loss={fitting}")
