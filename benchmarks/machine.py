"""What the results were measured on: CPU, cores, devices and library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re

PACKAGES = ("jax", "jaxlib", "flax", "optax", "keras", "torch", "numpy")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"model name\s*:\s*(.+)", f.read())
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """Machine and library facts for results.json."""
    import jax

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "devices": sorted({d.device_kind for d in jax.devices()}),
        "accelerator": jax.default_backend(),
        "versions": versions,
    }


def slug(info: dict) -> str:
    """A folder name for the machine, e.g. cpu-2core or gpu-nvidia-h100."""
    if info["accelerator"] == "cpu":
        return f"cpu-{info['cores']}core"
    kind = re.sub(r"[^a-z0-9]+", "-", info["devices"][0].lower()).strip("-")
    return f"{info['accelerator']}-{kind}"
