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

Read buffers stay in the heap (`keep_read_buffers_in_the_heap`): asyncio reads every socket and
every TLS record into a fresh 256 KB bytes object and shrinks it to what came. At that size glibc
maps fresh pages for each one and unmaps them after: three system calls and two page faults per
read of a 1.5 KB audio frame, 50 to 100 times a second. With the thresholds at 512 KB the buffer
comes from the heap's top, whose touched pages stay resident, and costs neither. The price: up
to 512 KB freed at the heap's top stays resident (glibc's default trims above 128 KB), and blocks
up to 512 KB come from the heap rather than from mappings of their own.
"""

from __future__ import annotations

import ctypes
import sys

M_ARENA_MAX = -8  # glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
READ_BUFFER_ROOM = 512 * 1024  # above asyncio's 256 KB reads


def tune_malloc() -> bool:
    """Both settings below, before any thread starts; False where there is no glibc."""
    return limit_malloc_arenas() and keep_read_buffers_in_the_heap()


def limit_malloc_arenas(count: int = 1) -> bool:
    """Cap glibc's arenas at `count`; False where the C library is not glibc (nothing done)."""
    return _mallopt(M_ARENA_MAX, count)


def keep_read_buffers_in_the_heap(room: int = READ_BUFFER_ROOM) -> bool:
    """Serve blocks below `room` from the heap and keep up to `room` free at its top."""
    return _mallopt(M_MMAP_THRESHOLD, room) and _mallopt(M_TRIM_THRESHOLD, room)


def _mallopt(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl has a mallopt that ignores these
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(option, value))
