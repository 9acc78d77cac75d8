"""CPU memory: keep freed blocks in the process, the CPU counterpart of CuPy's memory pool.

Every training step allocates and frees the same arrays: activations, masks and gradients of
0.25-0.8 MB each for the chapter's MLP. NumPy gets them from the C library's ``malloc``. By
default glibc serves a block over 128 KiB with its own ``mmap`` and, when it is freed, hands it
(or the free memory at the top of the heap) straight back to the operating system. The next
batch then asks for it again: system calls, and a page fault for each 4 KiB page, which the
kernel zeroes first. Measured on this project's 2-core VM, for the chapter's MLP on batches of 8
(where the math is cheap and this cost shows): ``opt.zero_grad()``, which frees the gradients, took
100-150 us instead of 1 us, and ``backward()`` and ``opt.step()`` each 250-650 us more; a dropout layer's
temporaries faulted 544 pages per call (``tests/test_allocator.py``). How much a process paid also
depended on how its frees happened to fall, which made timings differ from process to process.

CuPy avoids the same cost on a GPU with a memory pool. On the CPU, two ``mallopt`` settings get
the same effect: serve blocks up to 32 MiB from the heap (``M_MMAP_THRESHOLD``), and keep up to
``TRIM_THRESHOLD`` bytes of freed memory for reuse (``M_TRIM_THRESHOLD``). A process's peak memory
does not grow: what is kept is what the previous batch already used.

``import minigrad`` applies them once (glibc only; the whole process, NumPy's arrays and any other
library's). Set ``MINIGRAD_KEEP_FREED_MEMORY=0`` to leave the allocator alone.
"""
import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value; bigger blocks (a whole dataset) still use mmap
TRIM_THRESHOLD = 512 * 2**20


def keep_freed_memory():
    """Tell glibc's malloc to reuse freed memory instead of returning it to the OS. True when applied."""
    if os.environ.get("MINIGRAD_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # glibc (Linux); absent from macOS's and Windows's C libraries
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


KEEPING_FREED_MEMORY = keep_freed_memory()
