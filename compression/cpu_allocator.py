"""Keep freed memory in the process while training on a CPU: glibc ``malloc`` settings, no preload.

Why: PyTorch's CPU allocator asks the C library for every tensor and hands it straight back (it
caches nothing, unlike its CUDA allocator). glibc serves an allocation above its mmap threshold
(128 KiB, rising on its own to at most 32 MiB) with a fresh ``mmap`` and unmaps it on ``free``, and
it trims the top of its heap whenever more than a threshold lies free there. A training step frees
and re-allocates the same large activations every step (attention scores of batch x heads x 512 x
512 fp32 are 32 MiB at batch 8, the logits of 8 x 64 x 32,128 are 63 MiB), so each step faults that
memory in again, page by page, zeroed by the kernel. Intel's PyTorch CPU tuning guide swaps the
allocator (jemalloc or tcmalloc through ``LD_PRELOAD``) for this; glibc's own ``mallopt(3)`` does the
same job from inside a running process.

How (:func:`hold_freed_memory`): for the length of a training, ``M_MMAP_MAX`` 0 (every allocation
comes from the heap, none from its own mapping), ``M_TRIM_THRESHOLD`` 1 GiB and ``M_TOP_PAD`` 64 MiB
(freed memory stays in the heap for the next step); afterwards glibc's documented defaults come back
and ``malloc_trim(0)`` hands what lies free to the kernel again. Memory is only reused, never changed:
a training computes exactly the same numbers either way (``tests/test_cpu_allocator.py``). Only glibc
has ``mallopt`` with these parameters (Linux distributions other than Alpine's musl); elsewhere the
settings are left alone and the reason says so. Measured in ``python -m benchmarks.finetune --fp32``
(``TrainArgs.allocator``: ``"hold"`` against ``"system"``): one fp32 epoch of the tiny preset on 699
XSum pairs, 2-core AMD EPYC, 1.19x faster natively and 1.16x (1.11-1.21) with every library held to
AVX2 code paths, at a peak RSS of 2,100 MiB against 1,876 MiB (2026-12-05).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Callable

#: glibc's ``mallopt`` parameter numbers (``<malloc.h>``).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4
#: What :func:`hold_freed_memory` sets: no mmap per allocation, 1 GiB free before the heap is trimmed,
#: 64 MiB extra each time the heap grows.
HOLD = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}
#: glibc's defaults (``mallopt(3)``), put back afterwards. Setting the mmap threshold turns glibc's
#: dynamic threshold off for the rest of the process, so it is not touched at all.
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024, M_TOP_PAD: 128 * 1024}

_lock = threading.Lock()
_holders = 0


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (has ``mallopt`` and ``malloc_trim``), else ``None``."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    names = ("gnu_get_libc_version", "mallopt", "malloc_trim")  # the first one only glibc has
    return libc if libc is not None and all(hasattr(libc, each) for each in names) else None


def why_not_available() -> str | None:
    """``None`` when :func:`hold_freed_memory` can act in this process, else the reason in words."""
    return None if glibc() is not None else "the C library is not glibc (no mallopt)"


def _set(libc: ctypes.CDLL, values: dict[int, int]) -> None:
    for parameter, value in values.items():
        libc.mallopt(parameter, value)


def hold_freed_memory() -> Callable[[], None]:
    """Set glibc's ``malloc`` to keep freed memory for reuse (:data:`HOLD`) and return the function that
    puts glibc's defaults back and hands free memory to the kernel (``malloc_trim(0)``).

    Process-wide (``mallopt`` has no per-thread setting); nested or concurrent holders are counted,
    and only the last restore resets the settings. Where the C library is not glibc nothing is set
    and the returned function does nothing (:func:`why_not_available` says why). Raises nothing.
    """
    global _holders
    libc = glibc()
    if libc is None:
        return lambda: None
    with _lock:
        if _holders == 0:
            _set(libc, HOLD)
        _holders += 1
    done = False

    def restore() -> None:
        global _holders
        nonlocal done
        with _lock:
            if done:
                return
            done = True
            _holders -= 1
            if _holders == 0:
                _set(libc, GLIBC_DEFAULTS)
                libc.malloc_trim(0)

    return restore
