"""POST /predict?explain=true through HTTP (the app with its lifespan, the smoke model): offsets into the original
text, probabilities identical to the plain path, weights that are the measured effect of each word, faithfulness,
bad `explain` values, the word cap, the deadline, the inference thread and a graceful drain."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time

import httpx
import pytest

from app.main import create_app
from app.service import EXPLAIN_NICENESS

# The smoke model's vocabulary (model.training.smoke.smoke_corpus).
POSITIVE = ["great", "wonderful", "superb", "brilliant", "loved", "moving", "excellent", "fun"]
NEGATIVE = ["awful", "boring", "terrible", "worst", "waste", "dull", "stupid", "bad"]
FILLER = ["the", "movie", "film", "plot", "actor", "scene", "story", "it", "was", "and", "a", "of", "this", "i",
          "with"]
TEXTS = [
    "A wonderful, moving film with superb acting. Loved it!",
    "Boring, dull and far too long: the worst waste of an evening.",
    "It was fine.",
    "The plot was awful but the actors were brilliant and the music was excellent.",
]
# Mixed case, <br /> tags (normalised away), NFKC (the "ﬁ" ligature), an ellipsis, emoji outside the BMP.
AWKWARD = "The film was GREAT.<br /><br />But the plot? Boring… 🎬 Superb ﬁnale!!! 👍🏽 Café"


def explained(client, body: dict, query: str = "?explain=true") -> dict:
    r = client.post("/predict" + query, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_offsets_slice_the_original_text_to_each_word(client):
    result = explained(client, {"text": AWKWARD})
    e = result["explanation"]
    assert e["method"] == "occlusion"
    assert e["explained_words"] == e["total_words"] == len(e["words"]) > 10
    previous_end = 0
    for w in e["words"]:
        assert AWKWARD[w["start"]:w["end"]] == w["word"], w
        assert w["word"] and w["word"].strip() == w["word"], w  # a word, not whitespace around it
        assert w["start"] >= previous_end, w  # in text order, not overlapping
        assert -1 <= w["weight"] <= 1
        previous_end = w["end"]
    words = [w["word"] for w in e["words"]]
    for expected in ("GREAT", "Boring", "🎬", "ﬁnale", "!!!", "Café"):
        assert expected in words, (expected, words)
    assert "<" not in "".join(words)  # <br /> is not text to the model, so not a word


def test_probabilities_are_those_of_the_plain_request(client):
    plain = client.post("/predict", json={"texts": TEXTS}).json()["results"]
    by_query = explained(client, {"texts": TEXTS})["results"]
    by_body = explained(client, {"texts": TEXTS, "explain": True}, query="")["results"]
    for p, q, b in zip(plain, by_query, by_body):
        assert "explanation" not in p
        for other in (q, b):
            assert set(other) == set(p) | {"explanation"}
            assert abs(other["probabilities"]["positive"] - p["probabilities"]["positive"]) <= 1e-5
            assert (other["label"], other["tokens"], other["model_version"]) == (p["label"], p["tokens"],
                                                                                   p["model_version"])
    single = explained(client, {"text": TEXTS[0]})
    assert abs(single["probabilities"]["positive"] - plain[0]["probabilities"]["positive"]) <= 1e-5
    # explain=false asks for nothing, whichever way it is sent.
    assert "explanation" not in client.post("/predict?explain=false", json={"text": TEXTS[0]}).json()
    assert "explanation" not in client.post("/predict", json={"text": TEXTS[0], "explain": False}).json()


def test_each_weight_is_the_measured_effect_of_removing_its_word(client):
    """Faithful by construction: P(text) - P(text with the word blanked out), both asked of the plain API."""
    text = TEXTS[3]
    result = explained(client, {"text": text})
    words = result["explanation"]["words"]
    # A space keeps the neighbours apart, so the model sees exactly the text's other words.
    without = [text[:w["start"]] + " " + text[w["end"]:] for w in words]
    probs = [r["probabilities"]["positive"] for r in client.post("/predict", json={"texts": without}).json()["results"]]
    base = result["probabilities"]["positive"]
    for w, p in zip(words, probs):
        assert abs((base - p) - w["weight"]) < 1e-4, (w, base, p)


def synthetic_reviews(rng: random.Random, count: int) -> list[str]:
    texts = []
    for i in range(count):
        words = [rng.choice(FILLER) for _ in range(30)]
        own, other = (POSITIVE, NEGATIVE) if i % 2 == 0 else (NEGATIVE, POSITIVE)
        for vocabulary in (own, own, own, other):
            words.insert(rng.randrange(len(words) + 1), rng.choice(vocabulary))
        texts.append(" ".join(words))
    return texts


def test_removing_the_top_weighted_words_moves_the_score_more_than_removing_random_words(client):
    rng = random.Random(7)
    texts = synthetic_reviews(rng, 16)
    results = explained(client, {"texts": texts})["results"]
    k = 3
    variants, signs, bases = [], [], []
    for text, result in zip(texts, results):
        words = [w["word"] for w in result["explanation"]["words"]]
        assert " ".join(words) == text
        p = result["probabilities"]["positive"]
        sign = 1 if p >= 0.5 else -1  # the predicted direction
        weights = [w["weight"] for w in result["explanation"]["words"]]
        top = set(sorted(range(len(words)), key=lambda i: -sign * weights[i])[:k])
        chosen = set(rng.sample(range(len(words)), k))
        for removed in (top, chosen):
            variants.append(" ".join(w for i, w in enumerate(words) if i not in removed))
        signs.append(sign)
        bases.append(p)
    probs = [r["probabilities"]["positive"] for r in client.post("/predict", json={"texts": variants}).json()["results"]]
    top_moves = [s * (b - probs[2 * i]) for i, (s, b) in enumerate(zip(signs, bases))]
    random_moves = [s * (b - probs[2 * i + 1]) for i, (s, b) in enumerate(zip(signs, bases))]
    mean_top, mean_random = sum(top_moves) / len(texts), sum(random_moves) / len(texts)
    print(f"mean move towards the other class: top-{k} words {mean_top:.4f}, random {k} words {mean_random:.4f}")
    assert mean_top > 2 * max(1e-3, mean_random)
    assert sum(m > 0 for m in top_moves) >= len(texts) - 1


@pytest.mark.parametrize("query", ["maybe", "2", "truee", "null"])
def test_a_bad_explain_query_value_is_a_422_that_says_what_to_send(client, query):
    r = client.post(f"/predict?explain={query}", json={"text": "fine"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert f"explain={query!r}" in error["message"] and "true or false" in error["message"], error


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None, [], {}])
@pytest.mark.parametrize("field", ["text", "texts"])
def test_a_bad_explain_body_value_is_a_422_that_says_what_to_send(client, field, value):
    body = {field: "fine" if field == "text" else ["fine"], "explain": value}
    r = client.post("/predict", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("explain must be true or false"), error


def test_unknown_fields_next_to_explain_are_still_refused(client):
    r = client.post("/predict", json={"text": "fine", "explain": True, "explian": True})
    assert r.status_code == 422 and 'unknown field "explian"' in r.json()["error"]["message"], r.text


def test_max_explain_words_caps_the_work_and_the_result_says_so(make_client):
    with make_client(max_explain_words=5) as c:
        e = explained(c, {"text": "great boring film " * 10})["explanation"]
    assert (e["explained_words"], e["total_words"], len(e["words"])) == (5, 30, 5)
    assert [w["word"] for w in e["words"]] == ["great", "boring", "film", "great", "boring"]


def test_uncertain_band_keeps_both_probabilities_and_the_explanation(make_client, loaded_model):
    p = loaded_model.predict([TEXTS[2]])[0].positive
    with make_client(uncertain_below=min(1.0, max(p, 1 - p) + 0.01)) as c:
        result = explained(c, {"text": TEXTS[2]})
    assert result["label"] == "uncertain"
    assert abs(result["probabilities"]["positive"] - p) <= 1e-5
    assert abs(result["probabilities"]["negative"] - (1 - p)) <= 1e-5
    assert result["explanation"]["words"]


class Recording:
    """The real model, recording which thread runs each forward pass and whether two ever overlap. `logits` is
    called only by explanations (the batches' `predict_encoded` goes straight to the inner model), so `delay_s`
    slows explanations alone, and clearing `release` holds each explanation until the test sets it again."""

    def __init__(self, inner, delay_s: float = 0.0):
        self._inner = inner
        self.delay_s = delay_s
        self.release = threading.Event()
        self.release.set()
        self._lock = threading.Lock()
        self._active = 0
        self.overlapped = False
        self.threads: set[str] = set()
        self.explain_threads: set[str] = set()
        self.explain_niceness: set[int] = set()
        self.explain_calls = 0
        self.explaining = threading.Event()

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def started(self) -> None:
        """Forget the server's start-up (its warm-up times one explanation chunk, on a forward-pass worker) and
        hold explanations."""
        self.explain_calls = 0
        self.explain_threads.clear()
        self.explain_niceness.clear()
        self.explaining.clear()
        self.release.clear()

    def _enter(self) -> None:
        with self._lock:
            self._active += 1
            self.overlapped |= self._active > 1
        self.threads.add(threading.current_thread().name)

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1

    @property
    def idle(self) -> bool:
        with self._lock:
            return self._active == 0

    def predict_encoded(self, batch, beside=None):
        self._enter()
        try:
            return self._inner.predict_encoded(batch, beside)
        finally:
            self._leave()

    def logits(self, batch):
        self._enter()
        try:
            self.explain_threads.add(threading.current_thread().name)
            if sys.platform.startswith("linux"):
                self.explain_niceness.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            self.explain_calls += 1
            self.explaining.set()
            time.sleep(self.delay_s)
            self.release.wait(30)
            return self._inner.logits(batch)
        finally:
            self._leave()


def test_with_one_worker_plain_requests_are_answered_while_an_explanation_runs_on_a_thread_of_its_own(
        make_settings, loaded_model, asgi):
    model = Recording(loaded_model)
    app = create_app(make_settings(max_wait_ms=0, torch_workers=1), model=model)

    async def main():
        async with asgi(app) as c:
            model.started()
            explaining = asyncio.create_task(c.post("/predict?explain=true", json={"texts": TEXTS[:3]}))
            await asyncio.to_thread(model.explaining.wait, 10)
            # While an explanation is held, the event loop answers and the one worker runs plain batches at once.
            live = await c.get("/health/live")
            plain = await asyncio.gather(*(c.post("/predict", json={"text": t}) for t in TEXTS))
            held_while_answered = not model.release.is_set()
            model.release.set()
            return await explaining, live, plain, held_while_answered

    done, live, plain, held_while_answered = asyncio.run(main())
    assert done.status_code == 200 and len(done.json()["results"]) == 3, done.text
    assert live.status_code == 200
    assert all(r.status_code == 200 for r in plain) and held_while_answered
    assert model.explain_threads == {n for n in model.explain_threads if n.startswith("sentiment-explain")}
    assert model.threads - model.explain_threads and all(
        n.startswith("sentiment-torch") for n in model.threads - model.explain_threads), model.threads
    if sys.platform.startswith("linux"):  # the explanation thread runs at a lower CPU priority than the process
        assert model.explain_niceness == {os.getpriority(os.PRIO_PROCESS, 0) + EXPLAIN_NICENESS}


def test_one_request_is_explained_at_a_time_while_plain_requests_go_on(make_settings, loaded_model, asgi):
    model = Recording(loaded_model)
    app = create_app(make_settings(max_wait_ms=0, torch_workers=2), model=model)

    async def main():
        async with asgi(app) as c:
            model.started()
            first = asyncio.create_task(c.post("/predict?explain=true", json={"texts": TEXTS[:2]}))
            await asyncio.to_thread(model.explaining.wait, 10)
            second = asyncio.create_task(c.post("/predict", json={"text": TEXTS[2], "explain": True}))
            plain = await asyncio.gather(*(c.post("/predict", json={"text": t}) for t in TEXTS))
            held_while_answered = not model.release.is_set()
            calls_while_held = model.explain_calls  # the second explanation waits for the lane
            model.release.set()
            return plain, held_while_answered, calls_while_held, await first, await second

    plain, held_while_answered, calls_while_held, first, second = asyncio.run(main())
    assert all(r.status_code == 200 for r in plain) and held_while_answered
    assert calls_while_held == 1
    assert first.status_code == 200 and second.status_code == 200, (first.text, second.text)


def test_explaining_stops_at_the_request_deadline(make_client, loaded_model):
    model = Recording(loaded_model)
    with make_client(model=model, request_timeout_s=1.0) as c:
        model.started()  # the first explanation holds the inference thread past the deadline
        r = c.post("/predict?explain=true", json={"texts": ["great film", "boring film", "fun film"]})
        # The answer comes at the deadline, while the first explanation is still held; the others never start.
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "timeout" and "Retry-After" in r.headers
        assert not model.release.is_set() and model.explain_calls == 1
        model.release.set()  # the held explanation finishes on the worker, unread
        assert c.post("/predict", json={"text": "great film"}).status_code == 200
        for _ in range(1000):  # wait for the worker to finish the held explanation (it may be on another thread)
            if model.idle:
                break
            time.sleep(0.01)
        assert model.idle and model.explain_calls == 1


def test_shutdown_waits_for_explanations_in_progress(make_settings, loaded_model):
    model = Recording(loaded_model, delay_s=0.3)
    app = create_app(make_settings(), model=model)

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=30) as c:
            async with app.router.lifespan_context(app):
                model.started()
                model.release.set()
                answer = asyncio.create_task(c.post("/predict?explain=true", json={"texts": TEXTS[:3]}))
                await asyncio.to_thread(model.explaining.wait, 10)
            # The lifespan has ended: it drained, and only then stopped the inference thread.
            return await answer

    r = asyncio.run(main())
    assert r.status_code == 200, r.text
    assert all(result["explanation"]["words"] for result in r.json()["results"])
