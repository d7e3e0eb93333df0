"""Optimizers and learning-rate schedules by name, all from optax."""

from __future__ import annotations

import optax

_SCHEDULES = ("constant", "step", "cosine", "warmup_cosine")
_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")


def schedule_names() -> list[str]:
    """The names `make_schedule` accepts."""
    return list(_SCHEDULES)


def optimizer_names() -> list[str]:
    """The names `make_optimizer` accepts."""
    return list(_OPTIMIZERS)


def make_schedule(name: str, learning_rate: float, *, steps_per_epoch: int, epochs: int,
                  step_epochs: int = 7, gamma: float = 0.7, warmup_epochs: float = 1.0,
                  final_fraction: float = 0.0) -> optax.Schedule:
    """A learning-rate schedule over `epochs * steps_per_epoch` steps.

    Args:
      name: "constant"; "step" (multiply by `gamma` every `step_epochs` epochs, as the
        seed's StepLR(step_size=7, gamma=0.7)); "cosine" (to `final_fraction` of the
        peak); "warmup_cosine" (linear warm-up over `warmup_epochs`, then cosine).
      learning_rate: the peak (initial) learning rate.
    """
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    total = max(1, steps_per_epoch * epochs)
    if name == "constant":
        return optax.constant_schedule(learning_rate)
    if name == "step":
        return optax.exponential_decay(learning_rate, transition_steps=step_epochs * steps_per_epoch,
                                       decay_rate=gamma, staircase=True)
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, decay_steps=total, alpha=final_fraction)
    if name == "warmup_cosine":
        warmup = min(total - 1, int(warmup_epochs * steps_per_epoch))
        return optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, warmup_steps=warmup, decay_steps=total,
            end_value=learning_rate * final_fraction)
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(_SCHEDULES)}")


def make_optimizer(name: str, learning_rate: float | optax.Schedule, *, momentum: float = 0.9,
                   weight_decay: float = 0.0, clip_norm: float | None = None,
                   b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformation:
    """An optax optimizer by name, optionally with global-norm clipping and weight decay.

    Args:
      name: one of `optimizer_names()`: sgd (plain), momentum (heavy ball), nesterov,
        adam, adamw (decoupled weight decay), rmsprop.
      learning_rate: a float or an optax schedule.
      weight_decay: for adamw its decoupled decay; for the others an L2 term added to
        the gradient before the update (optax.add_decayed_weights).
      clip_norm: clip gradients to this global norm first (None: no clipping).
    """
    if name == "sgd":
        opt = optax.sgd(learning_rate)
    elif name == "momentum":
        opt = optax.sgd(learning_rate, momentum=momentum)
    elif name == "nesterov":
        opt = optax.sgd(learning_rate, momentum=momentum, nesterov=True)
    elif name == "adam":
        opt = optax.adam(learning_rate, b1=b1, b2=b2)
    elif name == "adamw":
        opt = optax.adamw(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay)
    elif name == "rmsprop":
        opt = optax.rmsprop(learning_rate, momentum=momentum)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(_OPTIMIZERS)}")
    parts = []
    if clip_norm is not None:
        if clip_norm <= 0:
            raise ValueError(f"clip_norm must be > 0 (or None for no clipping), got {clip_norm}")
        parts.append(optax.clip_by_global_norm(clip_norm))
    if weight_decay and name != "adamw":
        parts.append(optax.add_decayed_weights(weight_decay))
    return optax.chain(*parts, opt) if parts else opt
