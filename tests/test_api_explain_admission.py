"""Explain requests admitted by cost (app/explainer.py): refused at once when they could never finish in time
(413) or not behind the explanations already admitted (429), the most texts per request, and the limits in
GET /model and the OpenAPI page, and a stale speed measured again before admitting. The lane's speed is set by hand
here, so the verdicts do not depend on how fast this machine is; tests/test_explain_flood.py floods a real server
with its measured speed."""

from __future__ import annotations

import asyncio
import math
import time

from test_api_explain import TEXTS, Recording

from app.explainer import STALE_S
from app.main import create_app
from app.processes import SharedCounts
from model.explain import explain_cost

LONG = " ".join(["the plot was dull but the actors were brilliant and the music was excellent"] * 40)


def service_of(client):
    return client.app.state.service


def assume_speed(lane, seconds_per_text: float) -> None:
    """Set the lane's speed to `seconds_per_text` for LONG, as if just measured (so no probe replaces it)."""
    lane.tokens_per_s = lane.peak_tokens_per_s = lane.newest_tokens_per_s = (explain_cost(LONG, lane.max_words)
                                                                            / seconds_per_text)
    lane.measured_at = math.inf


def test_a_request_that_could_never_finish_in_time_is_refused_at_once_with_what_would_fit(make_client,
                                                                                            loaded_model):
    model = Recording(loaded_model)
    with make_client(model=model, request_timeout_s=10.0, max_explain_texts=8) as c:
        model.started()
        model.release.set()
        lane = service_of(c).explainer
        assume_speed(lane, 2.5)  # 2 texts fit in 0.6 x 10 s, 3 do not
        r = c.post("/predict?explain=true", json={"texts": [LONG] * 4})
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert error["code"] == "explain_too_large"
        assert "send at most 2 of these texts per request" in error["message"], error["message"]
        assert "SENTIMENT_REQUEST_TIMEOUT_S=10" in error["message"]
        assert model.explain_calls == 0  # refused before any work
        assert "Retry-After" not in r.headers  # waiting would not help
        # What fits is admitted and answered; the plain request with the same texts is not affected.
        assert c.post("/predict?explain=true", json={"texts": [LONG] * 2}).status_code == 200
        assert c.post("/predict", json={"texts": [LONG] * 4}).status_code == 200
        metrics = c.get("/metrics").text
        assert 'sentiment_rejected_texts_total{reason="explain_too_large"} 4.0' in metrics


def test_a_single_text_too_long_to_explain_in_time_is_told_to_be_shorter(make_client):
    with make_client(request_timeout_s=10.0) as c:
        lane = service_of(c).explainer
        assume_speed(lane, 60.0)
        r = c.post("/predict", json={"text": LONG, "explain": True})
        assert r.status_code == 413, r.text
        assert "send a shorter text" in r.json()["error"]["message"]


def test_more_texts_than_max_explain_texts_is_413_and_says_the_setting(make_client):
    with make_client(max_explain_texts=3) as c:
        r = c.post("/predict?explain=true", json={"texts": TEXTS})
        assert r.status_code == 413, r.text
        message = r.json()["error"]["message"]
        assert "at most 3 texts" in message and "SENTIMENT_MAX_EXPLAIN_TEXTS" in message
        assert c.post("/predict?explain=true", json={"texts": TEXTS[:3]}).status_code == 200


def test_a_lane_that_its_newest_chunk_shows_slowed_refuses_before_its_average_catches_up(make_client):
    with make_client(request_timeout_s=10.0) as c:
        lane = service_of(c).explainer
        assume_speed(lane, 1.0)  # on the average, one text takes 1 s of the 6 s admission allows
        lane.newest_tokens_per_s = lane.tokens_per_s / 8  # but the newest chunk ran eight times slower
        r = c.post("/predict?explain=true", json={"text": LONG})
        assert r.status_code == 429, r.text
        assert "would need about 8 s" in r.json()["error"]["message"], r.json()["error"]["message"]
        lane.newest_tokens_per_s = lane.tokens_per_s
        assert c.post("/predict?explain=true", json={"text": LONG}).status_code == 200


def test_explanations_admitted_by_the_other_server_processes_count_as_work_ahead(make_client, tmp_path):
    with make_client(request_timeout_s=10.0) as c:
        lane = service_of(c).explainer
        assume_speed(lane, 2.0)  # LONG alone fits in 0.6 x 10 s
        here, there = SharedCounts(tmp_path / "backlog", 0, 2), SharedCounts(tmp_path / "backlog", 1, 2)
        lane._siblings = here
        there.publish(3 * explain_cost(LONG, lane.max_words))  # another process admitted 6 s of explaining
        r = c.post("/predict?explain=true", json={"text": LONG})
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "6"
        there.publish(0)  # it has answered them
        assert c.post("/predict?explain=true", json={"text": LONG}).status_code == 200
        assert here.others() == 0 and there.others() == 0  # admitted, then released: published both times


