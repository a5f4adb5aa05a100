"""Health probes, the model card and the metrics, through HTTP."""

from __future__ import annotations

import asyncio

import httpx

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


def test_ready_is_503_when_the_lifespan_loads_a_model_and_200_after(make_settings):
    # No model handed in: the lifespan loads it from SENTIMENT_MODEL_DIR (what TestClient users get).
    from fastapi.testclient import TestClient

    app = create_app(make_settings())
    with TestClient(app) as c:
        assert c.get("/health/ready").status_code == 200
        assert c.post("/predict", json={"text": "ok"}).status_code == 200


def test_the_model_card(client, loaded_model):
    r = client.get("/model")
    assert r.status_code == 200
    card = r.json()
    for key in ("name", "version", "labels", "architecture", "temperature", "metrics", "truncation"):
        assert card[key] == loaded_model.card()[key], key
    assert card["device"] == "cpu"
    assert card["metrics"]["training"]["data"]  # where the training data came from
    assert "validation" in card["metrics"]
    assert card["batching"] == {"max_batch_size": 64, "max_batch_tokens": 32768, "max_wait_ms": 2.0,
                                "max_queue": 1024}
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
