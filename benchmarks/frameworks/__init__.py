"""One adapter per framework: `build(spec) -> Bench`, the same model and step in each.

A spec is a dict with framework, model, transform, devices, ensemble and batch.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

FRAMEWORKS = ("jnn", "flax", "nnx", "keras", "torch", "torch-compile")
JAX_FRAMEWORKS = ("jnn", "flax", "nnx", "keras")


@dataclasses.dataclass
class Bench:
    """A built benchmark: blocking train/eval steps and how compile time was measured.

    Attributes:
      parameters: the model's parameter count (one member).
      phases: {"train": {trace_s, lower_s, compile_s}, "eval": {...}} when compiled ahead
        of time; None when the framework compiles on the first call (then the worker
        times the first call and subtracts a steady step).
      compiles: False for frameworks that never compile (torch eager).
    """

    parameters: int
    train: Callable[[], Any]
    eval: Callable[[], Any]
    phases: dict | None = None
    compiles: bool = True


def get(framework: str):
    """The adapter module of a framework name."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; choose one of {', '.join(FRAMEWORKS)}")
    module = {"torch-compile": "torch_bench", "torch": "torch_bench", "jnn": "jnn_bench",
              "flax": "flax_bench", "nnx": "nnx_bench", "keras": "keras_bench"}[framework]
    return importlib.import_module(f"benchmarks.frameworks.{module}")


def random_batch(input_shape, batch: int, seed: int = 0):
    """A fixed random float32 batch (B, *input_shape) and integer labels (B,)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, *input_shape)).astype(np.float32),
            rng.integers(0, 10, size=batch).astype(np.int32))
