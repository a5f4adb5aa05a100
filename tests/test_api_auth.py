"""SENTIMENT_API_KEY: /predict and /model need `Authorization: Bearer <key>`; probes, metrics and docs stay open."""

from __future__ import annotations

import hmac
import re

import pytest

KEY = "k3y-with-enough-entropy-0123456789"


@pytest.fixture
def keyed(make_client):
    with make_client(api_key=KEY) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.mark.parametrize("headers, message", [
    ({}, r"needs the API key: send the header `Authorization: Bearer <key>`"),
    (bearer("wrong-key"), r"the API key is wrong"),
    (bearer(KEY[:-1]), r"the API key is wrong"),
    (bearer(KEY + "x"), r"the API key is wrong"),
    ({"authorization": f"Basic {KEY}"}, r"needs the API key"),
    ({"authorization": KEY}, r"needs the API key"),
    ({"x-api-key": KEY}, r"needs the API key"),
])
def test_predict_and_model_refuse_without_the_right_key(keyed, headers, message):
    for r in (keyed.post("/predict", json={"text": "hi"}, headers=headers), keyed.get("/model", headers=headers)):
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        error = r.json()["error"]
        assert error["code"] == "unauthorized" and re.search(message, error["message"])
        assert KEY not in r.text


def test_the_right_key_is_accepted(keyed):
    assert keyed.post("/predict", json={"text": "hi"}, headers=bearer(KEY)).status_code == 200
    assert keyed.get("/model", headers=bearer(KEY)).status_code == 200
    assert keyed.post("/predict", json={"text": "hi"}, headers={"authorization": f"bearer {KEY}"}).status_code == 200


def test_probes_metrics_and_docs_stay_open(keyed):
    for path in ("/health/live", "/health/ready", "/metrics", "/docs", "/redoc", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path


def test_the_key_is_compared_in_constant_time(keyed, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("app.api.deps.hmac.compare_digest", spy)
    keyed.post("/predict", json={"text": "hi"}, headers=bearer("guess"))
    assert calls == [(b"guess", KEY.encode())]


def test_without_a_key_nothing_asks_for_one(client):
    assert client.post("/predict", json={"text": "hi"}).status_code == 200
    assert client.get("/model").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "401" not in schema["paths"]["/predict"]["post"]["responses"]
    assert "security" not in schema["paths"]["/predict"]["post"]


def test_the_openapi_document_declares_the_bearer_scheme_when_a_key_is_set(keyed):
    schema = keyed.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["APIKey"] == {
        "type": "http", "scheme": "bearer",
        "description": "The key set in SENTIMENT_API_KEY, sent as `Authorization: Bearer <key>`."}
    for path, method in (("/predict", "post"), ("/model", "get")):
        assert schema["paths"][path][method]["security"] == [{"APIKey": []}]
        assert "401" in schema["paths"][path][method]["responses"]
    assert "security" not in schema["paths"]["/health/ready"]["get"]
