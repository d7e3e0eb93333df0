"""Saving and restoring train states with orbax (multi-process aware: every process calls
`save_state` with its shards of the global arrays; orbax writes one checkpoint)."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from jnn.state import array_fields as _tree


def save_state(path: str, state) -> str:
    """Writes the arrays of a train state to `path` (a new or existing folder's child).

    orbax writes to a temporary folder and renames it when complete, so an interrupted
    save never leaves a half-written checkpoint at `path`. Returns the absolute path.
    """
    path = os.path.abspath(path)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, _tree(state), force=True)
    checkpointer.wait_until_finished()
    return path


def restore_state(path: str, like):
    """The state saved at `path`, with the structure, shapes and shardings of `like`
    (a freshly built state of the same config).

    Raises:
      FileNotFoundError: nothing is saved at `path`.
    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint at {path}; train with --workdir to write one")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _tree(like))
    restored = ocp.StandardCheckpointer().restore(path, abstract)
    return like.replace(**restored)
