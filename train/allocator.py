"""glibc malloc settings for XLA on CPU: keep freed memory in the process for the next step.

XLA's CPU runtime mallocs each execution's temporary buffer (every intermediate of a train
step, in one block) and frees it when the step ends; so do the step's outputs when the state
is not donated. glibc serves a block over its mmap threshold (128 KiB, adjusted up to 32 MiB)
with its own mmap and unmaps it on free, and hands free memory at the top of its heaps back
to the kernel. So every step asks the kernel for fresh zeroed pages and page-faults its whole
working set again. Measured on a 2-core CPU (train step, batch 128, the state donated): the
CIFAR-10 CNN 55 -> 34 ms and the 128-block residual MLP 74 -> 41 ms; the MLP and the MNIST
CNN, whose intermediates are small, unchanged.

`keep_freed_memory()` turns glibc's mmap for allocations off (M_MMAP_MAX = 0) and raises its
trim threshold to 2 GiB (M_TRIM_THRESHOLD), for this process, from the call on. The cost: a
process's heap stays at its peak instead of shrinking after it. `python -m train` calls it at
start-up (JNN_KEEP_FREED_MEMORY=0 turns that off). In a script of your own, call it or set
the same in the environment before Python starts:

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647 python ...
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt's parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes a C int
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
ENV_SWITCH = "JNN_KEEP_FREED_MEMORY"


def keep_freed_memory() -> str | None:
    """Applies the settings (module docstring) to this process. Returns None when they are
    on, otherwise why not: the C library is not glibc (macOS, Windows, musl), or
    $JNN_KEEP_FREED_MEMORY is 0."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"${ENV_SWITCH} is 0"
    library, _ = platform.libc_ver()
    if library != "glibc":
        return f"the C library is {library or 'not glibc'}, and only glibc's malloc is tuned"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    for parameter, value in SETTINGS:
        if libc.mallopt(parameter, value) != 1:
            return f"glibc's mallopt refused parameter {parameter} = {value}"
    return None
