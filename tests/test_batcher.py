"""The batcher on its own, with a fake model: when batches close, what they hold, and what happens on failure."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.batcher import Batcher, InferenceError, NotAdmitting, QueueFull
from app.metrics import Metrics
from model import Encoded


def enc(n: int, first: int = 2) -> Encoded:
    return Encoded(tuple(range(first, first + n)), n)


class FakeModel:
    """P(positive) is a function of the text alone, so batching can never change a result."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.spans: list[tuple[float, float]] = []  # (start, end) of each pass, time.monotonic()
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.fail_cost: int | None = None

    def predict_encoded(self, batch):
        self.batches.append([e.cost for e in batch])
        self.threads.add(threading.current_thread().name)
        start = time.monotonic()
        self.gate.wait(10)
        self.spans.append((start, time.monotonic()))
        if self.fail_cost is not None and any(e.cost == self.fail_cost for e in batch):
            raise RuntimeError("boom")
        return [e.cost / 1000 for e in batch]


def make(fake: FakeModel, **kw) -> tuple[Batcher, Metrics]:
    metrics = Metrics()
    options = {"max_batch_size": 8, "max_batch_tokens": 10_000, "max_wait_ms": 20, "max_queue": 100, **kw}
    return Batcher(fake.predict_encoded, metrics=metrics, **options), metrics


def sample(metrics: Metrics, name: str, labels: dict | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def gather_jobs(jobs):
    return await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)


