"""The threads that run torch: they load the model, warm it up, and run every forward pass and explanation.

Measured on this project's 2-core CPU build of torch 2.13: once the model was loaded (or any op ran) on one thread,
forward passes with 2 intra-op threads on another thread ran 7-8x slower (18 ms instead of 2.3 ms for a lone review;
272 instead of ~1,000 reviews/s at batch 32), because each calling thread gets its own OpenMP team and the teams
fight over the cores. So torch runs only on this pool's threads, for the life of the process, and each of them sets
its intra-op thread count itself (OpenMP's setting is per thread). With several workers, each one runs whole
forward passes on its own (inter-op parallelism) instead of splitting every pass across cores.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch


def torch_thread(workers: int = 1, intra_op_threads: int | None = None) -> ThreadPoolExecutor:
    def init() -> None:
        if intra_op_threads:
            torch.set_num_threads(intra_op_threads)

    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sentiment-torch", initializer=init)
