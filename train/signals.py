"""Stopping a run cleanly on SIGINT (Ctrl-C) and SIGTERM (a scheduler's preemption).

While a `StopRequests` is entered, the signals only set a flag; the loop asks
`requested(step)` after each call of the train step (one or several steps) and saves
before it stops. A second Ctrl-C raises KeyboardInterrupt at once (a save already under
way is atomic, so nothing is damaged). With several processes, the processes must stop
at the same step: whenever a call reaches or passes a multiple of `sync_every` steps
they share their flags (an all-gather), and all stop when any was signalled.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """Catches SIGINT and SIGTERM while entered; `requested(step)` says when to stop."""

    def __init__(self, sync_every: int = 10):
        self.sync_every = sync_every
        self.signum = 0
        self._previous = {}
        self._decided: tuple[int, bool] | None = None

    def _on_signal(self, signum, frame):
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = self.signum or signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False

    def requested(self, step: int, steps: int = 1) -> bool:
        """Whether to stop after `step`, reached by a call of `steps` train steps: at once
        with one process; with several, at the first call that reaches or passes a
        multiple of sync_every after any process was signalled (the same answer on every
        process, which must all call this after every call of the train step)."""
        if self._decided is not None and self._decided[0] == step:
            return self._decided[1]
        previous = step - steps
        if jax.process_count() == 1:
            decision = bool(self.signum)
        elif step // self.sync_every == previous // self.sync_every:  # no multiple reached
            decision = False
        else:
            from jax.experimental import multihost_utils

            signals = multihost_utils.process_allgather(np.int32(self.signum))
            self.signum = self.signum or int(np.max(signals))
            decision = bool(self.signum)
        self._decided = (step, decision)
        return decision

    def message(self, step: int, saved: bool) -> str:
        name = signal.Signals(self.signum).name if self.signum else "a signal"
        if saved:
            return (f"stopped by {name} at step {step}, saved; run the same command again to "
                    "resume from there")
        return (f"stopped by {name} at step {step}; nothing was saved (save_checkpoint is "
                "false), so running the command again starts over")
