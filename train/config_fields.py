"""What each config field holds, at every level: its kind (the type of its values) and its
default.

A config has three levels of fields:
- the top level: the fields of train/configs/base.py, each typed by its default (or, for
  a None default, by its `placeholder` type);
- `model_kwargs`: the fields of the chosen model, typed by the model dataclass's
  annotations (or defaults); `num_outputs` and `axis_name` are set by the harness;
- `schedule_kwargs`: the options of the chosen schedule (`SCHEDULE_OPTIONS`), typed by
  `jnn.make_schedule`'s signature.

`--set` parses text by these kinds (train/config_override.py) and `validate` tests
values against them (train/config_checks.py), so a value means the same wherever it
was written.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import numbers
import typing
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

import jnn
from train.configs.base import base_config

GROUPS = ("model_kwargs", "schedule_kwargs")  # the top-level fields that hold fields
HARNESS_MODEL_FIELDS = ("num_outputs", "axis_name")  # set from the dataset and the transform

# The options of jnn.make_schedule that each schedule reads (the others it ignores, so
# giving one to the wrong schedule is a mistake the checks refuse).
SCHEDULE_OPTIONS = {
    "constant": (),
    "step": ("step_epochs", "gamma"),
    "cosine": ("final_fraction",),
    "warmup_cosine": ("warmup_epochs", "final_fraction"),
}

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          None: "any value"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings", None: "values"}
_EXAMPLES = {bool: True, int: 1, float: 0.5, str: "NAME", None: "VALUE"}


@dataclasses.dataclass(frozen=True)
class Kind:
    """The values a field takes: one `base` type (bool, int, float or str; None for any
    value; dict for a group of fields), a tuple of them when `sequence`, and also None
    when `optional`."""

    base: type | None
    sequence: bool = False
    optional: bool = False

    def describe(self) -> str:
        if self.base is dict:
            text = "a group of fields"
        elif self.sequence:
            text = f"{_PLURALS[self.base]} separated by commas"
        else:
            text = _NAMES[self.base]
        return text + (" or none" if self.optional else "")

    def accepts(self, value) -> bool:
        if value is None:
            return self.optional or (self.base is None and not self.sequence)
        if self.sequence:
            element = Kind(self.base)
            return isinstance(value, (tuple, list)) and all(element.accepts(v) for v in value)
        if self.base is bool:
            return isinstance(value, (bool, np.bool_))
        if isinstance(value, (bool, np.bool_)):
            return self.base is None
        if self.base is int:
            return isinstance(value, numbers.Integral)
        if self.base is float:
            return isinstance(value, numbers.Real)
        if self.base is str:
            return isinstance(value, str)
        if self.base is dict:
            return is_group(value)
        return True

    def parse(self, text: str):
        """The value `text` stands for; raises ValueError (with `describe()`) if none."""
        stripped = text.strip()
        if self.optional and stripped.lower() in ("none", "null"):
            return None
        try:
            if self.sequence:
                if stripped[:1] in "([" and stripped[-1:] in ")]":
                    stripped = stripped[1:-1]
                element = Kind(self.base)
                return tuple(element.parse(i) for i in stripped.split(",") if i.strip())
            return _PARSERS[self.base](stripped)
        except (ValueError, SyntaxError):
            raise ValueError(self.describe()) from None

    def example(self):
        """A value of this kind, to show in a message."""
        if self.sequence:
            return (64, 32) if self.base is int else (_EXAMPLES[self.base],) * 2
        return _EXAMPLES.get(self.base, "VALUE")


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _parse_any(text: str):
    if text.lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_group(text: str) -> dict:
    value = ast.literal_eval(text)
    if not isinstance(value, dict):
        raise ValueError(text)
    return value


_PARSERS = {bool: _parse_bool, int: int, float: float, str: str, None: _parse_any,
            dict: _parse_group}


@dataclasses.dataclass(frozen=True)
class Field:
    """One field: its kind, its default, and whether it must be given (no default)."""

    kind: Kind
    default: Any = None
    required: bool = False


def is_group(value) -> bool:
    """Whether `value` holds fields (a ConfigDict or a dict)."""
    return isinstance(value, (ml_collections.ConfigDict, dict))


def format_value(value) -> str:
    """`value` as it is written after `--set FIELD=`."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    if is_group(value):
        return "{}" if not len(value) else repr(dict(value))
    return str(value)


