"""Health probes, the model card and the metrics, through HTTP."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from app.main import create_app


def test_live_is_always_200(client):
    r = client.get("/health/live")
    assert r.status_code == 200 and r.json() == {"status": "alive"}


def test_ready_turns_200_only_once_started_and_503_again_on_shutdown(make_settings, loaded_model):
    app = create_app(make_settings(), model=loaded_model)
    seen = []

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            seen.append((await c.get("/health/ready")).status_code)
            seen.append((await c.get("/health/live")).status_code)
            async with app.router.lifespan_context(app):
                seen.append((await c.get("/health/ready")).status_code)
                await app.state.service.drain(1)
                seen.append((await c.get("/health/ready")).status_code)
                seen.append((await c.get("/health/live")).status_code)
            seen.append((await c.get("/health/ready")).status_code)

    asyncio.run(main())
    assert seen == [503, 200, 200, 503, 200, 503]


def test_the_lifespan_loads_the_model_itself_when_none_is_given(make_settings):
    # No model handed in: the lifespan loads it from SENTIMENT_MODEL_DIR (what TestClient users get).
    from fastapi.testclient import TestClient

    app = create_app(make_settings(lstm_dtype="float32"))
    with TestClient(app) as c:
        assert c.get("/health/ready").status_code == 200
        assert c.post("/predict", json={"text": "ok"}).status_code == 200
        assert c.get("/model").json()["lstm_dtype"] == "float32"  # as SENTIMENT_LSTM_DTYPE asked


def test_the_model_card(client, loaded_model):
    r = client.get("/model")
    assert r.status_code == 200
    card = r.json()
    for key in ("name", "version", "labels", "architecture", "temperature", "metrics", "truncation", "lstm_dtype"):
        assert card[key] == loaded_model.card()[key], key
    assert card["device"] == "cpu"
    assert card["metrics"]["training"]["data"]  # where the training data came from
    assert "validation" in card["metrics"]
    assert card["batching"] == {"max_batch_size": 64, "max_batch_tokens": 32768, "max_wait_ms": 0.0,
                                "batch_window": 256, "refill_ms": 3.0, "max_queue": 1024}
    assert card["limits"]["max_text_chars"] == 20000 and card["limits"]["max_batch_texts"] == 64
    assert card["limits"]["max_tokens"] is None


def test_metrics_count_requests_by_status_and_batches(client):
    client.post("/predict", json={"text": "good"})
    client.post("/predict", json={"texts": ["good", "bad"]})
    client.post("/predict", json={"text": ""})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'sentiment_requests_total{status="200"} 2.0' in text
    assert 'sentiment_requests_total{status="422"} 1.0' in text
    assert "sentiment_batch_size_count 2.0" in text
    assert "sentiment_batch_size_sum 3.0" in text
    for name in ("sentiment_queue_seconds_bucket", "sentiment_inference_seconds_bucket", "sentiment_queue_depth 0.0",
                 "sentiment_dropped_texts_total", "sentiment_ready 1.0", "sentiment_request_seconds_count 3.0"):
        assert name in text, name


def test_a_client_that_disconnects_while_queued_is_dropped_and_counted(make_settings, gated_model):
    app = create_app(make_settings(max_wait_ms=0), model=gated_model)

    async def call(body: bytes, disconnect: asyncio.Event) -> list[dict]:
        sent: list[dict] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
                 "root_path": "", "headers": [(b"content-type", b"application/json"),
                                               (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("t", 80)}
        await app(scope, receive, send)
        return sent

    async def main():
        async with app.router.lifespan_context(app):
            gated_model.gate.clear()
            gated_model.entered.clear()
            stays, leaves = asyncio.Event(), asyncio.Event()
            busy = asyncio.create_task(call(b'{"text": "held"}', stays))
            await asyncio.to_thread(gated_model.entered.wait, 10)
            gone = asyncio.create_task(call(b'{"texts": ["bye", "bye now"]}', leaves))
            while app.state.service.batcher.queue_depth < 2:
                await asyncio.sleep(0.01)
            leaves.set()  # the client hangs up while its texts wait
            await gone
            gated_model.gate.set()
            first = await busy
            for _ in range(250):
                if app.state.service.batcher.queue_depth == 0:
                    break
                await asyncio.sleep(0.02)
            return first, app.state.metrics.render().decode()

    first, metrics = asyncio.run(main())
    assert first[0]["status"] == 200
    assert 'sentiment_dropped_texts_total{reason="disconnected"} 2.0' in metrics
    assert len(gated_model.batches) == 2  # the warm-up and "held": the departed texts never ran


def test_a_dead_batcher_turns_readiness_503_and_asks_the_process_to_stop(make_settings, loaded_model, asgi):
    fatal: list[BaseException] = []
    app = create_app(make_settings(max_wait_ms=0), model=loaded_model, on_fatal=fatal.append)

    async def main():
        async with asgi(app) as c:
            assert (await c.get("/health/ready")).status_code == 200
            batcher = app.state.service.batcher
            batcher._take_batch = lambda: 1 / 0  # a bug in the batcher's own loop
            answer = await c.post("/predict", json={"text": "hello"})
            return answer, await c.get("/health/ready"), await c.post("/predict", json={"text": "again"})

    answer, ready, again = asyncio.run(main())
    assert answer.status_code == 503 and ready.status_code == 503 and again.status_code == 503
    assert len(fatal) == 1 and isinstance(fatal[0], ZeroDivisionError)
    assert 'sentiment_ready 0.0' in app.state.metrics.render().decode()


def test_the_entry_point_exits_non_zero_when_the_batcher_dies():
    import uvicorn

    from app.__main__ import EXIT_FATAL, DrainingServer

    server = DrainingServer(uvicorn.Config(app=None), service=None)
    server.on_fatal(RuntimeError("batcher died"))
    assert server.should_exit and isinstance(server.fatal_error, RuntimeError)
    assert EXIT_FATAL != 0


def test_every_request_is_logged_once_with_its_id_status_and_latency(client, caplog):
    caplog.set_level("INFO", logger="app.access")
    client.post("/predict", json={"text": "fine"}, headers={"x-request-id": "log-me-1"})
    client.post("/predict", json={"text": ""}, headers={"x-request-id": "log-me-2"})
    lines = [r.getMessage() for r in caplog.records if r.name == "app.access"]
    ok = [line for line in lines if "request_id=log-me-1" in line]
    bad = [line for line in lines if "request_id=log-me-2" in line]
    assert len(ok) == 1 and ok[0].startswith("POST /predict 200 ") and "queue_ms=" in ok[0]
    assert len(bad) == 1 and bad[0].startswith("POST /predict 422 ")


def test_cors_is_off_by_default_and_allows_configured_origins(client, make_client):
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    assert "access-control-allow-origin" not in client.options("/predict", headers=preflight).headers
    with make_client(cors_origins=["https://app.example"]) as c:
        r = c.options("/predict", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = c.post("/predict", json={"text": "hi"}, headers={"origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        other = c.options("/predict", headers={**preflight, "origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_the_shipped_model_through_http(shipped_artifact, make_client):
    import model

    with make_client(model=model.load_model(shipped_artifact, "cpu"), model_dir=shipped_artifact) as c:
        r = c.post("/predict", json={"texts": ["A wonderful, moving film. I loved it.",
                                               "Dreadful. Two hours I will never get back."]})
        assert r.status_code == 200
        assert [x["label"] for x in r.json()["results"]] == ["positive", "negative"]
        assert c.get("/model").json()["metrics"]["test"]


def test_freed_heap_memory_is_returned_to_the_os_periodically_between_forward_passes(make_client):
    from app import memory

    if not memory.trim_available():
        pytest.skip("this C library has no malloc_trim (not glibc)")
    with make_client(malloc_trim_s=0.05) as client:
        assert client.post("/predict", json={"text": "A fine film."}).status_code == 200
        deadline = time.monotonic() + 5
        count = 0.0
        while time.monotonic() < deadline and count < 2:
            time.sleep(0.1)
            text = client.get("/metrics").text
            count = float(re.search(r"^sentiment_malloc_trim_seconds_count (\S+)$", text, re.M).group(1))
        assert count >= 2
    with make_client(malloc_trim_s=0) as client:
        time.sleep(0.2)
        assert re.search(r"^sentiment_malloc_trim_seconds_count 0\.0$", client.get("/metrics").text, re.M)
