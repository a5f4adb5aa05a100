"""The docs match the code: every documented status code of every route is produced by a real request (and
nothing undocumented is), responses match their documented schemas, and /docs and /redoc are self-hosted."""

from __future__ import annotations

import asyncio
import re

import httpx
import jsonschema_rs
import pytest

from app.main import create_app

KEY = "docs-test-key-0123456789abcdef"
AUTH = {"authorization": f"Bearer {KEY}"}
JSON = {"content-type": "application/json"}


async def held(c, gated, app, request, *, fill_queue: int = 0):
    """Run `request` while the model is held in a forward pass (and `fill_queue` texts wait behind it)."""
    gated.gate.clear()
    gated.entered.clear()
    busy = asyncio.create_task(c.post("/predict", json={"text": "hold"}, headers=AUTH))
    await asyncio.to_thread(gated.entered.wait, 10)
    waiting = [asyncio.create_task(c.post("/predict", json={"text": "wait"}, headers=AUTH)) for _ in range(fill_queue)]
    while app.state.service.batcher.queue_depth < fill_queue:
        await asyncio.sleep(0.01)
    try:
        return await request()
    finally:
        gated.gate.set()
        await asyncio.gather(busy, *waiting)


def _fail_next(gated, c):
    gated.fail_if = lambda e: True

    async def go():
        try:
            return await c.post("/predict", json={"text": "boom"}, headers=AUTH)
        finally:
            gated.fail_if = lambda e: False

    return go()


async def _trickle(c):
    async def body():  # the client stops half-way through its body
        yield b'{"text": '
        await asyncio.sleep(10)
        yield b'"late"}'

    return await c.post("/predict", content=body(), headers={**AUTH, **JSON})


# (path, method, status) -> how to get that answer. `c` has the app running; `cold` reaches the same kind of app
# before its lifespan has started.
SCENARIOS = {
    ("/predict", "post", 200): lambda c, **_: c.post("/predict", json={"text": "fine"}, headers=AUTH),
    ("/predict", "post", 400): lambda c, **_: c.post("/predict", content=b"{", headers={**AUTH, **JSON}),
    ("/predict", "post", 401): lambda c, **_: c.post("/predict", json={"text": "fine"}),
    ("/predict", "post", 408): lambda c, **_: _trickle(c),
    ("/predict", "post", 413): lambda c, **_: c.post("/predict", json={"texts": ["x" * 90] * 30}, headers=AUTH),
    ("/predict", "post", 415): lambda c, **_: c.post("/predict", content=b'{"text": "a"}',
                                                     headers={**AUTH, "content-type": "text/plain"}),
    ("/predict", "post", 422): lambda c, **_: c.post("/predict", json={"text": " "}, headers=AUTH),
    ("/predict", "post", 429): lambda c, gated, app, **_: held(
        c, gated, app, lambda: c.post("/predict", json={"texts": ["a", "b", "c"]}, headers=AUTH), fill_queue=2),
    ("/predict", "post", 500): lambda c, gated, **_: _fail_next(gated, c),
    ("/predict", "post", 503): lambda cold, **_: cold.post("/predict", json={"text": "early"}, headers=AUTH),
    ("/predict", "post", 504): lambda c, gated, app, **_: held(
        c, gated, app, lambda: c.post("/predict", json={"text": "late"}, headers=AUTH)),
    ("/model", "get", 200): lambda c, **_: c.get("/model", headers=AUTH),
    ("/model", "get", 401): lambda c, **_: c.get("/model", headers={"authorization": "Bearer nope"}),
    ("/model", "get", 503): lambda cold_unloaded, **_: cold_unloaded.get("/model", headers=AUTH),
    ("/health/live", "get", 200): lambda c, **_: c.get("/health/live"),
    ("/health/ready", "get", 200): lambda c, **_: c.get("/health/ready"),
    ("/health/ready", "get", 503): lambda cold, **_: cold.get("/health/ready"),
    ("/metrics", "get", 200): lambda c, **_: c.get("/metrics"),
}


def settings_for_docs(make_settings):
    return make_settings(api_key=KEY, max_text_chars=100, max_batch_texts=4, max_queue=4, max_body_bytes=1000,
                         max_wait_ms=0, request_timeout_s=2.0, read_timeout_s=0.5)


