"""Programs compiled after a run has warmed up: counted, and each reported with its cause.

The harness compiles its train and eval steps ahead of time, so they can never
recompile (a batch of another shape is an error). Anything else that compiles after the
first epoch (a jitted helper called with a new shape, dtype or static argument, or a
function redefined on every call) costs a compile each time it happens, and on an
accelerator it stalls the run. Once armed, `CompileWatch` reports each such compile,
with jax's own explanation of the tracing-cache miss (`jax_explain_cache_misses`): the
argument whose shape or dtype changed, or "never seen function".
"""

from __future__ import annotations

import logging
from typing import Callable

import jax

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_EXPLAIN_LOGGER = "jax._src.interpreters.partial_eval"  # where jax explains a cache miss
# With explanations on, jax also raises its persistent-cache notices to warnings; the
# watch reports what matters in one line, so those stay at their usual (silent) level.
_CACHE_LOGGERS = ("jax._src.compiler", "jax._src.compilation_cache")


def _not_a_cache_notice(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not ("PERSISTENT COMPILATION CACHE MISS" in message
                or "to persistent compilation cache" in message)


class _Explanations(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "CACHE MISS" in message:
            self.messages.append(message)


def _one_line(explanation: str) -> str:
    """The informative lines of jax's multi-line explanation, joined into one."""
    lines = [line.strip(" *").rstrip(":") for line in explanation.splitlines()[1:]
             if line.strip()]
    kept = [line for line in lines if not line.startswith(("all previously seen",
                                                           "https://"))]
    return "; ".join(kept) or explanation.splitlines()[0]


class CompileWatch:
    """Counts the programs XLA compiles in a `with` block. After `arm()`, each compile is
    counted in `after_warmup` and reported through `log` with its cause.

    jax explains tracing-cache misses only for functions defined outside jax and its
    libraries; a compile it cannot explain is reported by its function's name alone.
    """

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.compiles = 0
        self.after_warmup: list[str] = []  # "function: cause" per compile after arm()
        self.armed = False
        self._explanations = _Explanations()
        self._explain_before = False

    def __enter__(self) -> "CompileWatch":
        jax.monitoring.register_event_duration_secs_listener(self._on_compile)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._on_compile)
        if self.armed:
            self._listen(False)
            self.armed = False

    def arm(self) -> None:
        """From now on every compile is unexpected: report it."""
        if self.armed:
            return
        self.armed = True
        self._explain_before = jax.config.jax_explain_cache_misses
        self._listen(True)

    def _listen(self, on: bool) -> None:
        """Collects jax's explanations (and keeps them off the console, unless the user
        asked jax for them) while on; restores jax's logging as it was when off."""
        explain = logging.getLogger(_EXPLAIN_LOGGER)
        if on:
            explain.addHandler(self._explanations)
        else:
            explain.removeHandler(self._explanations)
        if self._explain_before:
            return
        jax.config.update("jax_explain_cache_misses", on)
        explain.propagate = not on
        for name in _CACHE_LOGGERS:
            (logging.getLogger(name).addFilter if on else
             logging.getLogger(name).removeFilter)(_not_a_cache_notice)

    def _on_compile(self, event: str, duration: float, *, fun_name: str | None = None,
                    **_) -> None:
        if event != _COMPILE_EVENT:
            return
        self.compiles += 1
        if not self.armed:
            return
        name = fun_name or "a program"
        messages = self._explanations.messages
        cause = _one_line(messages[-1]) if messages else (
            "jax explains only functions defined outside its own code: likely a jax.numpy "
            "operation run outside jit on a new shape or dtype")
        messages.clear()
        self.after_warmup.append(f"{name}: {cause}")
        self.log(f"warning: {name} compiled after the first epoch ({cause}); each "
                 "such compile stalls the run: give it the same shapes, dtypes and static "
                 "arguments every time, or define it once outside the loop")
