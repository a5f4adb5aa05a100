"""The threads that run torch: they load the model, warm it up, and run every forward pass and explanation.

Each thread that calls torch gets its own OpenMP team, and teams started from different threads fight over the
cores: forward passes on a thread other than the one that loaded the model ran several times slower (figures in
git log for this file). So torch runs only on this module's pools' threads, for the life of the process, and each
of them sets its intra-op thread count itself (OpenMP's setting is per thread). With several workers, each one runs
whole forward passes on its own (inter-op parallelism) instead of splitting every pass across cores.
"""

from __future__ import annotations

import contextlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import torch


def torch_pool(workers: int = 1, intra_op_threads: int | None = None, *, niceness: int = 0,
               name: str = "sentiment-torch") -> ThreadPoolExecutor:
    """`workers` threads for torch; with `niceness`, each runs at that much lower CPU priority (Linux)."""
    def init() -> None:
        if intra_op_threads:
            torch.set_num_threads(intra_op_threads)
        if niceness:
            lower_priority(niceness)

    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=init)


def lower_priority(increment: int) -> None:
    """Raise the calling thread's nice value. Linux keeps one per thread; elsewhere `os.nice` would lower the
    whole process, so there it does nothing. Never fatal: a thread at normal priority still works."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.nice(increment)
