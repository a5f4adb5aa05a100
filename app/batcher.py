"""Gathers texts from concurrent requests into batches for the model, on the event loop thread alone.

Each admitted text is a `Job` whose future the caller awaits. The batcher sees a text only as an item with a `cost`
(the LSTM time steps it will take); `predict` gets a batch of items and returns one result per item. An owner task
(or a batch that just ended, see below) takes jobs in arrival order and closes a batch when it holds
`max_batch_size` texts, when one more text would push the padded cost (longest text × texts) past
`max_batch_tokens`, or when `max_wait_ms` has passed since its oldest text arrived. Texts that queued while the
model was busy have usually waited that long already, so under load a batch leaves as soon as the model is free;
with `max_wait_ms=0` an idle model takes the first text at once.

Callers that send their next text as soon as they are answered (a client looping over reviews) come back within
a few milliseconds of a batch's end. Started at once, the next batch holds only the texts that arrived during the
last one, and under steady load the batches settle into halves (at 32 such callers, alternating batches of about
16) that run slower per text than one whole batch. So when a batch ends, the next one may wait up to `refill_ms`,
and never more than a tenth of the pass just ended (the model idles at most that share of its time), until the
queue also holds as many texts as the batch just answered: its callers, back. A full batch never waits.

When the queue is deep, its `window` oldest texts form a round: sorted by cost, then cut into batches in that
order, so each batch holds texts of similar length (a batch of mixed lengths runs some of its LSTM steps over few
rows, which uses the CPU poorly). A round is finished before the next one forms, and texts that arrive meanwhile
join the next, so no text waits behind more than the texts ahead of it plus the rest of its own round: arrival
order still holds between rounds.

Forward passes run on the torch worker threads (`run_in_executor`), never on the event loop, so the loop keeps
accepting requests meanwhile. With `workers` > 1 up to that many batches run at once; the owner takes
the next batch only when a worker is free, so texts that arrive meanwhile join it rather than wait behind it. A
batch that ends with texts waiting hands its worker the next batch itself, in the same step of the loop (the queue
is only ever touched from the loop thread): through the owner task, that batch would start only after the loop had
run every answer just released. Jobs whose caller stopped waiting are dropped before the forward pass. A failing
batch is retried text by text so that one bad text fails only itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from app.metrics import Metrics
from model import batch_admits
from app.torch_pool import torch_pool

log = logging.getLogger("app.batcher")


class QueueFull(Exception):
    def __init__(self, retry_after_s: int, queue_depth: int):
        super().__init__(f"queue full ({queue_depth} texts waiting); retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s
        self.queue_depth = queue_depth


class NotAdmitting(Exception):
    """The batcher is draining, stopped or dead: no new work."""


class InferenceError(Exception):
    def __init__(self, error_id: str):
        super().__init__(f"forward pass failed (error id {error_id})")
        self.error_id = error_id


class Item(Protocol):
    @property
    def cost(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Any  # what `predict` returned for this item
    queue_s: float
    inference_s: float
    batch_id: int


@dataclass(eq=False, slots=True)
class Job:
    item: Item
    future: asyncio.Future[Outcome]
    enqueued: float
    abandoned: str | None = None


class Batcher:
    def __init__(self, predict: Callable[[Sequence[Item]], Sequence[Any]], *, max_batch_size: int,
                 max_batch_tokens: int, max_wait_ms: float, max_queue: int, metrics: Metrics,
                 on_fatal: Callable[[BaseException], None] | None = None, max_queue_s: float | None = None,
                 executor: ThreadPoolExecutor | None = None, workers: int = 1, window: int = 1,
                 refill_ms: float = 0.0):
        self._predict = predict
        self.window = window
        self._round_left = 0  # texts at the head of the queue that belong to the round being cut into batches
        self._round_oldest = 0.0  # when the oldest text of that round arrived
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000
        self.refill_s = refill_ms / 1000
        self._refill_until = 0.0  # the next batch may wait for the callers just answered until then, …
        self._refill_count = 0  # … or until this many texts are queued
        self.max_queue = max_queue
        # Admission by time as well as by count: texts that could only be reached after this many seconds of work
        # (at the recent throughput) are refused now with 429, rather than admitted to time out later.
        self.max_queue_s = max_queue_s
        self._metrics = metrics
        self._on_fatal = on_fatal
        self._queue: deque[Job] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._outstanding = 0  # admitted jobs not yet answered (queued or in the forward pass)
        self._admitting = False
        self._flushing = False  # draining: stop lingering for batches to fill
        self._task: asyncio.Task | None = None
        self._running: set[Job] = set()  # the jobs of the forward passes under way
        self._batches: set[asyncio.Task] = set()
        self._dead = False  # the owner task or a batch task died of a bug
        self._free_workers = workers
        self._worker_freed = asyncio.Event()
        self._batch_id = 0
        self._rate: float | None = None  # texts per second, moving average over forward passes
        # `workers` forward passes at most at a time, each on a thread of the torch pool (app.torch_pool).
        self._executor = executor or torch_pool(workers)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sentiment-batcher")
        self._task.add_done_callback(self._on_task_done)
        self._admitting = True

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._dead

    @property
    def admitting(self) -> bool:
        return self._admitting and self.running

    async def run_in_worker(self, fn: Callable, *args):
        """Run `fn` on the forward-pass thread (warm-up uses it so that thread is the one that is warm)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def drain(self, timeout_s: float) -> bool:
        """Admit nothing more and wait until every admitted job is answered; False if that took too long."""
        self._admitting = False
        self._flushing = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    def abort(self, reason: str) -> None:
        """Give up on admitted work (the shutdown grace ran out): its callers get `NotAdmitting` now, even those
        whose forward pass is still running (its results, if it ever ends, go nowhere)."""
        self._admitting = False
        for job in list(self._running):
            if not job.future.done():
                job.future.set_exception(NotAdmitting(reason))
        self._fail_queued(NotAdmitting(reason))

    async def stop(self) -> None:
        self._admitting = False
        for task in [self._task, *self._batches]:
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._fail_queued(NotAdmitting("the server stopped before this text was processed"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _on_task_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        self._admitting = False
        self._dead = True
        log.critical("the batcher task died; the service cannot answer predictions any more", exc_info=exc)
        self._fail_queued(NotAdmitting("the batcher stopped; the server is restarting"))
        if self._on_fatal is not None:
            self._on_fatal(exc)

    # -- admission ------------------------------------------------------------------------------------------------

    def check_room(self, count: int) -> None:
        """Raise now what `submit` would raise for `count` texts (NotAdmitting, QueueFull), counting the refusal."""
        if not self.admitting:
            self._metrics.rejected.labels("not_admitting").inc(count)
            raise NotAdmitting("the server is not accepting work")
        if len(self._queue) + count > self.max_queue:
            self._metrics.rejected.labels("queue_full").inc(count)
            raise QueueFull(self.retry_after_s(count), len(self._queue))
        if self.max_queue_s is not None and self.backlog_s(count) > self.max_queue_s:
            self._metrics.rejected.labels("queue_too_slow").inc(count)
            raise QueueFull(self.retry_after_s(count), len(self._queue))

    def submit(self, items: Sequence[Item]) -> list[Job]:
        """Admit all texts of one request or none of them."""
        self.check_room(len(items))
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        jobs = [Job(item, loop.create_future(), now) for item in items]
        self._queue.extend(jobs)
        self._outstanding += len(jobs)
        self._idle.clear()
        self._metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
        return jobs

    def abandon(self, jobs: Sequence[Job], reason: str) -> None:
        """The caller stops waiting: jobs not yet in a forward pass will be dropped, not computed."""
        for job in jobs:
            if not job.future.done():
                job.abandoned = reason
                job.future.cancel()

    def backlog_s(self, extra: int = 0) -> float:
        """Seconds of work queued (plus `extra` texts) at the recent throughput; 0 before the first batch."""
        return (len(self._queue) + extra) / self._rate if self._rate else 0.0

    def retry_after_s(self, extra: int = 0) -> int:
        """Seconds the model needs to work off the current queue at its recent throughput; 1 to 60."""
        return max(1, min(60, math.ceil(self.backlog_s(extra))))

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- the owner task -------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            # A batch is taken only once a worker is free: until then texts keep queueing, so it leaves fuller.
            while not self._free_workers:
                self._worker_freed.clear()
                await self._worker_freed.wait()
            if not self._queue:  # a batch that ended handed its worker the queue
                continue
            await self._linger()
            if self._free_workers:  # (a batch that ended meanwhile may have handed its worker the queue)
                self._start(self._take_batch())

    def _start(self, jobs: list[Job]) -> None:
        """Give `jobs` to a free worker now: the forward pass is submitted before this returns."""
        self._metrics.queue_depth.set(len(self._queue))
        if not jobs:
            return
        self._free_workers -= 1
        # Sorted by length: rows of similar length sit together (the model pads to the longest row).
        jobs.sort(key=lambda j: j.item.cost)
        self._batch_id += 1
        start = time.monotonic()
        m = self._metrics
        m.batch_size.observe(len(jobs))
        m.batch_tokens.observe(jobs[-1].item.cost * len(jobs))
        for job in jobs:
            m.queue_seconds.observe(start - job.enqueued)
        self._running.update(jobs)
        work = asyncio.get_running_loop().run_in_executor(self._executor, self._forward, jobs)
        task = asyncio.create_task(self._finish(jobs, work, self._batch_id, start),
                                   name=f"sentiment-batch-{self._batch_id}")
        self._batches.add(task)
        task.add_done_callback(self._on_batch_done)

    def _on_batch_done(self, task: asyncio.Task) -> None:
        self._batches.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        # _finish answers every failure of the model itself; an exception here is a bug in the batcher, and a
        # batcher with a bug must not go on looking healthy.
        if self._task is not None and not self._task.done():
            self._task.cancel(msg=f"a batch task failed: {task.exception()!r}")
        self._on_task_done(task)

    async def _linger(self) -> None:
        """Wait until the next batch is `_due`: full, refilled, or max_wait past the arrival of its oldest text."""
        deadline = self._deadline()
        while not self._due(deadline):
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), max(deadline, self._refill_until) - time.monotonic())
            except TimeoutError:
                return

    def _deadline(self) -> float:
        """When the oldest queued text has waited max_wait (a round's head is its shortest text, not its oldest)."""
        return (self._round_oldest if self._round_left else self._queue[0].enqueued) + self.max_wait_s

    def _due(self, deadline: float) -> bool:
        """Whether the next batch leaves now rather than lingering for more texts until `deadline`."""
        if self._flushing or self._batch_is_full():
            return True
        now = time.monotonic()
        if now < self._refill_until and len(self._queue) < self._refill_count:
            return False
        return deadline <= now

    def _fits(self, count: int, longest: int, cost: int) -> bool:
        return batch_admits(count, longest, cost, self.max_batch_size, self.max_batch_tokens)

    def _batch_is_full(self) -> bool:
        count = longest = 0
        for job in self._queue:
            if job.future.done():
                continue
            if count and not self._fits(count, longest, job.item.cost):
                return True
            count, longest = count + 1, max(longest, job.item.cost)
        return count >= self.max_batch_size

    def _take_batch(self) -> list[Job]:
        if not self._round_left:
            self._start_round()
        jobs: list[Job] = []
        longest = 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # the caller went away: never computed
                self._pop()
                self._metrics.dropped.labels(job.abandoned or "cancelled").inc()
                self._answered(1)
                continue
            if jobs and not self._fits(len(jobs), longest, job.item.cost):
                break  # (a single text over the token budget still runs, alone)
            jobs.append(self._pop())
            longest = max(longest, job.item.cost)
        return jobs

    def _start_round(self) -> None:
        """Sort the `window` oldest queued texts by cost, shortest first, at the head of the queue."""
        count = min(self.window, len(self._queue))
        if count < 2:
            return
        head = [self._queue.popleft() for _ in range(count)]
        self._round_oldest = head[0].enqueued
        head.sort(key=lambda j: j.item.cost)
        self._queue.extendleft(reversed(head))
        self._round_left = count

    def _pop(self) -> Job:
        self._round_left = max(0, self._round_left - 1)
        return self._queue.popleft()

    def _answered(self, count: int) -> None:
        self._outstanding -= count
        if self._outstanding == 0:
            self._idle.set()

    async def _finish(self, jobs: list[Job], work: asyncio.Future, batch_id: int, start: float) -> None:
        concurrent = len(self._batches) or 1  # forward passes sharing the machine with this one
        try:
            results: list[Any] = list(await work)
        except Exception as exc:  # noqa: BLE001 - any failure of the model is reported per text below
            results = await self._isolate(jobs, exc)
        finally:
            self._running.difference_update(jobs)
        elapsed = time.monotonic() - start
        m = self._metrics
        m.inference_seconds.observe(elapsed)
        ok = sum(not isinstance(r, BaseException) for r in results)
        if ok:
            rate = ok / max(elapsed, 1e-6) * concurrent
            self._rate = rate if self._rate is None else 0.8 * self._rate + 0.2 * rate
        m.texts.inc(ok)
        for job, result in zip(jobs, results):
            if job.future.done():  # the caller left during the forward pass
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(Outcome(result, start - job.enqueued, elapsed, batch_id))
        self._answered(len(jobs))
        self._free_workers += 1
        self._refill_until = time.monotonic() + min(self.refill_s, elapsed / 10)
        self._refill_count = len(self._queue) + len(jobs)
        # Setting the results above only scheduled the answers. Handing the worker its next batch here, before they
        # run, keeps it busy when that batch need not wait for a refill: through the owner task the next batch
        # started a median 5.4 ms later at 64 connections (8% of each worker's time), behind the answers and new
        # requests the loop ran first.
        if self._queue and self._due(self._deadline()):
            self._start(self._take_batch())
        if self._free_workers:
            self._worker_freed.set()

    def _forward(self, jobs: Sequence[Job]) -> list[Any]:
        results = list(self._predict([j.item for j in jobs]))
        if len(results) != len(jobs):
            raise RuntimeError(f"the model returned {len(results)} results for {len(jobs)} texts")
        return results

    async def _isolate(self, jobs: list[Job], exc: Exception) -> list[Any]:
        """A batch failed: rerun its texts one by one so that only the failing ones fail."""
        if len(jobs) == 1:
            return [self._failure(exc, 1)]
        log.warning("a forward pass over %d texts failed (%s); retrying them one by one", len(jobs), exc)
        results: list[Any] = []
        for job in jobs:
            if job.future.done():
                results.append(None)  # nobody is waiting for it
                continue
            try:
                results.extend(await self.run_in_worker(self._forward, [job]))
            except Exception as single:  # noqa: BLE001
                results.append(self._failure(single, 1))
        return results

    def _failure(self, exc: BaseException, count: int) -> InferenceError:
        error_id = uuid.uuid4().hex[:12]
        log.error("forward pass failed for %d text(s) [error_id=%s]", count, error_id, exc_info=exc,
                  extra={"error_id": error_id})
        self._metrics.failures.inc(count)
        return InferenceError(error_id)

    def _fail_queued(self, exc: Exception) -> None:
        while self._queue:
            job = self._pop()
            if not job.future.done():
                job.future.set_exception(exc)
            self._answered(1)
        self._metrics.queue_depth.set(0)
