"""Idle cores lent to a lone forward pass (SENTIMENT_USE_IDLE_CORES).

Under light load a forward pass runs while other cores idle: at one connection, one thread works and the rest of
the machine waits for it. The BiLSTM's two directions never read each other, so such a pass can run its backward
direction on a helper thread while its own thread runs the forward one (`SentimentModel.predict_encoded(beside=)`):
the same results, sooner. Under load a helper would only take time from other work: the passes of other
processes, and this process's own next batch, which runs more texts per core-second as one pass than as passes
that finish sooner on two threads each. So a pass gets a helper only when
- its texts arrived while this process ran no pass (none of them waited for one),
- the threads busy with passes in this process, plus the helper, fit the cores,
- and no other server process runs a pass or has run one within `RECENT_S`: between two passes a process under
  load is idle only for a moment (its callers coming back, a refill wait), and a helper lent in that moment would
  share a core with its next pass.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from app.processes import Siblings
from app.torch_pool import torch_pool

# What every server process publishes (app.processes.SharedCounts): its threads busy with forward passes, and when
# its last pass ended (`_now_ms`).
BUSY_THREADS = "busy-threads"
LAST_PASS_END = "last-pass-end"
RECENT_S = 0.02


class IdleCores:
    def __init__(self, cores: int, threads_per_pass: int, workers: int, siblings: Siblings | None = None):
        """`cores`: the cores the server may use; `threads_per_pass`: a pass's intra-op threads (a helper has as
        many); `workers`: passes that may run at once in this process (each may need a helper); `siblings`: the
        other server processes, when there are several."""
        self.cores = cores
        self.threads = threads_per_pass
        self._busy_shared = siblings.counts(BUSY_THREADS) if siblings else None
        self._ended_shared = siblings.counts(LAST_PASS_END) if siblings else None
        self._lock = threading.Lock()
        self._busy = 0  # this process's threads running forward passes, helpers included
        self._last_end = 0.0  # when this process's last pass ended (time.monotonic)
        self.executor = torch_pool(workers, threads_per_pass, name="sentiment-helper")

    @contextlib.contextmanager
    def lend(self, arrived: float) -> Iterator[ThreadPoolExecutor | None]:
        """Around one forward pass whose oldest text arrived at `arrived` (time.monotonic), on the pass's thread: the
        helper executor when a core is idle for it, else None."""
        with self._lock:
            self._busy += self.threads
            taken = self.threads * (arrived >= self._last_end and self._idle(self._busy + self.threads))
            self._busy += taken
            self._publish()
        try:
            yield self.executor if taken else None
        finally:
            with self._lock:
                self._busy -= self.threads + taken
                self._last_end = time.monotonic()
                self._publish(ended=True)

    def _idle(self, threads: int) -> bool:
        """Whether `threads` threads of this process fit the cores with every other process idle for a while."""
        if threads > self.cores:
            return False
        if self._busy_shared is None:
            return True
        recent = _now_ms() - self._ended_shared.others_max() < RECENT_S * 1000
        return not self._busy_shared.others() and not recent

    def _publish(self, ended: bool = False) -> None:
        if self._busy_shared is not None:
            self._busy_shared.publish(self._busy)
            if ended:
                self._ended_shared.publish(_now_ms())

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _now_ms() -> int:
    """time.monotonic in whole milliseconds: a clock every process of the machine shares, in a shared count's int."""
    return time.monotonic_ns() // 1_000_000
