"""The memory allocator the process runs on, and giving freed heap memory back to the OS.

Forward passes over batches of different shapes allocate and free tensors of every size. glibc's malloc keeps
freed pages in its arenas, so under steady load the resident set creeps up without any leak (docs/reliability.md).
jemalloc, preloaded (`LD_PRELOAD`, as the Docker image and `make serve` do when it is installed), returns them on
its own. Under glibc the service calls `malloc_trim(0)` every few seconds between forward passes instead; it takes
back part of the growth, not all.

jemalloc runs with `MALLOC_CONF=oversize_threshold:0` (`JEMALLOC_CONF`). By default it serves every allocation of
8 MiB or more (a batch's LSTM outputs, say) from an arena that hands the pages back to the OS at once, so every
forward pass faulted them in again, several times more page faults and a slower server (figures in the commit that
added the setting, `git log -S oversize_threshold`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
from pathlib import Path

# Where Debian/Ubuntu's libjemalloc2 (and the Docker image's link to it) put the library; the Makefile looks in the
# same places for `make serve`.
JEMALLOC_PATHS = ("/usr/local/lib/libjemalloc.so.2", "/usr/lib/*/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2")
# The MALLOC_CONF the server runs jemalloc with (the Dockerfile and the Makefile spell it out too).
JEMALLOC_CONF = "oversize_threshold:0"


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def jemalloc_loaded(pid: int | str = "self") -> bool:
    """Whether jemalloc is mapped into process `pid` (this one by default); False where /proc cannot tell."""
    try:
        return "libjemalloc" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@functools.cache
def allocator() -> str:
    """`jemalloc` when it is loaded into this process (preloaded), `glibc` when glibc's malloc serves it, else
    `unknown` (musl, macOS)."""
    if jemalloc_loaded():
        return "jemalloc"
    return "glibc" if _libc() is not None else "unknown"


def jemalloc_option(name: str) -> int | None:
    """A numeric jemalloc option of this process (`opt.oversize_threshold`, say), or None without jemalloc."""
    if not jemalloc_loaded():
        return None
    mallctl = getattr(ctypes.CDLL(None), "mallctl", None)
    if mallctl is None:  # a jemalloc built with prefixed symbols
        return None
    value = ctypes.c_size_t()
    size = ctypes.c_size_t(ctypes.sizeof(value))
    if mallctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)) != 0:
        return None
    return value.value


def jemalloc_library() -> str | None:
    """A jemalloc installed on this machine, to preload into a server process (benchmarks use it), or None."""
    return next((p for pattern in JEMALLOC_PATHS for p in sorted(glob.glob(pattern))), None)


def advice() -> list[str]:
    """What to change about the allocator this process runs on, for the startup log; empty when nothing."""
    if allocator() == "glibc":
        return [("glibc malloc: the resident set may creep up by several percent under steady load; preload "
                 "jemalloc (LD_PRELOAD, see the README's Memory section) to keep it flat")]
    threshold = jemalloc_option("opt.oversize_threshold")
    if threshold:  # (0: off; None: cannot tell)
        return [(f"jemalloc hands allocations of {threshold} bytes or more back to the OS after every use, so "
                 f"forward passes keep faulting pages in (about 12% slower at 64 connections): set "
                 f"MALLOC_CONF={JEMALLOC_CONF}")]
    return []


def trim_available() -> bool:
    """Whether `trim` does anything: glibc's malloc serves this process (jemalloc returns memory by itself)."""
    return allocator() == "glibc"


def trim() -> bool:
    """Release free heap pages to the OS; False where glibc's malloc is not the allocator."""
    if not trim_available():
        return False
    _libc().malloc_trim(0)
    return True
