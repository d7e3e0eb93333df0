"""A run's checkpoints: orbax CheckpointManagers over WORKDIR/checkpoints (the latest
`max_to_keep`) and WORKDIR/best (the best on validation).

Each checkpoint holds two items: "state", the train state's arrays (params, optimizer
and model state, step, RNG, loss scale), and "progress", a JSON dict of everything else
the loop needs to go on exactly where it stopped (early-stopping state, the partial
sums of the epoch, the history, the config). Saves are asynchronous where orbax offers
it; orbax writes to a temporary folder and renames it when complete, so a process
killed in the middle of a save leaves the previous checkpoints as they were. A
checkpoint that cannot be read is reported in one line and the one before it is used.
Every process calls every method (orbax coordinates the writes).
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import orbax.checkpoint as ocp

from jnn.state import array_fields

CHECKPOINTS, BEST = "checkpoints", "best"


class CheckpointError(ValueError):
    """No usable checkpoint where one was expected (the message names the fix)."""


def _abstract(state):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, array_fields(state))


class RunCheckpoints:
    """Saves and restores a run's train state with its progress."""

    def __init__(self, workdir: str, *, max_to_keep: int, asynchronous: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINTS))
        options = lambda keep: ocp.CheckpointManagerOptions(  # noqa: E731
            max_to_keep=keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=asynchronous)
        items = ("state", "progress")
        self._latest = ocp.CheckpointManager(self.directory, options=options(max_to_keep),
                                             item_names=items)
        self._best = ocp.CheckpointManager(os.path.join(workdir, BEST), options=options(1),
                                           item_names=items)

    def save(self, step: int, state, progress: dict, *, best: bool = False) -> None:
        """Saves at `step` (replacing a checkpoint of the same step); `best` also keeps it
        as the best one. Returns before the write ends when saving asynchronously."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(array_fields(state)),
                                  progress=ocp.args.JsonSave(progress))
        managers = (self._latest, self._best) if best else (self._latest,)
        for manager in managers:
            if step in manager.all_steps():
                manager.wait_until_finished()
                manager.delete(step)
            manager.save(step, args=args, force=True)

    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def restore_latest(self, like, log: Callable[[str], None]):
        """(state, progress) of the newest readable checkpoint, None when there is none.

        `like` is a freshly built state of the same config: the restored arrays take its
        structure, shapes and shardings. A damaged checkpoint is reported through `log`
        and skipped; if none can be read, raises CheckpointError.
        """
        steps = sorted(self._latest.all_steps(), reverse=True)
        for step in steps:
            try:
                return self._restore(self._latest, step, like)
            except Exception as err:  # noqa: BLE001 - any failure to read means damaged
                reason = " ".join(str(err).split())[:200]
                log(f"checkpoint at step {step} in {self.directory} cannot be read ({reason}); "
                    "trying the one before it")
        if steps:
            raise CheckpointError(f"no checkpoint in {self.directory} can be read; start over "
                                  "with --restart (the old outputs are kept aside)")
        return None

    def restore_best(self, like):
        """(state, progress) of the best checkpoint, None when there is none."""
        step = self._best.latest_step()
        return None if step is None else self._restore(self._best, step, like)

    @staticmethod
    def _restore(manager, step: int, like):
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(like)), progress=ocp.args.JsonRestore()))
        return like.replace(**restored["state"]), dict(restored["progress"])

    def wait(self) -> None:
        """Blocks until every asynchronous save is on disk."""
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        self._latest.close()
        self._best.close()


def save_state(path: str, state) -> str:
    """Writes the arrays of a train state to `path` (one checkpoint, outside a run);
    returns the absolute path. orbax renames a complete write into place."""
    path = os.path.abspath(path)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, array_fields(state), force=True)
    checkpointer.wait_until_finished()
    return path


def restore_state(path: str, like):
    """The state saved at `path` by `save_state`, with the structure, shapes and shardings
    of `like`.

    Raises:
      FileNotFoundError: nothing is saved at `path`.
    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint at {path}; train with --workdir to write one")
    restored = ocp.StandardCheckpointer().restore(path, _abstract(like))
    return like.replace(**restored)
