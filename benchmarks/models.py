"""The benchmark models, by name, as every framework builds them.

`mlp` is the seed 784-128-10 MLP; `cnn` the seed MNIST CNN; `cifar_cnn` the seed
CIFAR-10 CNN; `resmlp-D` a residual MLP of D pre-LayerNorm blocks of width 128 on a
784-feature input. Every framework builds the same layers, and the suite checks that
their parameter counts are equal.
"""

from __future__ import annotations

import dataclasses

RESMLP_WIDTH = 128
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str  # mlp, cnn, cifar_cnn, resmlp-D
    input_shape: tuple[int, ...]  # one example, NHWC for images

    @property
    def family(self) -> str:
        return self.name.split("-")[0]

    @property
    def depth(self) -> int:
        return int(self.name.split("-")[1]) if self.family == "resmlp" else 0


def model_spec(name: str) -> ModelSpec:
    """The spec of a benchmark model name; raises ValueError for an unknown one."""
    if name == "mlp":
        return ModelSpec(name, (28, 28, 1))
    if name == "cnn":
        return ModelSpec(name, (28, 28, 1))
    if name == "cifar_cnn":
        return ModelSpec(name, (32, 32, 3))
    if name.startswith("resmlp-") and name.split("-")[1].isdigit():
        return ModelSpec(name, (784,))
    raise ValueError(f"unknown benchmark model {name!r}; use mlp, cnn, cifar_cnn or resmlp-DEPTH")


def expected_parameter_count(name: str) -> int:
    """Parameters of the model, counted from its definition (what every framework must have)."""
    spec = model_spec(name)
    if spec.family == "mlp":
        return 784 * 128 + 128 + 128 * 10 + 10
    if spec.family == "cnn":
        return (9 * 32 + 32) + (13 * 13 * 32 * 128 + 128) + (128 * 10 + 10)
    if spec.family == "cifar_cnn":
        return (27 * 32 + 32) + (288 * 64 + 64) + (4096 * 120 + 120) + (120 * 84 + 84) + 850
    w = RESMLP_WIDTH
    block = 2 * w + 2 * (w * w + w)  # LayerNorm scale+bias, two Dense layers
    return (784 * w + w) + spec.depth * block + (w * 10 + 10)
