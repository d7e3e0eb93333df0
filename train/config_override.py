"""`--set FIELD=VALUE`: command-line overrides, parsed by the kind of the field they set.

    apply_overrides(config, ["model=mlp", "model_kwargs.hidden_sizes=64,32",
                             "model_kwargs.batch_norm=false", "clip_norm=none"])

VALUE is read as what the field holds (train/config_fields.py): `false` is the boolean
False for a boolean field, `64,32` the tuple (64, 32) for a tuple of integers, `none`
clears an optional field, `{}` (or a dict literal) replaces a group. A field the config
cannot have, or a VALUE of the wrong kind, is refused in one line that names the fix.
"""

from __future__ import annotations

from train import config_fields
from train.config_fields import GROUPS, format_value, group_fields, is_group


def _field_path(assignment: str) -> tuple[str, str]:
    if "=" not in assignment:
        raise ValueError(f"--set {assignment}: expected FIELD=VALUE, e.g. --set epochs=5")
    field, text = assignment.split("=", 1)
    return field.strip(), text


def apply_override(config, assignment: str) -> None:
    """Applies one `FIELD=VALUE` to `config` in place (FIELD may be dotted:
    `model_kwargs.dropout_rate=0.2`).

    A group field (model_kwargs, schedule_kwargs) is typed by the model or schedule
    `config` names when it is applied: set `model` or `schedule` first (as
    `apply_overrides` does).

    Raises:
      ValueError: not FIELD=VALUE, an unknown field, or a VALUE of the wrong kind.
    """
    field, text = _field_path(assignment)
    top = config_fields.top_level_fields()
    name, _, leaf = field.partition(".")
    if name not in top:
        raise ValueError(f"--set {assignment}: " + config_fields.unknown_field_message(
            None, name, top, value=_guess(text)))
    if not leaf:
        kind = top[name].kind
        if kind.base is dict and not text.strip().startswith("{"):
            raise ValueError(f"--set {assignment}: {name} is a group; set one of its fields as "
                             f"--set {name}.NAME=VALUE, or replace it whole with --set {name}={{}}")
        _set(config, name, _parse(kind, text, field, top[name].default))
        return
    if name not in GROUPS or "." in leaf:
        raise ValueError(f"--set {assignment}: {field.rsplit('.', 1)[0]} is not a config group; "
                         f"the groups are {', '.join(GROUPS)} (python -m train --show prints "
                         "the config)")
    fields, owner = group_fields(config, name)
    if leaf not in fields:
        raise ValueError(f"--set {assignment}: " + config_fields.unknown_field_message(
            name, leaf, fields, owner, value=_guess(text)))
    if not is_group(config.get(name)):
        _set(config, name, {})
    _set(config[name], leaf, _parse(fields[leaf].kind, text, field, fields[leaf].default))


def apply_overrides(config, assignments) -> None:
    """Applies `FIELD=VALUE` assignments in order, those of top-level fields first, so
    that `--set model_kwargs.batch_norm=true --set model=cnn` types batch_norm by the
    cnn model whatever the order on the command line."""
    assignments = list(assignments)
    nested = [a for a in assignments if "." in _field_path(a)[0]]
    for assignment in [a for a in assignments if a not in nested] + nested:
        apply_override(config, assignment)


def _parse(kind, text: str, field: str, default):
    try:
        return kind.parse(text)
    except ValueError as err:
        example = default if default is not None else kind.example()
        raise ValueError(f"--set {field}={text}: {field} expects {err}, e.g. "
                         f"--set {field}={format_value(example)}") from None


def _guess(text: str):
    """The value `text` most likely means, to suggest it under the right name."""
    return config_fields.Kind(None).parse(text)


def _set(node, name: str, value) -> None:
    # ConfigDict keeps each field's first type; an override replaces the value whole
    # (train/config_checks.py checks its kind against the field's, not the old value's).
    if hasattr(node, "ignore_type"):
        with node.ignore_type():
            node[name] = value
    else:
        node[name] = value
