"""The running service: the model, its batcher, the lifecycle state, and one prediction from texts to results."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import model as sentiment_model
from app import memory
from app.batcher import Batcher, NotAdmitting, Outcome
from app.config import Settings
from app.cores import usable_cores
from app.explainer import ExplainBusy, ExplainLane, ExplainTooLarge, Ticket
from app.failures import ClientGone, DeadlineExceeded, ExplainFailed, Unavailable
from app.idle_cores import IdleCores
from app.metrics import Metrics
from app.processes import Siblings
from app.torch_pool import torch_pool
from model.explain import Explanation

log = logging.getLogger("app.service")

WARM_UP_TEXTS = ["Warm-up.", "A longer warm-up text: the first forward passes allocate buffers and pick kernels, so "
                 "they run before the server reports ready rather than on a user's request. " * 8]

# The explanation thread's nice value above the rest of the process. At 5 the kernel weighs a normal thread about
# three times more: a plain batch or the event loop loses little to an explanation running beside it, while the
# explanation still gets a share of a busy CPU (admission judges it on the speed it last measured).
EXPLAIN_NICENESS = 5
# The name under which every server process publishes its explain lane's admitted work (app.processes.SharedCounts).
EXPLAIN_BACKLOG = "explain-backlog"

State = Literal["starting", "ready", "draining", "stopped", "failed"]


@dataclass(frozen=True, slots=True)
class Text:
    """A text waiting for the batcher, which plans batches on `cost` before the text is tokenised."""

    text: str
    cost: int
    arrived: float  # time.monotonic()

    @classmethod
    def of(cls, text: str) -> Text:
        return cls(text, sentiment_model.estimate_cost(text), time.monotonic())


@dataclass
class Classified:
    results: list[dict[str, Any]]
    queue_ms: float
    inference_ms: float


class Service:
    def __init__(self, settings: Settings, metrics: Metrics, model: Any | None = None,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 torch_executor: ThreadPoolExecutor | None = None, siblings: Siblings | None = None):
        self.settings = settings
        self.siblings = siblings
        self.metrics = metrics
        self.model = model  # a loaded model.SentimentModel (or a stand-in with the same methods)
        self.batcher: Batcher | None = None
        self.explainer: ExplainLane | None = None
        self.idle_cores: IdleCores | None = None  # (on a CPU, with SENTIMENT_USE_IDLE_CORES)
        self._trimmer: asyncio.Task | None = None
        self.state: State = "starting"
        self._on_fatal = on_fatal
        # Every torch call of the process runs on this pool's threads (see app.torch_pool for why).
        self.torch_executor = torch_executor or torch_pool(settings.torch_workers, settings.torch_threads)
        # Explanations run on a thread of their own at a lower CPU priority: a plain batch never waits behind an
        # explanation for a worker, and on a busy machine the kernel gives explanations what plain traffic leaves
        # (their measured speed drops, so admission answers 429 sooner).
        self.explain_executor = torch_pool(1, settings.torch_threads, niceness=EXPLAIN_NICENESS,
                                           name="sentiment-explain")
        # Requests asked to explain, from admission until answered: a drain waits for them as for queued texts.
        self._explaining = 0
        self._explained = asyncio.Event()
        self._explained.set()

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        if self.model is None:
            self.model = await loop.run_in_executor(self.torch_executor, sentiment_model.load_model, s.model_dir,
                                                    s.device, s.lstm_dtype)
        if s.use_idle_cores and self.model.device.type == "cpu":
            cores = usable_cores()
            self.idle_cores = IdleCores(cores, s.torch_threads or cores, s.torch_workers, self.siblings)
        self.batcher = Batcher(self._predict, executor=self.torch_executor,
                               max_batch_size=s.max_batch_size,
                               max_batch_tokens=s.max_batch_tokens, max_wait_ms=s.max_wait_ms,
                               max_queue=s.max_queue, metrics=self.metrics, on_fatal=self._fatal,
                               # Texts that would wait past half their deadline are refused (429) on arrival.
                               max_queue_s=s.request_timeout_s / 2, workers=s.torch_workers,
                               window=s.batch_window, refill_ms=s.refill_ms)
        # One warm-up per worker thread, submitted together so that each thread of the pool runs one.
        await asyncio.gather(*(self.batcher.run_in_worker(self._warm_up) for _ in range(s.torch_workers)))
        self.explainer = ExplainLane(self.model, self._run_explaining, slots=1,
                                     siblings=self.siblings.counts(EXPLAIN_BACKLOG) if self.siblings else None,
                                     max_words=s.max_explain_words, max_texts=s.max_explain_texts,
                                     batch_tokens=s.max_batch_tokens, timeout_s=s.request_timeout_s)
        try:
            await self.explainer.calibrate(WARM_UP_TEXTS[1], run_in=self.batcher.run_in_worker)
        except Exception:  # noqa: BLE001 - a model that cannot explain still serves; admission then skips cost
            log.warning("could not time an explanation at warm-up: explain requests are admitted without a cost "
                        "estimate until one has run", exc_info=True)
        self.batcher.start()
        if s.malloc_trim_s and memory.trim_available():
            self._trimmer = asyncio.create_task(self._trim_memory(s.malloc_trim_s), name="sentiment-malloc-trim")
        self.state = "ready"
        # Logged before the mark that siblings read: the log then never shows the server ready before this process.
        log.info("ready: model %s %s on %s, %d torch worker(s); memory allocator %s", self.model.name,
                 self.model.version, self.model.device, self.settings.torch_workers, memory.allocator())
        self._mark_ready(True)
        for advice in memory.advice():
            log.warning(advice)

    async def _run_explaining(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.explain_executor, fn, *args)

    def _warm_up(self) -> None:
        self._predict([Text.of(t) for t in WARM_UP_TEXTS])  # (on a helper thread too, when a core is idle)

    def _predict(self, batch: Sequence[Text]) -> list[sentiment_model.Prediction]:
        # Tokenised here, on the torch worker that runs the batch, not on the event loop: at 64 connections
        # tokenising each request on arrival took 30% of the loop's time (py-spy), and the batch encoder
        # (Rust) releases the GIL while the loop serves HTTP. It also made refusing a request cheaper, which a
        # flood that ignores Retry-After turns into more refusals (docs/reliability.md, overload).
        encoded = self.model.encode([t.text for t in batch])
        lending = self.idle_cores.lend(min(t.arrived for t in batch)) if self.idle_cores else None
        with lending or contextlib.nullcontext() as helper:
            probabilities = self.model.predict_encoded(encoded, beside=helper)
        if helper is not None:
            self.metrics.helped_passes.inc()
        return [sentiment_model.Prediction(p, e.tokens) for p, e in zip(probabilities, encoded)]

    async def _trim_memory(self, every_s: float) -> None:
        # On the forward-pass thread, so a trim waits for the batch under way instead of competing with it.
        while True:
            await asyncio.sleep(every_s)
            started = time.monotonic()
            await self.batcher.run_in_worker(memory.trim)
            self.metrics.malloc_trim_seconds.observe(time.monotonic() - started)

    @property
    def ready(self) -> bool:
        """This process admits work."""
        return self.state == "ready" and self.batcher is not None and self.batcher.running

    @property
    def ready_to_serve(self) -> bool:
        """Readiness as probes see it: this process and, when there are several, every one of them."""
        return self.ready and (self.siblings is None or self.siblings.all_ready())

    def _mark_ready(self, ready: bool) -> None:
        self.metrics.ready.set(int(ready))
        if self.siblings is not None:
            self.siblings.mark_ready(ready)

    async def drain(self, timeout_s: float) -> bool:
        """Readiness turns 503 and nothing new is admitted; waits for every admitted text to be answered."""
        if self.state in ("starting", "ready"):
            self.state = "draining"
        self._mark_ready(False)
        if self.batcher is None:
            return True
        deadline = time.monotonic() + timeout_s
        done = await self.batcher.drain(timeout_s)
        if done:
            try:
                await asyncio.wait_for(self._explained.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                done = False
        if not done:
            log.warning("shutdown grace (%.1f s) ran out with %d texts still queued and %d requests still being "
                        "explained", timeout_s, self.batcher.queue_depth, self._explaining)
            # Their callers get 503 now rather than hang on into the server's own shutdown.
            self.batcher.abort("the shutdown grace period ran out before this text was processed")
        return done

    async def stop(self) -> None:
        if self.state != "draining":  # (the server entry point drains on SIGTERM, before the lifespan ends)
            await self.drain(self.settings.shutdown_grace_s)
        if self._trimmer is not None:
            self._trimmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trimmer
        if self.batcher is not None:
            await self.batcher.stop()
        self.explain_executor.shutdown(wait=False, cancel_futures=True)
        if self.idle_cores is not None:
            self.idle_cores.shutdown()
        if self.state != "failed":
            self.state = "stopped"

    def _fatal(self, exc: BaseException) -> None:
        self.state = "failed"
        self._mark_ready(False)
        if self._on_fatal is not None:
            self._on_fatal(exc)

    def refusal(self) -> Unavailable:
        """Why no work is admitted right now."""
        if self.state in ("starting", "failed"):
            return Unavailable(self.state)
        if self.state == "ready":  # this process is; another one on the port is still warming up
            return Unavailable("starting")
        return Unavailable("draining")

    # -- one request ----------------------------------------------------------------------------------------------

    async def classify(self, texts: list[str], deadline: float, client_gone: asyncio.Future,
                       explain: bool = False) -> Classified:
        """Results for `texts` in order, each with an `explanation` if asked, by `deadline` (time.monotonic()).

        `client_gone` completes when the client disconnects (the caller owns it). Raises the domain errors of
        `app.failures`: QueueFull, Unavailable, DeadlineExceeded, InferenceError, ExplainFailed, ClientGone."""
        if not self.ready:
            raise self.refusal()
        ticket = await self._admit_explanations(texts, deadline) if explain else None
        try:
            with self._tracking(explain):
                done = await self._classify(texts, deadline, client_gone)
                if ticket is not None:
                    # The probabilities stay those of the batched path; the explanation adds to them.
                    explanations = await self._explain(texts, client_gone, deadline)
                    for result, explanation in zip(done.results, explanations):
                        result["explanation"] = explanation
                return done
        finally:
            if ticket is not None:
                ticket.release()
                self._explain_backlog_changed()

    async def _admit_explanations(self, texts: list[str], deadline: float) -> Ticket:
        try:
            ticket = await self.explainer.admit(texts, deadline)
        except ExplainTooLarge:
            self.metrics.rejected.labels("explain_too_large").inc(len(texts))
            raise
        except ExplainBusy:
            self.metrics.rejected.labels("explain_busy").inc(len(texts))
            raise
        self._explain_backlog_changed()
        return ticket

    def _explain_backlog_changed(self) -> None:
        speed = self.explainer.speed
        self.metrics.explain_backlog_seconds.set(self.explainer.backlog / speed if speed else 0.0)

    @contextlib.contextmanager
    def _tracking(self, explain: bool) -> Iterator[None]:
        if not explain:
            yield
            return
        self._explaining += 1
        self._explained.clear()
        try:
            yield
        finally:
            self._explaining -= 1
            if not self._explaining:
                self._explained.set()

    async def _classify(self, texts: list[str], deadline: float, client_gone: asyncio.Future) -> Classified:
        try:
            jobs = self.batcher.submit([Text.of(t) for t in texts])
        except NotAdmitting:
            raise self.refusal() from None
        outcomes = await self._wait(jobs, client_gone, deadline)
        results = [self._result(o.result.positive, o.result.tokens) for o in outcomes]
        batches = {o.batch_id: o.inference_s for o in outcomes}
        return Classified(results, 1000 * max(o.queue_s for o in outcomes), 1000 * sum(batches.values()))

    async def _wait(self, jobs, client_gone: asyncio.Future, deadline: float) -> list[Outcome]:
        results = asyncio.gather(*(j.future for j in jobs))
        # Retrieve the outcome even when nobody awaits it any more, so asyncio does not warn about it.
        results.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            done, _ = await asyncio.wait({results, client_gone}, timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.batcher.abandon(jobs, "cancelled")
            raise
        if results in done:
            try:
                return results.result()
            except NotAdmitting:
                raise self.refusal() from None
        if client_gone in done:
            self.batcher.abandon(jobs, "disconnected")
            raise ClientGone
        self.batcher.abandon(jobs, "deadline")
        raise self._timeout()

    def _timeout(self) -> DeadlineExceeded:
        return DeadlineExceeded(self.settings.request_timeout_s, self.batcher.retry_after_s())

    # -- explanations -----------------------------------------------------------------------------------------------

    async def _explain(self, texts: list[str], gone: asyncio.Future, deadline: float) -> list[dict[str, Any]]:
        """The texts' explanations, on the explain lane (`app.explainer`): never on the event loop, never on a
        forward-pass worker, one request at a time on a thread of lower CPU priority."""
        work = asyncio.ensure_future(self._explain_in_lane(texts))
        try:
            done, _ = await asyncio.wait({work, gone}, timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Waiting for the lane: it never runs. Running: it stops after the chunk under way, which finishes on
            # its thread and nobody reads it.
            work.cancel()
        if work in done:
            if work.cancelled():  # its thread was shut down before it ran (shutdown grace ran out)
                raise self.refusal()
            try:
                return work.result()
            except Exception as exc:  # reported to the client with an error id, logged in full
                if not self.batcher.running:  # stopped under us (shutdown grace ran out)
                    raise self.refusal() from None
                error_id = uuid.uuid4().hex[:12]
                log.error("explaining a text failed [error_id=%s]", error_id, exc_info=exc,
                          extra={"error_id": error_id})
                self.metrics.failures.inc()
                raise ExplainFailed(error_id) from None
        if gone in done:
            raise ClientGone
        raise self._timeout()

    async def _explain_in_lane(self, texts: list[str]) -> list[dict[str, Any]]:
        async with self.explainer.slots:
            out = []
            for text in texts:
                started = time.monotonic()
                out.append(self._explanation(await self.explainer.explain(text)))
                self.metrics.explain_seconds.observe(time.monotonic() - started)
                self.metrics.explained.inc()
            return out

    @staticmethod
    def _explanation(e: Explanation) -> dict[str, Any]:
        return {"method": "occlusion",
                "words": [{"word": w.word, "start": w.start, "end": w.end, "weight": w.weight} for w in e.words],
                "explained_words": e.explained_words, "total_words": e.total_words}

    def _result(self, positive: float, tokens: int) -> dict[str, Any]:
        label = sentiment_model.label_for(positive, uncertain_below=self.settings.uncertain_below)
        return {"label": label, "probabilities": {"positive": positive, "negative": 1.0 - positive},
                # The model reads every token (model.Encoded): nothing is cut or windowed.
                "tokens": tokens, "truncated": False, "model_version": self.model.version}

