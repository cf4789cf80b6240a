"""Process-level CPU tuning for running the model with PyTorch on Linux.

glibc returns every freed block above its mmap threshold (32 MB at most by default) to the
kernel, so each large activation of a training step (the gathered keys/values of the BEV
queries are 50-200 MB at batch 8) is page-faulted in again on its next allocation. On this VM
that made big elementwise ops 3x slower than memory bandwidth allows. Keeping freed memory in
the heap removes the faults; the price is that the process keeps up to `trim_bytes` of freed
memory mapped.
"""
from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_done = False


def tune_cpu_allocator(mmap_threshold_bytes: int = 1 << 30, trim_bytes: int = 1 << 31,
                       top_pad_bytes: int = 1 << 28) -> bool:
    """Make glibc malloc keep large freed blocks for reuse (mallopt). Call once at process
    start, before the first forward. Idempotent; returns False (and does nothing) where glibc
    is not the allocator. Equivalent to starting the process with
    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483648 MALLOC_TOP_PAD_=268435456."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(min(mmap_threshold_bytes, 2**31 - 1)))
              and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(min(trim_bytes, 2**31 - 1)))
              and libc.mallopt(_M_TOP_PAD, ctypes.c_int(min(top_pad_bytes, 2**31 - 1))))
    except (OSError, AttributeError):
        return False
    _done = bool(ok)
    if not ok:
        log.debug("mallopt refused the allocator settings")
    return _done
