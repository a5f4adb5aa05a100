"""The one thread that runs torch: it loads the model, warms it up, and runs every forward pass and explanation.

Measured on this project's 2-core CPU build of torch 2.13: once the model was loaded (or any op ran) on one thread,
forward passes with 2 intra-op threads on another thread ran 7-8x slower (18 ms instead of 2.3 ms for a lone review;
272 instead of ~1,000 reviews/s at batch 32), because each calling thread gets its own OpenMP team and the teams
fight over the cores. Keeping torch on a single thread for the life of the process avoids it entirely.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


def torch_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentiment-torch")
