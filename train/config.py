"""Harness configs: ml_collections ConfigDicts, from a named config or from your own file.

    config = load_config("digits_cnn")             # train/configs/digits_cnn.py
    config = load_config("experiments/mine.py")    # any file defining get_config()
    apply_overrides(config, ["epochs=3", "model_kwargs.batch_norm=true"])  # --set
    validate(config)                               # before any data is read
    json.dumps(to_dict(config))                    # summary.json, --show
    config = from_dict(saved)                      # back from JSON (reloads config_file)

A config file is a Python file whose `get_config()` returns a ConfigDict built from
`train.configs.base.base_config()` (the big_vision / Flax convention; see
train/configs/examples/). It may register its own Linen model (`jnn.models.register`)
and its own arrays (`jnn.data.register_arrays`) and name them in `config.model` and
`config.dataset`. The config keeps the file's absolute path in `config_file`, so that
another process, or a resumed run, loads the same file and so the same registrations.

The kinds of fields are in train/config_fields.py, `--set` parsing in
train/config_override.py, the checks in train/config_checks.py; this module gathers
what callers use.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import pkgutil
import re
import sys
import traceback

import ml_collections
import numpy as np

from train.config_checks import check_batch_divides, check_dataset, validate
from train.config_override import apply_override, apply_overrides
from train.configs.base import base_config

__all__ = [
    "apply_override", "apply_overrides", "base_config", "check_batch_divides", "check_dataset",
    "config_doc", "config_names", "from_dict", "get_config", "is_config_file", "load_config",
    "to_dict", "validate",
]


# ----------------------------------------------------------------- named configs
def config_names() -> list[str]:
    """The named configs in train/configs/ (every module there except `base`)."""
    import train.configs as package

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                  if m.name != "base" and not m.ispkg)


def config_doc(name: str) -> str:
    """The first line of a named config's docstring: its one-line summary."""
    module = importlib.import_module(f"train.configs.{name}")
    return (module.__doc__ or "").strip().splitlines()[0]


def get_config(name: str) -> ml_collections.ConfigDict:
    """A fresh copy of the named config.

    Raises:
      ValueError: unknown name; the message lists the known ones.
    """
    if name not in config_names():
        raise ValueError(f"unknown config {name!r}; choose one of {', '.join(config_names())} "
                         "(python -m train --list describes them), or give the path of a .py "
                         "file defining get_config()")
    return copy.deepcopy(importlib.import_module(f"train.configs.{name}").get_config())


# ------------------------------------------------------------------ config files
def is_config_file(name_or_path: str) -> bool:
    """Whether --config names a file (a path, or a name ending in .py) or a named config."""
    return name_or_path.endswith(".py") or "/" in name_or_path or os.sep in name_or_path


def _line_in(err: BaseException, path: str) -> str:
    """", line N" of the last place in `path` that `err` passed through."""
    if isinstance(err, SyntaxError) and err.filename == path and err.lineno:
        return f", line {err.lineno}"
    lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if f.filename == path]
    return f", line {lines[-1]}" if lines else ""


def _load_file(path: str) -> ml_collections.ConfigDict:
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} does not exist; pass a named config "
                                "(python -m train --list) or the path of a .py file defining "
                                "get_config()")
    # A module of its own in sys.modules: dataclasses (Linen modules) defined in the file
    # resolve their annotations through it.
    module_name = "train_config_file_" + re.sub(r"\W", "_", path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        if not callable(getattr(module, "get_config", None)):
            raise ValueError(f"config file {path}: defines no get_config(); define one that "
                             "returns train.configs.base.base_config() with your changes")
        config = module.get_config()
    except ValueError as err:
        if str(err).startswith(f"config file {path}"):
            raise
        raise ValueError(f"config file {path}{_line_in(err, path)}: {err}") from err
    except Exception as err:  # the file's own error: one line, --traceback for the rest
        raise ValueError(f"config file {path}{_line_in(err, path)}: {type(err).__name__}: "
                         f"{err} (--traceback shows where)") from err
    if isinstance(config, dict):
        config = ml_collections.ConfigDict(config)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"config file {path}: get_config() returned {type(config).__name__}; "
                         "return a ConfigDict, e.g. train.configs.base.base_config() with your "
                         "changes")
    with config.ignore_type():
        config["config_file"] = path
    return config


def load_config(name_or_path: str) -> ml_collections.ConfigDict:
    """The config `name_or_path` names: a named config (see `config_names`), or a .py file
    whose `get_config()` returns a ConfigDict. A file is run each time (so its model and
    dataset registrations happen in this process) and its path is kept in `config_file`.

    Raises:
      ValueError: an unknown name, or an error inside the file (one line with its line
        number; the original error is chained).
      FileNotFoundError: no file at the path.
    """
    if is_config_file(name_or_path):
        return _load_file(name_or_path)
    return get_config(name_or_path)


# ----------------------------------------------------------------- plain values
def _plain(value):
    if isinstance(value, (ml_collections.ConfigDict, dict)):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_dict(config) -> dict:
    """`config` as plain Python: nested dicts, tuples, numbers, strings, None (what
    `json.dump` writes; tuples become lists there)."""
    return _plain(config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config)


def _as_tuples(value):
    if isinstance(value, dict):
        return {k: _as_tuples(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(_as_tuples(v) for v in value)
    return value


def from_dict(values: dict) -> ml_collections.ConfigDict:
    """A config from plain values (`to_dict`'s, or JSON's with lists for tuples).

    Fields start from the base defaults, or from the file named in `config_file`, which
    is loaded first so that its model and dataset registrations exist in this process;
    `values` then replace them field by field. Call `validate` on the result.
    """
    path = values.get("config_file")
    config = load_config(path) if path else base_config()
    with config.ignore_type():
        for name, value in values.items():
            config[name] = _as_tuples(value)
    return config
