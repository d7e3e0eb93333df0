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


# The widest vector instructions a CPU has, widest first: XLA's and PyTorch's kernels are
# built for each, so a ratio between frameworks measured on one need not carry to another.
VECTOR_ISAS = (("avx512f", "avx512"), ("avx2", "avx2"), ("avx", "avx"), ("sse4_2", "sse4.2"),
               ("asimd", "neon"))


def vector_isa(cpu_flags: set[str] | None = None) -> str:
    """The CPU's widest vector instruction set ("avx512", "avx2", "neon", ...), from
    /proc/cpuinfo's flags (or `cpu_flags`); "unknown" where they cannot be read."""
    if cpu_flags is None:
        try:
            with open("/proc/cpuinfo") as f:
                match = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", f.read(), re.MULTILINE)
        except OSError:
            match = None
        cpu_flags = set(match.group(1).split()) if match else set()
    for flag, name in VECTOR_ISAS:
        if flag in cpu_flags:
            return name
    return "unknown"


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
        "vector_isa": vector_isa(),
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
