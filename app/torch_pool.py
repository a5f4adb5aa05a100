"""The threads that run torch: they load the model, warm it up, and run every forward pass and explanation.

Each thread that calls torch gets its own OpenMP team, and teams started from different threads fight over the
cores: forward passes on a thread other than the one that loaded the model ran several times slower (figures in
git log for this file). So torch runs only on this pool's threads, for the life of the process, and each of them
sets its intra-op thread count itself (OpenMP's setting is per thread). With several workers, each one runs whole
forward passes on its own (inter-op parallelism) instead of splitting every pass across cores.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch


def torch_pool(workers: int = 1, intra_op_threads: int | None = None) -> ThreadPoolExecutor:
    def init() -> None:
        if intra_op_threads:
            torch.set_num_threads(intra_op_threads)

    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sentiment-torch", initializer=init)