def kind_of(annotation, default=None) -> Kind:
    """The kind of a dataclass field or function parameter from its annotation, falling
    back on its default's type (for Any, or an annotation that cannot be resolved)."""
    optional = default is None
    if isinstance(annotation, str):  # an unresolved annotation: the plain names only
        annotation = {"bool": bool, "int": int, "float": float, "str": str}.get(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        rest = [a for a in args if a is not type(None)]
        optional = optional or len(rest) < len(args)
        if len(rest) != 1:
            return Kind(None, optional=True)
        annotation = rest[0]
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in (bool, int, float, str):
        return Kind(annotation, optional=optional)
    if annotation in (tuple, list) or origin in (tuple, list, Sequence):
        element = args[0] if args and args[0] in (bool, int, float, str) else None
        return Kind(element, sequence=True, optional=optional)
    for base in (bool, int, float, str):
        if type(default) is base:
            return Kind(base, optional=optional)
    if isinstance(default, tuple):
        types = {type(v) for v in default}
        element = types.pop() if len(types) == 1 else None
        return Kind(element if element in (bool, int, float, str) else None, sequence=True)
    return Kind(None)


# ------------------------------------------------------------------------ levels
def top_level_fields() -> dict[str, Field]:
    """The fields of train/configs/base.py by name."""
    base = base_config()
    fields = {}
    for name in base.keys():
        default = base[name]
        if is_group(default):
            kind = Kind(dict)
        elif default is None:  # a placeholder: its declared type; a tuple holds numbers
            declared = base.get_type(name)
            kind = Kind(float, sequence=True, optional=True) if declared is tuple else \
                Kind(declared, optional=True)
        else:
            kind = kind_of(None, default)
        fields[name] = Field(kind, default)
    return fields


def _model_class(model: str) -> type:
    jnn.models.fields(model)  # raises the one-line error for an unknown name
    return jnn.models._REGISTRY[model]  # the class: its annotations and defaults


def model_fields(model: str) -> dict[str, Field]:
    """The fields of the model registered as `model` that a config sets (all but
    `HARNESS_MODEL_FIELDS`)."""
    cls = _model_class(model)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that names something not importable here
        hints = {}
    fields = {}
    for f in dataclasses.fields(cls):
        if f.name in ("parent", "name") + HARNESS_MODEL_FIELDS:
            continue
        if f.default is not dataclasses.MISSING:
            default, required = f.default, False
        elif f.default_factory is not dataclasses.MISSING:
            default, required = f.default_factory(), False
        else:
            default, required = None, True
        # a required field takes None only where its annotation says so
        kind = kind_of(hints.get(f.name, f.type), object() if required else default)
        fields[f.name] = Field(kind, default, required)
    return fields


def schedule_fields(schedule: str) -> dict[str, Field]:
    """The options of `jnn.make_schedule` that `schedule` reads."""
    parameters = inspect.signature(jnn.make_schedule).parameters
    hints = typing.get_type_hints(jnn.make_schedule)
    return {name: Field(kind_of(hints[name], parameters[name].default),
                        parameters[name].default)
            for name in SCHEDULE_OPTIONS[schedule]}


def group_fields(config, group: str) -> tuple[dict[str, Field], str]:
    """The fields of `group` ("model_kwargs" or "schedule_kwargs") for the model or
    schedule `config` names, and that owner in words ("model 'cnn'")."""
    if group == "model_kwargs":
        return model_fields(config["model"]), f"model {config['model']!r}"
    if config["schedule"] not in SCHEDULE_OPTIONS:
        raise ValueError(f"unknown schedule {config['schedule']!r}; choose one of "
                         f"{', '.join(SCHEDULE_OPTIONS)} (--set schedule=NAME)")
    return schedule_fields(config["schedule"]), f"schedule {config['schedule']!r}"


def _owners_of(group: str, name: str) -> list[str]:
    """The other models or schedules that have the field `name`."""
    if group == "model_kwargs":
        return [m for m in jnn.models.names() if name in model_fields(m)]
    return [s for s, options in SCHEDULE_OPTIONS.items() if name in options]


def unknown_field_message(group: str | None, name: str, fields: dict[str, Field],
                          owner: str = "", value=None) -> str:
    """One line for a field `name` that `group` (None: the top level) does not have,
    naming the likely fix: the closest field, another model or schedule that has it, or
    clearing the group."""
    known = sorted(fields)
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    example = None
    if match:
        field = fields[match[0]]
        example = value if value is not None and field.kind.accepts(value) else \
            field.default if field.default is not None else field.kind.example()
    if group is None:
        fix = (f"did you mean {match[0]}? (--set {match[0]}={format_value(example)}); "
               if match else "")
        return (f"unknown field {name!r}; {fix}python -m train --show prints every field "
                "with its value")
    listing = f"its fields are {', '.join(known)}" if known else f"{owner} takes none"
    kind = "model" if group == "model_kwargs" else "schedule"
    others = _owners_of(group, name)
    if group == "model_kwargs" and name in HARNESS_MODEL_FIELDS:
        fix = "the harness sets it from the dataset and the parallel mode: remove it"
    elif others:
        fix = (f"{name} is a field of {kind} {', '.join(others)}: --set {kind}={others[0]}, "
               f"or clear the group with --set {group}={{}}")
    elif match:
        fix = f"--set {group}.{match[0]}={format_value(example)}"
    else:
        fix = f"remove it, or clear the group with --set {group}={{}}"
    return f"{group} has no field {name!r} for {owner}; {listing} ({fix})"
