"""A run's checkpoints: one orbax CheckpointManager over WORKDIR/checkpoints that keeps
the latest `max_to_keep` checkpoints and, besides them, the best on validation.

Each checkpoint holds two items: "state", the train state's arrays (params, optimizer
and model state, step, RNG, loss scale), and "progress", a JSON dict of everything else
the loop needs to go on exactly where it stopped (early-stopping state, the partial
sums of the epoch, the history, the config). A checkpoint saved as the best carries the
metric {"best_step": step}; orbax's preservation policy keeps the newest of those (the
latest improvement) however old it is. Saves are asynchronous where orbax offers it;
orbax writes to a temporary folder and renames it when complete, so a process killed
in the middle of a save leaves the previous checkpoints as they were. A checkpoint that
cannot be read is reported in one line and the one before it is used. Every process
calls every method (orbax coordinates the writes).
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import orbax.checkpoint as ocp

from jnn.state import array_fields

CHECKPOINTS = "checkpoints"


class CheckpointError(ValueError):
    """No usable checkpoint where one was expected (the message names the fix)."""


def _abstract(state):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, array_fields(state))


class RunCheckpoints:
    """Saves and restores a run's train state with its progress."""

    def __init__(self, workdir: str, *, max_to_keep: int, asynchronous: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINTS))
        policies = ocp.checkpoint_managers
        keep = policies.AnyPreservationPolicy([
            policies.LatestN(n=max_to_keep),
            policies.BestN(get_metric_fn=lambda metrics: metrics["best_step"], n=1,
                           keep_checkpoints_without_metrics=False)])
        options = ocp.CheckpointManagerOptions(
            create=True, cleanup_tmp_directories=True, preservation_policy=keep,
            enable_async_checkpointing=asynchronous)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "progress"))

    def save(self, step: int, state, progress: dict, *, best: bool = False) -> None:
        """Saves at `step` (replacing a checkpoint of the same step); `best` keeps it as
        the best one too. Returns before the write ends when saving asynchronously."""
        if step in self._manager.all_steps():
            self._manager.wait_until_finished()
            self._manager.delete(step)
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(array_fields(state)),
            progress=ocp.args.JsonSave(progress)),
            metrics={"best_step": step} if best else None, force=True)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore_latest(self, like, log: Callable[[str], None]):
        """(state, progress) of the newest readable checkpoint, None when there is none.

        `like` is a freshly built state of the same config: the restored arrays take its
        structure, shapes and shardings. A damaged checkpoint is reported through `log`
        and skipped; if none can be read, raises CheckpointError.
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        for step in steps:
            try:
                return self._restore(step, like)
            except Exception as err:  # noqa: BLE001 - any failure to read means damaged
                reason = " ".join(str(err).split())[:200]
                log(f"checkpoint at step {step} in {self.directory} cannot be read ({reason}); "
                    "trying the one before it")
        if steps:
            raise CheckpointError(f"no checkpoint in {self.directory} can be read; start over "
                                  "with --restart (the old outputs are kept aside)")
        return None

    def restore(self, step: int, like):
        """(state, progress) saved at `step` (e.g. the best one, whose step the progress
        records as progress["best"]["step"])."""
        if step not in self._manager.all_steps():
            raise CheckpointError(f"no checkpoint of step {step} in {self.directory}; train "
                                  "again with --restart")
        return self._restore(step, like)

    def _restore(self, step: int, like):
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(like)), progress=ocp.args.JsonRestore()))
        return like.replace(**restored["state"]), dict(restored["progress"])

    def wait(self) -> None:
        """Blocks until every asynchronous save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the saves under way and releases the manager (twice is harmless)."""
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None


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
