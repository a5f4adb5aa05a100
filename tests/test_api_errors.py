"""Every way a request can fail: the status, the error body's shape, and a message that says what to fix."""

from __future__ import annotations

import asyncio
import re

import pytest

from app.main import create_app

SECRETS = re.compile(r"Traceback|File \"|/work/|\.py\b|site-packages")


def check_error(r, status: int, code: str, message: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert error["code"] == code
    assert error["request_id"] == r.headers["x-request-id"]
    assert not SECRETS.search(r.text), r.text
    if message is not None:
        assert re.search(message, error["message"]), error["message"]
    return error


INVALID = [
    ({"text": ""}, r"^text is empty"),
    ({"text": "  \n\t\u3000"}, r"^text is blank"),
    ({}, r'no "text" or "texts" field'),
    ({"txt": "typo"}, r'no "text" or "texts" field \(unknown field "txt"\)'),
    ({"text": "a", "texts": ["b"]}, r'either "text" .* or "texts" .*, not both'),
    ({"text": "ok", "lang": "en"}, r'unknown field "lang"'),
    ({"text": None}, r"^text must be a string, not null"),
    ({"text": 5}, r"^text must be a string, not a number"),
    ({"text": True}, r"^text must be a string, not a boolean"),
    ({"text": ["a"]}, r"^text must be a string, not a list"),
    ({"texts": None}, r"^texts must be a list of strings, not null"),
    ({"texts": "one"}, r"^texts must be a list of strings, not a string"),
    ({"texts": []}, r"^texts is empty: send at least one text"),
    ({"texts": ["ok", ""]}, r"^texts\[1\] is empty"),
    ({"texts": ["ok", " "]}, r"^texts\[1\] is blank"),
    ({"texts": ["ok", 3, None]}, r"^texts\[1\] must be a string, not a number; texts\[2\] must be a string, not null"),
    ({"texts": [["nested"]]}, r"^texts\[0\] must be a string, not a list"),
    ({"texts": ["a"] * 5}, r"^texts has 5 texts; the limit is 4"),
    ({"text": "x" * 101}, r"^text has 101 characters; the limit is 100"),
    ({"texts": ["ok", "y" * 150]}, r"^texts\[1\] has 150 characters; the limit is 100"),
    ([{"text": "a"}], r"must be a JSON object, not a list"),
    ("just a string", r"must be a JSON object, not a string"),
    (42, r"must be a JSON object, not a number"),
    (None, r"the body is empty or null"),
]


@pytest.fixture
def small(make_client):
    with make_client(max_text_chars=100, max_batch_texts=4, max_body_bytes=1000) as c:
        yield c


@pytest.mark.parametrize("body, message", INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_bodies_are_422_saying_what_to_fix(small, body, message):
    check_error(small.post("/predict", json=body), 422, "invalid_request", message)


@pytest.mark.parametrize("raw, message", [
    (b'{"text": ', r"not valid JSON \(Expecting value at character 9\)"),
    (b'{"text": "unterminated}', r"not valid JSON"),
    (b"{'text': 'single quotes'}", r"not valid JSON"),
    (b'{"text": "a"} trailing', r"not valid JSON \(Extra data"),
])
def test_broken_json_is_400(small, raw, message):
    r = small.post("/predict", content=raw, headers={"content-type": "application/json"})
    check_error(r, 400, "invalid_json", message + r'.*send \{"text"')


@pytest.mark.parametrize("raw", [b'{"text": "caf\xe9"}', b'{"text": "\xff\xfe"}', b'\xc3{"text": "a"}'])
def test_invalid_utf8_is_400(small, raw):
    r = small.post("/predict", content=raw, headers={"content-type": "application/json"})
    check_error(r, 400, "invalid_encoding", r"not valid UTF-8 \(byte 0x[0-9a-f]{2} at offset \d+\)")


@pytest.mark.parametrize("raw", [b'{"text": "\\ud800"}', b'{"texts": ["ok", "half an emoji \\ude00"]}'])
def test_unpaired_surrogates_are_422(small, raw):
    r = small.post("/predict", content=raw, headers={"content-type": "application/json"})
    check_error(r, 422, "invalid_request", r"unpaired UTF-16 surrogate")


@pytest.mark.parametrize("headers", [{"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"},
                                     {}])
def test_a_body_not_sent_as_json_is_415(small, headers):
    r = small.post("/predict", content=b'{"text": "fine"}', headers=headers)
    check_error(r, 415, "unsupported_media_type", r"Content-Type: application/json")


def test_json_with_a_charset_or_a_json_suffix_type_is_fine(small):
    for ctype in ("application/json; charset=utf-8", "application/vnd.api+json"):
        assert small.post("/predict", content=b'{"text": "fine"}', headers={"content-type": ctype}).status_code == 200


def test_a_body_over_the_limit_is_413_from_content_length(small):
    r = small.post("/predict", json={"texts": ["z" * 90] * 12})
    check_error(r, 413, "body_too_large", r"larger than the limit of 1000 bytes \(SENTIMENT_MAX_BODY_BYTES\)")
    assert r.headers["connection"] == "close"


def test_a_streamed_body_is_refused_once_it_passes_the_limit(make_settings, loaded_model, asgi):
    app = create_app(make_settings(max_body_bytes=1000), model=loaded_model)
    sent = []

    async def chunks():  # no Content-Length: the size is only known by counting
        for _ in range(100):
            sent.append(1)
            yield b"x" * 100

    async def main():
        async with asgi(app) as c:
            return await c.post("/predict", content=chunks(), headers={"content-type": "application/json"})

    check_error(asyncio.run(main()), 413, "body_too_large")
    assert len(sent) < 20  # refused while it streamed in, not after reading it all


def test_unknown_route_and_wrong_method(client):
    check_error(client.get("/nope"), 404, "not_found", r"no such endpoint: /nope; .*/docs")
    r = client.get("/predict")
    check_error(r, 405, "method_not_allowed", r"/predict does not accept GET; use POST")
    assert r.headers["allow"] == "POST"


def test_queue_full_is_429_with_retry_after(make_settings, gated_model, asgi):
    app = create_app(make_settings(max_queue=2, max_batch_texts=2, max_wait_ms=0), model=gated_model)

    async def main():
        async with asgi(app) as c:
            gated_model.gate.clear()
            gated_model.entered.clear()
            busy = asyncio.create_task(c.post("/predict", json={"text": "held in the forward pass"}))
            await asyncio.to_thread(gated_model.entered.wait, 10)
            queued = asyncio.create_task(c.post("/predict", json={"text": "waiting"}))
            while app.state.service.batcher.queue_depth < 1:
                await asyncio.sleep(0.01)
            refused = await c.post("/predict", json={"texts": ["one", "two"]})  # 1 + 2 > 2
            gated_model.gate.set()
            return refused, await busy, await queued

    refused, busy, queued = asyncio.run(main())
    check_error(refused, 429, "queue_full", r"at capacity \(1 texts waiting\): retry after \d+ s")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert busy.status_code == queued.status_code == 200


def test_deadline_is_504_and_the_text_is_never_computed(make_settings, gated_model, asgi):
    app = create_app(make_settings(request_timeout_s=0.3, max_wait_ms=0), model=gated_model)

    async def main():
        async with asgi(app) as c:
            gated_model.gate.clear()
            gated_model.entered.clear()
            busy = asyncio.create_task(c.post("/predict", json={"text": "held"}))
            await asyncio.to_thread(gated_model.entered.wait, 10)
            late = await c.post("/predict", json={"text": "too late"})
            gated_model.gate.set()
            await busy
            # The abandoned text is dropped when the batcher next looks at its queue (after the held pass).
            for _ in range(250):
                metrics = (await c.get("/metrics")).text
                if 'reason="deadline"} 1.0' in metrics:
                    break
                await asyncio.sleep(0.02)
            return late, metrics

    late, metrics = asyncio.run(main())
    check_error(late, 504, "timeout", r"no answer within SENTIMENT_REQUEST_TIMEOUT_S=0.3 s")
    assert 'sentiment_dropped_texts_total{reason="deadline"} 1.0' in metrics, metrics


def test_a_failing_text_is_500_with_an_error_id_and_fails_only_itself(make_settings, gated_model, asgi, caplog):
    gated_model.fail_if = lambda e: e.tokens == 3  # "poison pill text" tokenises to more than 3 in the smoke model
    target = next(t for t in ("bad apple x", "one two three", "a b c") if len(gated_model.encode([t])[0].ids) == 3)
    gated_model.fail_if = lambda e: e.ids == tuple(gated_model.encode([target])[0].ids)
    app = create_app(make_settings(max_wait_ms=100), model=gated_model)

    async def main():
        async with asgi(app) as c:
            return await asyncio.gather(c.post("/predict", json={"text": "a fine film"}),
                                        c.post("/predict", json={"text": target}),
                                        c.post("/predict", json={"texts": ["ok", "also ok"]}))

    ok, bad, batch = asyncio.run(main())
    assert ok.status_code == batch.status_code == 200
    error = check_error(bad, 500, "inference_failed", r"error id [0-9a-f]{12}")
    error_id = re.search(r"error id ([0-9a-f]{12})", error["message"]).group(1)
    assert any(error_id in r.getMessage() for r in caplog.records)


def test_an_unexpected_exception_is_a_json_500_without_internals(client, caplog):
    async def broken_classify(*args, **kwargs):
        raise KeyError("/secret/path/to/something.py")

    client.app.state.service.classify = broken_classify  # a bug on the event loop, outside any forward pass
    r = client.post("/predict", json={"text": "anything"}, headers={"x-request-id": "trace-me"})
    error = check_error(r, 500, "internal_error", r"internal error; quote the request id")
    assert error["request_id"] == "trace-me"
    assert "secret" not in r.text
    assert any("trace-me" in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_not_ready_before_startup_is_503(make_settings, loaded_model, asgi):
    import httpx

    app = create_app(make_settings(), model=loaded_model)

    async def main():  # no lifespan: the model has not been warmed up and no batcher runs
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post("/predict", json={"text": "hi"}), await c.get("/health/ready")

    predict, ready = asyncio.run(main())
    check_error(predict, 503, "not_ready", r"still loading")
    check_error(ready, 503, "not_ready")
    assert predict.headers["retry-after"] == "5"


def test_shutting_down_is_503(make_settings, loaded_model, asgi):
    app = create_app(make_settings(), model=loaded_model)

    async def main():
        async with asgi(app) as c:
            await app.state.service.drain(1)
            return await c.post("/predict", json={"text": "hi"}), await c.get("/health/ready")

    predict, ready = asyncio.run(main())
    check_error(predict, 503, "shutting_down", r"shutting down")
    check_error(ready, 503, "shutting_down")