async def until(condition, timeout_s: float = 10.0) -> None:
    """Yield to the event loop until `condition()` holds (set by the batcher or its worker thread); no fixed sleeps."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.001)


def test_texts_arriving_together_share_one_forward_pass():
    async def main():
        fake = FakeModel()
        b, metrics = make(fake)
        b.start()
        jobs = [j for n in (3, 1, 2) for j in b.submit([enc(n)])]
        outcomes = await gather_jobs(jobs)
        await b.stop()
        return fake, metrics, outcomes

    fake, metrics, outcomes = asyncio.run(main())
    assert fake.batches == [[1, 2, 3]]  # one pass, sorted by length
    assert [o.result for o in outcomes] == [0.003, 0.001, 0.002]  # answers go back to their own callers
    assert len({o.batch_id for o in outcomes}) == 1
    assert sample(metrics, "sentiment_batch_size_count") == 1
    assert sample(metrics, "sentiment_batch_size_sum") == 3


def test_batch_closes_at_max_batch_size():
    async def main():
        fake = FakeModel()
        b, _ = make(fake, max_batch_size=4, max_wait_ms=60_000)
        b.start()
        jobs = b.submit([enc(5)] * 10)
        # Full batches leave at once; only the last, partial one waits for company (here up to a minute).
        await until(lambda: len(fake.batches) == 2)
        partial_waiting = not any(j.future.done() for j in jobs[8:])
        await b.drain(10)
        await gather_jobs(jobs)
        await b.stop()
        return fake, partial_waiting

    fake, partial_waiting = asyncio.run(main())
    assert [len(x) for x in fake.batches] == [4, 4, 2]
    assert partial_waiting


def test_batch_closes_at_token_budget_counting_padding():
    async def main():
        fake = FakeModel()
        # 3 texts of 10 tokens fit in 30; a 4th text of 20 would make the padded cost 20 x 4 = 80 > 40.
        b, _ = make(fake, max_batch_tokens=40, max_wait_ms=50)
        b.start()
        await gather_jobs(b.submit([enc(10), enc(10), enc(10), enc(20), enc(100)]))
        await b.stop()
        return fake

    fake = asyncio.run(main())
    assert fake.batches == [[10, 10, 10], [20], [100]]  # a text over the whole budget still runs, alone


def test_idle_model_waits_max_wait_for_company_and_zero_means_at_once():
    async def timed(wait_ms: float) -> float:
        fake = FakeModel()
        b, _ = make(fake, max_wait_ms=wait_ms)
        b.start()
        started = time.monotonic()
        await asyncio.wait_for(gather_jobs(b.submit([enc(3)])), 30)
        elapsed = time.monotonic() - started
        await b.stop()
        return elapsed

    assert asyncio.run(timed(300)) >= 0.25
    # With 0 the lone text goes at once: it would otherwise wait the whole minute for company.
    assert asyncio.run(timed(0)) < 30 <= 60_000 / 1000


def test_texts_that_queued_while_the_model_was_busy_go_as_soon_as_it_is_free():
    async def main():
        fake = FakeModel()
        fake.gate.clear()
        b, _ = make(fake, max_wait_ms=0)
        b.start()
        first = b.submit([enc(1)])
        await until(lambda: fake.batches)  # the first pass is running (held)
        rest = [j for _ in range(5) for j in b.submit([enc(2)])]
        fake.gate.set()
        await gather_jobs(first + rest)
        await b.stop()
        return fake

    fake = asyncio.run(main())
    assert fake.batches == [[1], [2, 2, 2, 2, 2]]


async def held_first_pass(fake: FakeModel, b: Batcher, hold_s: float):
    """A first pass over one text that runs `hold_s`, while two more texts queue; returns (first, queued)."""
    fake.gate.clear()
    first = b.submit([enc(1)])
    await until(lambda: fake.batches)
    queued = [j for _ in range(2) for j in b.submit([enc(2)])]
    await asyncio.sleep(hold_s)  # the pass's length bounds the refill wait (a tenth of it)
    fake.gate.set()
    return first, queued


@pytest.mark.parametrize("refill_ms", [10_000, 0])
def test_after_a_batch_the_next_waits_for_its_callers_to_come_back_and_zero_means_at_once(refill_ms):
    async def main():
        fake = FakeModel()
        b, _ = make(fake, max_wait_ms=0, refill_ms=refill_ms)
        b.start()
        first, queued = await held_first_pass(fake, b, 1.0)
        await gather_jobs(first)
        again = b.submit([enc(3)])  # the caller just answered sends its next text, as a client in a loop does
        await gather_jobs(first + queued + again)
        await b.stop()
        return fake

    fake = asyncio.run(main())
    if refill_ms:  # 2 queued < 3 (those 2 + the 1 just answered): the next batch waited for the third
        assert fake.batches == [[1], [2, 2, 3]]
    else:
        assert fake.batches == [[1], [2, 2], [3]]


def test_the_refill_wait_ends_after_a_tenth_of_the_pass_when_the_callers_do_not_come_back():
    async def main():
        fake = FakeModel()
        b, _ = make(fake, max_wait_ms=0, refill_ms=10_000)
        b.start()
        first, queued = await held_first_pass(fake, b, 0.5)
        await gather_jobs(first + queued)  # nobody came back: the queued texts leave alone
        await b.stop()
        return fake

    fake = asyncio.run(main())
    assert fake.batches == [[1], [2, 2]]
    waited = fake.spans[1][0] - fake.spans[0][1]
    assert 0.045 <= waited < 5  # a tenth of the first pass (>= 0.5 s), not the 10 s of refill_ms


def test_a_deep_queue_is_cut_into_batches_of_similar_length_one_round_of_the_oldest_texts_at_a_time():
    async def run(window: int):
        fake = FakeModel()
        fake.gate.clear()
        b, _ = make(fake, max_batch_size=4, max_wait_ms=0, window=window)
        b.start()
        first = b.submit([enc(9)])
        await until(lambda: fake.batches)  # the model is busy: the rest queue up
        older = [j for n in (50, 1, 40, 2, 30, 3, 20, 4) for j in b.submit([enc(n)])]
        newer = [j for n in (100, 5, 6, 7) for j in b.submit([enc(n)])]
        fake.gate.set()
        outcomes = await gather_jobs(first + older + newer)
        await b.stop()
        return fake, outcomes

    fake, outcomes = asyncio.run(run(window=8))
    # The 8 oldest, sorted, make two batches of similar lengths; the 4 newer ones, short as most of them are,
    # wait for the next round rather than overtake the older texts.
    assert fake.batches == [[9], [1, 2, 3, 4], [20, 30, 40, 50], [5, 6, 7, 100]]
    assert [o.result for o in outcomes] == [0.009, 0.05, 0.001, 0.04, 0.002, 0.03, 0.003, 0.02, 0.004,
                                            0.1, 0.005, 0.006, 0.007]  # each answer to its own caller
    fake, _ = asyncio.run(run(window=1))  # arrival order
    assert fake.batches == [[9], [1, 2, 40, 50], [3, 4, 20, 30], [5, 6, 7, 100]]


def test_forward_pass_runs_on_one_worker_thread_not_the_event_loop():
    async def main():
        fake = FakeModel()
        b, _ = make(fake, max_batch_size=1)
        b.start()
        await gather_jobs(b.submit([enc(1)] * 3))
        await b.stop()
        return fake

    fake = asyncio.run(main())
    assert len(fake.threads) == 1
    assert next(iter(fake.threads)).startswith("sentiment-torch")


def test_abandoned_texts_are_dropped_before_the_forward_pass_and_counted():
    async def main():
        fake = FakeModel()
        fake.gate.clear()
        b, metrics = make(fake, max_wait_ms=0)
        b.start()
        busy = b.submit([enc(1)])
        await until(lambda: fake.batches)
        gone = b.submit([enc(7), enc(7)])
        late = b.submit([enc(8)])
        b.abandon(gone, "disconnected")
        b.abandon(late, "deadline")
        kept = b.submit([enc(3)])
        fake.gate.set()
        await gather_jobs(busy + kept)
        await b.stop()
        return fake, metrics

    fake, metrics = asyncio.run(main())
    assert fake.batches == [[1], [3]]
    assert sample(metrics, "sentiment_dropped_texts_total", {"reason": "disconnected"}) == 2
    assert sample(metrics, "sentiment_dropped_texts_total", {"reason": "deadline"}) == 1


def test_one_failing_text_fails_only_itself():
    async def main():
        fake = FakeModel()
        fake.fail_cost = 4
        b, metrics = make(fake)
        b.start()
        results = await gather_jobs(b.submit([enc(3), enc(4), enc(5)]))
        # The batcher survives and keeps answering.
        again = await gather_jobs(b.submit([enc(6)]))
        await b.stop()
        return results, again, metrics

    results, again, metrics = asyncio.run(main())
    assert results[0].result == 0.003 and results[2].result == 0.005
    assert isinstance(results[1], InferenceError) and len(results[1].error_id) == 12
    assert again[0].result == 0.006
    assert sample(metrics, "sentiment_inference_failures_total") == 1


def test_full_queue_refuses_whole_requests_with_a_retry_after():
    async def main():
        fake = FakeModel()
        fake.gate.clear()
        b, metrics = make(fake, max_queue=4, max_wait_ms=0)
        b.start()
        held = b.submit([enc(1)])
        await until(lambda: fake.batches)  # taken into the (held) forward pass: the queue is empty again
        queued = b.submit([enc(1)] * 3)
        with pytest.raises(QueueFull) as full:
            b.submit([enc(1)] * 2)  # 3 + 2 > 4: all or nothing
        also = b.submit([enc(1)])  # 3 + 1 fits
        fake.gate.set()
        await gather_jobs(held + queued + also)
        await b.stop()
        return full.value, metrics

    full, metrics = asyncio.run(main())
    assert 1 <= full.retry_after_s <= 60
    assert sample(metrics, "sentiment_rejected_texts_total", {"reason": "queue_full"}) == 2


def test_retry_after_follows_throughput_and_depth():
    async def main():
        b, _ = make(FakeModel())
        b._rate = 10.0  # texts per second
        b._queue.extend([None] * 45)  # type: ignore[list-item]
        return b.retry_after_s(5)

    assert asyncio.run(main()) == 5  # 50 texts at 10/s


def test_drain_answers_admitted_work_and_admits_nothing_new():
    async def main():
        fake = FakeModel()
        fake.gate.clear()
        b, _ = make(fake, max_wait_ms=60_000)  # without the drain these would wait a minute for company
        b.start()
        jobs = b.submit([enc(2)] * 3)
        drained = asyncio.create_task(b.drain(30))
        await until(lambda: not b.admitting)
        with pytest.raises(NotAdmitting):
            b.submit([enc(1)])
        fake.gate.set()
        assert await asyncio.wait_for(drained, 30)
        outcomes = await gather_jobs(jobs)
        await b.stop()
        return outcomes

    outcomes = asyncio.run(main())
    assert all(o.result == 0.002 for o in outcomes)


def test_a_dead_batcher_fails_waiting_texts_and_reports_it():
    fatal: list[BaseException] = []

    async def main():
        fake = FakeModel()
        fake.gate.clear()
        b, _ = make(fake, max_wait_ms=0)
        b._on_fatal = fatal.append
        b.start()
        first = b.submit([enc(1)])
        await until(lambda: fake.batches)
        b._take_batch = lambda: 1 / 0  # a bug in the loop itself, not in the model
        waiting = b.submit([enc(2)])
        fake.gate.set()
        results = await gather_jobs(first + waiting)
        await asyncio.sleep(0)
        admitting = b.admitting
        await b.stop()
        return results, admitting

    results, admitting = asyncio.run(main())
    assert results[0].result == 0.001
    assert isinstance(results[1], NotAdmitting)
    assert not admitting
    assert len(fatal) == 1 and isinstance(fatal[0], ZeroDivisionError)


def test_texts_that_would_wait_past_the_time_budget_are_refused_on_arrival():
    async def main():
        fake = FakeModel()
        fake.gate.clear()
        b, metrics = make(fake, max_queue=100, max_wait_ms=0, max_queue_s=2.0)
        b.start()
        first = b.submit([enc(1)])  # before any batch has run there is no throughput to judge by: admitted
        await until(lambda: fake.batches)
        b._rate = 10.0  # texts per second
        queued = b.submit([enc(1)] * 15)  # 1.5 s of work: admitted
        with pytest.raises(QueueFull) as refused:
            b.submit([enc(1)] * 6)  # 2.1 s: refused at once, though the queue has room for 100
        fake.gate.set()
        await gather_jobs(first + queued)
        await b.stop()
        return refused.value, metrics

    refused, metrics = asyncio.run(main())
    assert refused.retry_after_s == 3  # (15 + 6) / 10, rounded up
    assert sample(metrics, "sentiment_rejected_texts_total", {"reason": "queue_too_slow"}) == 6


@pytest.mark.parametrize("workers", [1, 2])
def test_model_is_loaded_warmed_and_run_only_on_the_torch_pool(make_settings, monkeypatch, workers):
    """torch ran 7x slower on a thread other than the one that loaded the model (app/torch_pool.py)."""
    import threading

    from fastapi.testclient import TestClient

    import app.service as service_module
    from app.main import create_app

    threads: list[str] = []
    real_load = service_module.sentiment_model.load_model

    def spy_load(*args, **kwargs):
        threads.append(threading.current_thread().name)
        loaded = real_load(*args, **kwargs)
        real_predict = loaded.predict_encoded

        def predict(batch, beside=None):
            threads.append(threading.current_thread().name)
            return real_predict(batch, beside)

        loaded.predict_encoded = predict
        return loaded

    monkeypatch.setattr(service_module.sentiment_model, "load_model", spy_load)
    with TestClient(create_app(make_settings(torch_workers=workers))) as client:  # the service loads the model
        assert client.post("/predict", json={"text": "great film"}).status_code == 200
    assert len(threads) >= 2 + workers  # load, a warm-up per worker, the request
    assert all(t.startswith("sentiment-torch") for t in threads), threads
    assert len(set(threads[1:1 + workers])) == workers, threads  # every worker thread was warmed up


def test_with_two_workers_two_forward_passes_run_at_once_on_different_threads():
    class Rendezvous(FakeModel):
        """Each forward pass waits until another one is running too: only parallel workers can finish."""

        def __init__(self):
            super().__init__()
            self.both = threading.Barrier(2, timeout=10)

        def predict_encoded(self, batch):
            self.both.wait()
            return super().predict_encoded(batch)

    async def main():
        fake = Rendezvous()
        b, metrics = make(fake, max_batch_size=2, max_wait_ms=0, workers=2)
        b.start()
        outcomes = await gather_jobs(b.submit([enc(1), enc(2), enc(3), enc(4)]))
        await b.stop()
        return fake, outcomes, metrics

    fake, outcomes, metrics = asyncio.run(main())
    assert [o.result for o in outcomes] == [0.001, 0.002, 0.003, 0.004]
    assert sorted(fake.batches) == [[1, 2], [3, 4]]
    assert len(fake.threads) == 2
    assert len({o.batch_id for o in outcomes}) == 2
    assert sample(metrics, "sentiment_texts_total") == 4


def test_a_batch_that_ends_with_texts_waiting_starts_the_next_one_before_its_answers_run():
    # Through the owner task the next batch would start only after the loop had run the answers just released
    # (a median 5.4 ms at 64 connections); the batch that frees its worker hands it the next batch itself.
    async def main():
        fake = FakeModel()
        fake.gate.clear()
        b, _ = make(fake, max_wait_ms=0, workers=1)
        events: list[str] = []
        lingered = 0
        real_linger, real_start = b._linger, b._start

        async def linger():
            nonlocal lingered
            lingered += 1
            await real_linger()

        def start(jobs):
            if jobs:
                events.append(f"start {[j.item.cost for j in jobs]}")
            real_start(jobs)

        b._linger, b._start = linger, start
        b.start()

        async def caller(jobs, name):
            outcomes = await gather_jobs(jobs)
            events.append(f"{name} answered")
            return outcomes

        first = asyncio.ensure_future(caller(b.submit([enc(1)]), "first"))
        await until(lambda: fake.batches)  # the first forward pass is under way (and held at the gate)
        rest = asyncio.ensure_future(caller(b.submit([enc(2), enc(3)]), "rest"))
        await asyncio.sleep(0.01)
        fake.gate.set()
        await asyncio.gather(first, rest)
        await b.stop()
        return events, lingered, fake

    events, lingered, fake = asyncio.run(main())
    assert fake.batches == [[1], [2, 3]]
    assert events == ["start [1]", "start [2, 3]", "first answered", "rest answered"]
    assert lingered == 1  # only the first batch went through the owner task


def test_with_one_worker_forward_passes_never_overlap():
    class Exclusive(FakeModel):
        def __init__(self):
            super().__init__()
            self.inside = 0
            self.most = 0

        def predict_encoded(self, batch):
            self.inside += 1
            self.most = max(self.most, self.inside)
            time.sleep(0.01)
            try:
                return super().predict_encoded(batch)
            finally:
                self.inside -= 1

    async def main():
        fake = Exclusive()
        b, _ = make(fake, max_batch_size=2, max_wait_ms=0)
        b.start()
        await gather_jobs(b.submit([enc(n) for n in range(1, 9)]))
        await b.stop()
        return fake

    fake = asyncio.run(main())
    assert len(fake.batches) >= 4 and fake.most == 1


def test_a_bug_in_a_batch_task_stops_the_batcher_and_reports_it_once():
    async def main():
        fatal: list[BaseException] = []
        fake = FakeModel()
        b, _ = make(fake, max_wait_ms=0, workers=2, on_fatal=fatal.append)
        b.start()
        b._answered = lambda count: 1 / 0  # a bug after the forward pass, in the batcher's own code
        await gather_jobs(b.submit([enc(1)]))
        await until(lambda: fatal)
        running, admitting = b.running, b.admitting
        with pytest.raises(NotAdmitting):
            b.submit([enc(2)])
        await b.stop()
        return fatal, running, admitting

    fatal, running, admitting = asyncio.run(main())
    assert len(fatal) == 1 and isinstance(fatal[0], ZeroDivisionError)
    assert not running and not admitting