def test_shared_counts_are_one_per_process_and_each_reads_the_others(tmp_path):
    counts = [SharedCounts(tmp_path / "n", i, 3) for i in range(3)]
    counts[0].publish(5)
    counts[2].publish(7)
    assert [c.others() for c in counts] == [7, 12, 5]
    counts[2].publish(0)
    assert counts[1].others() == 5


def test_a_request_that_would_wait_past_its_deadline_behind_others_gets_429_with_retry_after(make_settings,
                                                                                            loaded_model, asgi):
    model = Recording(loaded_model)
    app = create_app(make_settings(request_timeout_s=10.0, torch_workers=2), model=model)

    async def main():
        async with asgi(app) as c:
            model.started()
            lane = app.state.service.explainer
            assume_speed(lane, 5.0)  # one text fits in 0.6 x 10 s, two do not
            first = asyncio.create_task(c.post("/predict?explain=true", json={"text": LONG}))
            await asyncio.to_thread(model.explaining.wait, 10)
            assume_speed(lane, 5.0)  # (moved by a chunk)
            second = await c.post("/predict?explain=true", json={"text": LONG})
            plain = await c.post("/predict", json={"text": LONG})
            backlog = (await c.get("/metrics")).text
            model.release.set()
            return await first, second, plain, backlog

    first, second, plain, backlog = asyncio.run(main())
    assert second.status_code == 429, second.text
    assert second.json()["error"]["code"] == "queue_full"
    assert "without explain" in second.json()["error"]["message"]
    assert 1 <= int(second.headers["retry-after"]) <= 60
    assert plain.status_code == 200  # plain traffic is not held behind explanations
    assert first.status_code == 200, first.text
    assert "sentiment_explain_backlog_seconds 5.0" in backlog, backlog


def test_a_stale_speed_is_measured_again_once_before_admitting_so_a_slowed_lane_refuses_rather_than_504(
        make_settings, loaded_model, asgi):
    model = Recording(loaded_model)
    app = create_app(make_settings(request_timeout_s=10.0), model=model)

    async def main():
        async with asgi(app) as c:
            model.started()
            model.release.set()
            lane = app.state.service.explainer
            # The speed was measured on an idle machine (LONG in 2 s: it would fit, but not ten times slower);
            # since then the lane has slowed (load from elsewhere): at 1.5 s a chunk, LONG's dozens of chunks
            # cannot finish in 10 s.
            assume_speed(lane, 2.0)
            calibrated = lane.tokens_per_s
            lane.measured_at = time.monotonic() - STALE_S - 1
            model.delay_s = 1.5
            started = time.monotonic()
            first = await asyncio.gather(*(c.post("/predict?explain=true", json={"text": LONG}) for _ in range(3)))
            first_s = time.monotonic() - started
            # Refused once the probe had run long enough to tell, before it ended; it goes on, and no other starts.
            during = await c.post("/predict?explain=true", json={"text": LONG})
            while lane._probing is not None:
                await asyncio.sleep(0.05)
            after = await c.post("/predict?explain=true", json={"text": LONG})  # on the fresh speed: no probe
            return calibrated, lane.tokens_per_s, first, first_s, [during, after], model.explain_calls

    calibrated, measured, first, first_s, later, calls = asyncio.run(main())
    assert first_s < 1.0, first_s
    assert measured < calibrated / 5, (measured, calibrated)
    for r in [*first, *later]:
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == str(math.ceil(STALE_S))
        assert "at the speed explanations run now" in r.json()["error"]["message"], r.text
    assert "would need more than" in first[0].json()["error"]["message"]  # the probe had not ended: a bound
    assert "would need about" in later[1].json()["error"]["message"]
    assert calls == 1  # one probe chunk, shared by them all; nothing of LONG itself ran


def test_a_short_text_is_explained_on_a_stale_speed_without_measuring_it_again(make_client, loaded_model):
    model = Recording(loaded_model)
    with make_client(model=model) as c:
        model.started()
        model.release.set()
        lane = service_of(c).explainer
        lane.measured_at = time.monotonic() - STALE_S - 1
        r = c.post("/predict?explain=true", json={"text": TEXTS[0]})
        assert r.status_code == 200, r.text
        assert model.explain_calls == 1  # its one chunk; the probe would cost more than the explanation


def test_the_explain_limits_are_in_get_model_and_the_openapi_page(make_client):
    with make_client(max_explain_texts=5, max_explain_words=100) as c:
        limits = c.get("/model").json()["limits"]
        assert limits["max_explain_texts"] == 5 and limits["max_explain_words"] == 100
        schema = c.get("/openapi.json").json()
        responses = schema["paths"]["/predict"]["post"]["responses"]
        assert "SENTIMENT_MAX_EXPLAIN_TEXTS" in responses["413"]["description"]
        assert "max_explain_texts" in schema["components"]["schemas"]["Limits"]["properties"]