@pytest.fixture
def openapi(make_settings, loaded_model) -> dict:
    return create_app(settings_for_docs(make_settings), model=loaded_model).openapi()


def documented(openapi: dict) -> set[tuple[str, str, int]]:
    return {(path, method, int(status)) for path, ops in openapi["paths"].items() for method, op in ops.items()
            for status in op["responses"]}


def test_every_documented_status_has_a_scenario_and_nothing_else_is_claimed(openapi):
    assert documented(openapi) == set(SCENARIOS)


def test_every_documented_status_is_what_the_route_returns_and_matches_its_schema(make_settings, loaded_model,
                                                                                   gated_model, openapi):
    settings = settings_for_docs(make_settings)
    app = create_app(settings, model=gated_model)
    cold_app = create_app(settings, model=loaded_model)  # never started: not ready
    unloaded_app = create_app(settings)  # never started, and no model loaded yet

    async def main():
        results = {}
        transport = httpx.ASGITransport
        async with app.router.lifespan_context(app), \
                httpx.AsyncClient(transport=transport(app=app), base_url="http://t") as c, \
                httpx.AsyncClient(transport=transport(app=cold_app), base_url="http://t") as cold, \
                httpx.AsyncClient(transport=transport(app=unloaded_app), base_url="http://t") as cold_unloaded:
            for key, scenario in SCENARIOS.items():
                results[key] = await scenario(c=c, cold=cold, cold_unloaded=cold_unloaded, gated=gated_model,
                                              app=app)
        return results

    results = asyncio.run(main())
    for (path, method, status), response in results.items():
        assert response.status_code == status, (path, method, status, response.text)
        doc = openapi["paths"][path][method]["responses"][str(status)]
        media = response.headers["content-type"].split(";")[0]
        assert media in doc["content"], (path, status, media)
        for header in doc.get("headers", {}):
            assert header.lower() in response.headers, (path, status, header)
        schema = doc["content"][media]["schema"]
        if media == "application/json":
            validator = jsonschema_rs.validator_for({**schema, "components": openapi["components"]})
            errors = [e.message for e in validator.iter_errors(response.json())]
            assert not errors, (path, status, errors, response.text)


def test_every_route_field_and_status_is_described_with_examples(openapi):
    for path, ops in openapi["paths"].items():
        for method, op in ops.items():
            assert op.get("description") or op.get("summary"), (path, method)
            for status, response in op["responses"].items():
                assert response.get("description"), (path, method, status)
                content = response.get("content", {})
                has_example = any("example" in m or "examples" in m for m in content.values())
                schema_ref = any("$ref" in m.get("schema", {}) for m in content.values())
                assert has_example or schema_ref, (path, method, status)
    for name, schema in openapi["components"]["schemas"].items():
        for field, prop in schema.get("properties", {}).items():
            described = prop.get("description") or prop.get("examples") or prop.get("example")
            assert described, f"{name}.{field} has neither a description nor examples"


def test_the_request_schema_states_the_configured_limits(openapi):
    schemas = openapi["components"]["schemas"]
    text = schemas["TextRequest"]["properties"]["text"]
    assert (text["minLength"], text["maxLength"]) == (1, 100)
    texts = schemas["TextsRequest"]["properties"]["texts"]
    assert (texts["minItems"], texts["maxItems"], texts["items"]["maxLength"]) == (1, 4, 100)
    assert schemas["TextRequest"]["additionalProperties"] is False
    examples = openapi["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == {"one", "batch", "explain"}


def test_docs_and_redoc_are_served_from_the_app_itself(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    redoc = client.get("/redoc")
    assert redoc.status_code == 200
    for page in (docs.text, redoc.text):
        external = re.findall(r"""(?:src|href)=["'](https?:)?//""", page)
        assert not external, external
    for asset in re.findall(r"""(?:src|href)=["'](/static/[^"']+)""", docs.text + redoc.text):
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 100, asset
    bundle = client.get("/static/swagger-ui/swagger-ui-bundle.js").text
    assert re.search(r'PACKAGE_VERSION:"5\.\d+\.\d+"', bundle), "Swagger UI 5 is needed to read OpenAPI 3.1"
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
