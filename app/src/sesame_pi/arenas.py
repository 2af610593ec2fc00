"""One malloc arena for the whole process, set before the first thread starts.

glibc gives each new thread an arena of its own at its first allocation (up to eight per core),
and each keeps a heap of about 128 KB resident. The appliance runs about ten threads (PortAudio's,
the ALSA pulse plugin's, the speaker writer, gpiozero's hold thread, the stall guard, the stdin
reader), and nearly all of them allocate something: in the benchmark's call the arenas held about
1 MB (nine 132 KB heaps) that one shared arena does not. The threads barely compete for it:
Python's own allocations are serialised by the GIL, and small blocks come from each thread's
tcache without the arena's lock.

`MALLOC_ARENA_MAX` in the environment does the same, but only where the service file or the
container sets it; asking glibc from the process makes it hold wherever the app runs.
"""

from __future__ import annotations

import ctypes
import sys

M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(count: int = 1) -> bool:
    """Cap glibc's arenas at `count`; False where the C library is not glibc (nothing done)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl has a mallopt that ignores the cap
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, count))
