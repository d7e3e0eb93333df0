"""PyTorch 2.13 (CPU): eager, and torch.compile of the model. Inputs are NCHW."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.frameworks import Bench, random_batch
from benchmarks.models import RESMLP_WIDTH, model_spec


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(RESMLP_WIDTH)
        self.fc1 = nn.Linear(RESMLP_WIDTH, RESMLP_WIDTH)
        self.fc2 = nn.Linear(RESMLP_WIDTH, RESMLP_WIDTH)

    def forward(self, x):
        return x + self.fc2(F.relu(self.fc1(self.norm(x))))


def make_model(name: str) -> nn.Module:
    spec = model_spec(name)
    if spec.family == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    if spec.family == "cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(13 * 13 * 32, 128), nn.ReLU(), nn.Linear(128, 10))
    if spec.family == "cifar_cnn":
        return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(4096, 120), nn.ReLU(), nn.Linear(120, 84),
                             nn.ReLU(), nn.Linear(84, 10))
    return nn.Sequential(nn.Linear(784, RESMLP_WIDTH), *[Block() for _ in range(spec.depth)],
                         nn.Linear(RESMLP_WIDTH, 10))


def build(spec: dict) -> Bench:
    if spec["transform"] != "jit":
        raise ValueError("the torch peers run one device only (transform 'jit')")
    torch.manual_seed(0)
    model = make_model(spec["model"])
    x, y = random_batch(model_spec(spec["model"]).input_shape, spec["batch"])
    x = torch.from_numpy(x)
    if x.ndim == 4:
        x = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    y = torch.from_numpy(y).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    compiled = spec["framework"] == "torch-compile"
    forward = torch.compile(model) if compiled else model

    def train():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), y).backward()
        optimizer.step()

    def evaluate():
        with torch.no_grad():
            logits = forward(x)
            F.cross_entropy(logits, y), (logits.argmax(-1) == y).float().mean()

    count = sum(p.numel() for p in model.parameters())
    return Bench(count, train, evaluate, phases=None, compiles=compiled)
