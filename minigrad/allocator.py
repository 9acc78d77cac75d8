"""CPU memory: keep freed blocks in the process, the CPU counterpart of CuPy's memory pool.

Every training step allocates and frees the same arrays (activations, masks and gradients of 0.25-0.8 MB
each for the chapter's MLP), and NumPy gets them from the C library's ``malloc``. By default glibc serves a
block over 128 KiB with its own ``mmap`` and hands it back to the operating system when it is freed, so the
next batch pays system calls and a page fault for each 4 KiB page again. Two ``mallopt`` settings make glibc
keep them instead: serve blocks up to 32 MiB from the heap (``M_MMAP_THRESHOLD``) and keep up to
``TRIM_THRESHOLD`` bytes of freed memory (``M_TRIM_THRESHOLD``). Peak memory does not grow: what is kept is
what the previous batch already used.

The settings belong to the whole process (NumPy's arrays and every other library's), so a library must not
make them on import: ``import minigrad`` leaves malloc alone. The programs minigrad runs as the owner of
the process (the chapter's commands and the benchmarks) call ``keep_freed_memory()`` first; a program of
yours may too. ``MINIGRAD_KEEP_FREED_MEMORY=0`` makes the call do nothing. What it buys is measured on the
documentation site's performance page.
"""

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value; bigger blocks (a whole dataset) still use mmap
TRIM_THRESHOLD = 512 * 2**20


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed memory instead of returning it to the OS, for the whole process.

    Returns True when the settings were applied; False when ``MINIGRAD_KEEP_FREED_MEMORY=0`` or the C library
    is not glibc (macOS, Windows, musl).
    """
    if os.environ.get("MINIGRAD_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # glibc (Linux); absent from macOS's and Windows's C libraries
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
