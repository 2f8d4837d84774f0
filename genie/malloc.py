"""Keep freed memory in the process, so a training step's tensors reuse pages instead of
faulting in fresh ones.

glibc's malloc serves large blocks with mmap and returns them to the OS when freed (and trims
the heap top past 128 KiB), so every step's activations, gradients and attention scores land
on new pages that the kernel faults in and zeroes one 4 KiB page at a time. Measured on 2 cores
(bf16, the tiny preset): 30,600 page faults in a tokenizer step and 7,700 in a LAM step; with
the settings below, 230 and 160, and the steps 12-15% and 7-10% faster. Peak memory is the
same; it is just not handed back between steps.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# glibc refuses mmap thresholds above 32 MiB on 64-bit; blocks larger than that stay mmapped.
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed blocks of up to 32 MiB and keep up to 1 GiB of free
    heap. True if applied; False where the C library is not glibc (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # Setting either value also turns off glibc's own adaptive threshold, which only rises to
    # the size of a block after one has been freed, and trims the heap behind it.
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
