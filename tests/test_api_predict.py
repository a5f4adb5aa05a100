"""POST /predict through HTTP (the app with its lifespan): the contract, Unicode, batching and batch invariance."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from app.main import create_app

TEXTS = [
    "A wonderful, moving film with superb acting. Loved it!",
    "Boring, dull and far too long: the worst waste of an evening.",
    "It was fine.",
    "great " * 300,
    "The plot was awful but the actors were brilliant and the music was excellent.",
]
UNICODE = {
    "emoji": "Loved it 😍🎬👍🏽 — 10/10 👨‍👩‍👧",
    "rtl": "הסרט היה נהדר. الفيلم كان رائعا",
    "nul": "great\x00movie\x00",
    "combining": "Cafe\u0301 ame\u0301lie: s\u0327uperbe, Z̤͔ͧ̑̓ä͖̭̈̇lg͎̤̠ͣͯo",
    "zero_width_and_controls": "\u200b\u200d\ufeff\x07\x1b[31mred\x1b[0m",
    "cjk_and_math": "素晴らしい映画 𝕲𝖗𝖊𝖆𝖙 ∑∞",
    "only_symbols": "!!!???...",
}


def check_result(result: dict, model_version: str = "3.4.0") -> None:
    assert set(result) == {"label", "probabilities", "tokens", "truncated", "model_version"}
    p = result["probabilities"]
    assert 0 <= p["positive"] <= 1 and math.isclose(p["positive"] + p["negative"], 1, abs_tol=1e-9)
    assert result["label"] == ("positive" if p["positive"] >= 0.5 else "negative")
    assert isinstance(result["tokens"], int) and result["tokens"] >= 0
    assert result["truncated"] is False
    assert result["model_version"] == model_version


def test_one_text(client, loaded_model):
    r = client.post("/predict", json={"text": TEXTS[0]})
    assert r.status_code == 200
    result = r.json()
    check_result(result)
    expected = loaded_model.predict([TEXTS[0]])[0]
    assert result["probabilities"]["positive"] == pytest.approx(expected.positive, abs=1e-5)
    assert result["tokens"] == expected.tokens
    assert r.headers["content-type"] == "application/json"


def test_a_batch_answers_in_order(client, loaded_model):
    r = client.post("/predict", json={"texts": TEXTS})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == len(TEXTS)
    for result, expected in zip(results, loaded_model.predict(TEXTS), strict=True):
        check_result(result)
        assert result["probabilities"]["positive"] == pytest.approx(expected.positive, abs=1e-5)
        assert result["tokens"] == expected.tokens


def test_timing_and_request_id_headers(client):
    r = client.post("/predict", json={"text": "fine"}, headers={"x-request-id": "req-42.a:b"})
    assert r.headers["x-request-id"] == "req-42.a:b"
    assert float(r.headers["x-queue-time-ms"]) >= 0
    assert float(r.headers["x-inference-time-ms"]) > 0
    generated = client.post("/predict", json={"text": "fine"}).headers["x-request-id"]
    assert len(generated) == 32
    # An id that could smuggle anything into a log line or header is replaced, not echoed.
    hostile = client.post("/predict", json={"text": "fine"}, headers={"x-request-id": "a b\tc" + "x" * 200})
    assert hostile.headers["x-request-id"] != "a b\tc" + "x" * 200 and len(hostile.headers["x-request-id"]) == 32


@pytest.mark.parametrize("kind", sorted(UNICODE))
def test_any_unicode_is_valid_text(client, kind):
    r = client.post("/predict", json={"text": UNICODE[kind]})
    assert r.status_code == 200, r.text
    check_result(r.json())


def test_unicode_in_a_batch_and_raw_utf8(client):
    r = client.post("/predict", json={"texts": list(UNICODE.values())})
    assert r.status_code == 200 and len(r.json()["results"]) == len(UNICODE)
    raw = '{"text": "Magnifique émotion, שלום 😀"}'.encode()
    # The same emoji as a JSON escape pair (what ASCII-only JSON encoders send) is one valid character too.
    escaped = b'{"text": "smile \\ud83d\\ude00"}'
    for body in (raw, escaped):
        r = client.post("/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text


def test_the_longest_allowed_text_is_accepted(make_client):
    with make_client(max_text_chars=3000) as c:
        r = c.post("/predict", json={"text": "great movie. " * 230 + "x" * 10})
        assert r.status_code == 200, r.text
        assert r.json()["tokens"] > 400  # read whole: nothing is cut


def test_uncertain_label_when_configured(make_client, loaded_model):
    p = loaded_model.predict([TEXTS[2]])[0].positive
    top = max(p, 1 - p)
    with make_client(uncertain_below=min(1.0, top + 0.01)) as c:
        assert c.post("/predict", json={"text": TEXTS[2]}).json()["label"] == "uncertain"
    with make_client(uncertain_below=max(0.5001, top - 0.01)) as c:
        assert c.post("/predict", json={"text": TEXTS[2]}).json()["label"] in ("positive", "negative")


async def held_first_request(app, c, gated_model, queued: int):
    """Post "first" and hold its forward pass while `queued` more requests queue behind it; returns their tasks."""
    gated_model.batches.clear()
    gated_model.gate.clear()
    gated_model.entered.clear()
    first = asyncio.create_task(c.post("/predict", json={"text": "first"}))
    await asyncio.to_thread(gated_model.entered.wait, 10)  # the model is now busy with "first"
    rest = [asyncio.create_task(c.post("/predict", json={"text": f"text number {i}"})) for i in range(queued)]
    while app.state.service.batcher.queue_depth < queued:
        await asyncio.sleep(0.01)
    return first, rest


def test_concurrent_requests_share_forward_passes(make_settings, gated_model, asgi):
    """Requests that arrive while the model is busy leave together in the next forward pass."""
    app = create_app(make_settings(max_wait_ms=0, max_batch_size=64), model=gated_model)

    async def main():
        async with asgi(app) as c:
            first, rest = await held_first_request(app, c, gated_model, 16)
            gated_model.gate.set()
            responses = await asyncio.gather(first, *rest)
            metrics = (await c.get("/metrics")).text
            return responses, metrics

    responses, metrics = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses)
    assert [len(b) for b in gated_model.batches] == [1, 16]
    assert "sentiment_batch_size_count 2.0" in metrics
    assert "sentiment_batch_size_sum 17.0" in metrics
    assert 'sentiment_batch_size_bucket{le="16.0"} 2.0' in metrics


def test_a_client_in_a_loop_rejoins_the_batch_of_those_who_queued_while_it_was_answered(make_settings, gated_model,
                                                                                       asgi):
    """SENTIMENT_REFILL_MS: after a batch, the next one waits (briefly) for the callers it answered."""
    app = create_app(make_settings(max_wait_ms=0, refill_ms=1000), model=gated_model)

    async def main():
        async with asgi(app) as c:
            first, others = await held_first_request(app, c, gated_model, 2)
            await asyncio.sleep(1.0)  # the wait is at most a tenth of the pass just ended
            gated_model.gate.set()
            answered = await first
            again = await c.post("/predict", json={"text": "next review of the first client"})
            return [answered, again, *await asyncio.gather(*others)]

    responses = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses)
    assert [len(b) for b in gated_model.batches] == [1, 3]


def test_simultaneous_requests_on_an_idle_model_are_batched_within_max_wait(make_settings, gated_model, asgi):
    app = create_app(make_settings(max_wait_ms=200), model=gated_model)

    async def main():
        async with asgi(app) as c:
            gated_model.batches.clear()
            return await asyncio.gather(*(c.post("/predict", json={"text": t}) for t in TEXTS))

    responses = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses)
    assert len(gated_model.batches) < len(TEXTS)


@pytest.mark.parametrize("workers", [1, 2])
def test_results_are_the_same_alone_in_a_batch_request_and_batched_with_others(make_settings, loaded_model, asgi,
                                                                               workers):
    app = create_app(make_settings(max_wait_ms=100, torch_workers=workers, max_batch_size=4), model=loaded_model)

    async def main():
        async with asgi(app) as c:
            alone = [(await c.post("/predict", json={"text": t})).json()["probabilities"]["positive"] for t in TEXTS]
            batch = [r["probabilities"]["positive"]
                     for r in (await c.post("/predict", json={"texts": TEXTS})).json()["results"]]
            # Each text in its own request, all at once: they share forward passes with each other.
            together = await asyncio.gather(*(c.post("/predict", json={"text": t}) for t in reversed(TEXTS)))
            mixed = [r.json()["probabilities"]["positive"] for r in reversed(together)]
            return alone, batch, mixed

    alone, batch, mixed = asyncio.run(main())
    assert batch == pytest.approx(alone, abs=1e-5)
    assert mixed == pytest.approx(alone, abs=1e-5)


def test_texts_are_tokenised_on_the_torch_worker_that_runs_their_batch(make_client, gated_model):
    seen: list[str] = []
    inner_encode = gated_model._inner.encode

    def spy(texts):
        seen.append(threading.current_thread().name)
        return inner_encode(texts)

    gated_model.encode = spy
    with make_client(model=gated_model) as c:
        seen.clear()
        gated_model.threads.clear()
        assert c.post("/predict", json={"text": "short"}).status_code == 200
        r = c.post("/predict", json={"texts": ["a fairly long review " * 50] * 8})
        assert r.status_code == 200
        assert [x["tokens"] for x in r.json()["results"]] == [len(inner_encode([r"a fairly long review " * 50])[0].ids)] * 8
    # Never on the event loop (the thread running the app), always where the forward pass ran.
    assert seen and set(seen) == gated_model.threads and threading.main_thread().name not in seen


def _count_route_calls(app) -> list[str]:
    """A list that grows by one for each request that reaches the FastAPI route rather than the fast path."""
    from app.api.deps import get_service

    reached: list[str] = []

    async def spy():
        reached.append("route")
        return app.state.service

    app.dependency_overrides[get_service] = spy
    return reached


def _answer_without_timing(r):
    return r.status_code, r.json(), {k: v for k, v in r.headers.items()
                                     if k not in ("x-request-id", "x-queue-time-ms", "x-inference-time-ms")}


def test_plain_requests_skip_the_route_and_get_the_routes_answer(make_settings, loaded_model):
    # app.api.predict.PlainPredictPath answers plain and explain requests without FastAPI's routing; another query
    # string sends a request to the route instead, so the two answers can be compared.
    from fastapi.testclient import TestClient

    app = create_app(make_settings(), model=loaded_model)
    reached = _count_route_calls(app)
    with TestClient(app) as client:
        # The route takes any other query string: `explain=1` is the same request as `explain=true`.
        cases = [({"text": TEXTS[0]}, ""), ({"texts": TEXTS[:3]}, ""), ({"text": TEXTS[1], "explain": False}, ""),
                 ({"text": TEXTS[0], "explain": True}, ""), ({"texts": TEXTS[:2]}, "?explain=true")]
        for body, query in cases:
            fast = client.post("/predict" + query, json=body)
            assert reached == [], body
            routed = client.post("/predict" + ("?explain=1" if query else "?explain=false"), json=body)
            assert reached == ["route"], body
            reached.clear()
            assert fast.headers["x-queue-time-ms"] and fast.headers["x-inference-time-ms"]
            assert _answer_without_timing(fast) == _answer_without_timing(routed)


@pytest.mark.parametrize("case", ["invalid", "form", "api key"])
def test_everything_but_a_plain_valid_request_goes_to_the_route(make_settings, loaded_model, case):
    from fastapi.testclient import TestClient

    app = create_app(make_settings(**({"api_key": "k" * 32} if case == "api key" else {})), model=loaded_model)
    reached = _count_route_calls(app)
    headers = {"Authorization": "Bearer " + "k" * 32} if case == "api key" else {}
    with TestClient(app) as client:
        if case == "invalid":  # the route's own error answer, from the replayed body
            r = client.post("/predict", json={"text": " "})
            assert r.status_code == 422 and "blank" in r.json()["error"]["message"], r.text
        elif case == "form":
            r = client.post("/predict", content=b"text=great", headers={"Content-Type": "text/plain"})
            assert r.status_code == 415, r.text
        else:
            r = client.post("/predict", json={"text": TEXTS[0]}, headers=headers)
            assert r.status_code == 200
    assert reached == ["route"]
