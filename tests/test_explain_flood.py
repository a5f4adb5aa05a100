"""An explain flood against a real server process (`bench/explain_flood.py`, smaller): explain requests are
answered or refused at once, never left to run into a 504, and plain requests keep being answered beside them.
The latency targets are the benchmark's (docs/reliability.md); here plain requests must not starve."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from bench.explain_flood import flood

pytestmark = pytest.mark.slow

# The smoke model's vocabulary (model.training.smoke.smoke_corpus), in texts near the 20,000-character limit.
WORDS = ("great wonderful superb brilliant loved moving excellent fun awful boring terrible worst waste dull stupid "
         "bad the movie film plot actor scene story it was and a of this i with").split()


def long_text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:chars]


def test_an_explain_flood_gets_answers_or_quick_refusals_and_plain_requests_keep_flowing(start_server):
    rng = random.Random(0)
    huge = [long_text(rng, 19_000) for _ in range(16)]  # seconds of explaining each, even for the smoke model
    long_texts = [long_text(rng, 2_000) for _ in range(32)]  # a tenth of a second or so each
    plain_texts = [long_text(rng, 400) for _ in range(32)]
    server = start_server(SENTIMENT_REQUEST_TIMEOUT_S="3", SENTIMENT_LOG_LEVEL="warning")
    server.wait_ready()

    # A request that could never be explained within the deadline is refused at once, before any work.
    started = time.monotonic()
    doomed = httpx.post(server.url + "/predict?explain=true", json={"texts": huge}, timeout=30)
    refused_after = time.monotonic() - started
    assert doomed.status_code == 413, doomed.text
    assert doomed.json()["error"]["code"] == "explain_too_large"
    assert refused_after < 1.0, refused_after

    phase = asyncio.run(flood(server.url, long_texts, {"short": plain_texts}, clients=6, per_request=2, seconds=6))
    statuses = phase["explain"]["statuses"]
    assert set(statuses) <= {"200", "413", "429"}, statuses  # never a 504
    assert statuses.get("200", 0) > 0 and statuses.get("429", 0) > 0, statuses
    assert phase["explain"]["429_without_retry_after"] == 0
    assert phase["explain"]["slowest_refusal_s"] < 1.0, phase["explain"]
    plain = phase["plain"]["short"]
    assert plain["non_200"] == 0 and plain["requests"] >= 20, plain
    assert plain["p99_ms"] < 1000, plain
    metrics = httpx.get(server.url + "/metrics").text
    assert 'sentiment_rejected_texts_total{reason="explain_busy"}' in metrics
    assert server.stop() == 0
