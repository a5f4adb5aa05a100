"""Faults inside the service: a forward pass that raises, and a batcher task that dies in a real server process.

(Clients that leave while queued: tests/test_api_ops.py. SIGTERM and bad startups: tests/test_server_process.py.)
"""

from __future__ import annotations

import asyncio
import re
import textwrap

import httpx
import pytest

from app.main import create_app

ERROR_ID = re.compile(r"error id ([0-9a-f]{12})")


def test_a_raising_forward_pass_fails_only_its_batch_and_the_next_batch_is_served(make_settings, gated_model, asgi,
                                                                                  caplog):
    app = create_app(make_settings(max_wait_ms=0), model=gated_model)
    doomed_texts = [f"doomed review number {i}" for i in range(3)]
    doomed = {e.ids for e in gated_model.encode(doomed_texts)}

    async def main():
        async with asgi(app) as c:
            gated_model.gate.clear()
            gated_model.entered.clear()
            held = asyncio.create_task(c.post("/predict", json={"text": "held in the first pass"}))
            await asyncio.to_thread(gated_model.entered.wait, 10)
            # These queue behind the held pass and leave together as the second batch, whose pass raises.
            gated_model.fail_if = lambda e: e.ids in doomed
            batch = [asyncio.create_task(c.post("/predict", json={"text": t})) for t in doomed_texts]
            batch.append(asyncio.create_task(c.post("/predict", json={"text": "a healthy text in the same batch"})))
            while app.state.service.batcher.queue_depth < 4:
                await asyncio.sleep(0.01)
            gated_model.gate.set()
            answers = await asyncio.gather(held, *batch)
            ready_after = await c.get("/health/ready")
            following = await c.post("/predict", json={"texts": ["the next batch", "is served as usual"]})
            return answers, ready_after, following, app.state.metrics.render().decode()

    (held, *failed, healthy), ready_after, following, metrics = asyncio.run(main())
    assert held.status_code == healthy.status_code == following.status_code == 200
    assert len(following.json()["results"]) == 2
    assert ready_after.status_code == 200  # one bad pass is not a sick service: readiness stays 200
    ids = []
    for r in failed:
        assert r.status_code == 500
        error = r.json()["error"]
        assert error["code"] == "inference_failed"
        assert "Traceback" not in r.text and ".py" not in r.text
        ids.append(ERROR_ID.search(error["message"]).group(1))
    assert len(set(ids)) == 3
    logged = {rec.error_id: rec for rec in caplog.records if hasattr(rec, "error_id")}
    for error_id in ids:  # each id is in the log, with the exception behind it
        assert error_id in logged and error_id in logged[error_id].getMessage()
        assert logged[error_id].exc_info and "injected failure" in str(logged[error_id].exc_info[1])
    # The pass over all four texts raised; each was then retried alone, so only the three bad ones failed.
    sizes = [len(b) for b in gated_model.batches[1:]]  # [0] is the warm-up
    assert sizes[:3] == [1, 4, 1]
    assert "sentiment_inference_failures_total 3.0" in metrics
    assert "sentiment_ready 1.0" in metrics


# A real `python -m app`, except that the batcher's own loop breaks once the server is up (a bug, not a model
# failure): readiness must turn 503 and the process must exit non-zero so that its supervisor restarts it.
_DYING_SERVER = textwrap.dedent("""
    import sys
    from app.batcher import Batcher
    from app.__main__ import main

    real_take = Batcher._take_batch
    calls = 0

    def broken_take(self):  # the first batch is served, the second finds the bug
        global calls
        calls += 1
        if calls > 1:
            raise RuntimeError("injected bug in the batcher loop")
        return real_take(self)

    Batcher._take_batch = broken_take
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_a_dead_batcher_makes_a_real_server_503_and_exit_non_zero(start_server):
    server = start_server(script=_DYING_SERVER, SENTIMENT_MAX_WAIT_MS="0")
    server.wait_ready()
    url = server.url
    first = httpx.post(url + "/predict", json={"text": "served before the bug"}, timeout=10)
    second = httpx.post(url + "/predict", json={"text": "this one kills the batcher"}, timeout=10)
    try:
        ready = httpx.get(url + "/health/ready", timeout=2).status_code
    except httpx.TransportError:
        ready = None  # already gone: also truthful
    code = server.proc.wait(timeout=30)
    text = server.log()
    assert first.status_code == 200, text
    assert second.status_code == 503 and second.json()["error"]["code"] == "not_ready", second.text
    assert second.headers["retry-after"]
    assert ready in (503, None)
    assert code == 1, text
    assert "the batcher task died" in text
