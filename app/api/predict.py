"""POST /predict: the sentiment of one text or of a batch of texts. The endpoint's one home.

Two ways in, one answer (`respond`). The route is what the OpenAPI page documents, and it answers whatever is
unusual: an API key to check, a query string other than `explain=true`, a body that does not validate. A plain
request (a JSON POST with a valid body, on a server without an API key) is answered by `PlainPredictPath`,
an ASGI middleware that skips FastAPI's routing, dependency solving and body parsing: on a small machine the event
loop shares the cores with the forward passes, so what it saves is throughput (`bench.http_path` measures it).
Both validate with the same request models, built once per app, so every answer is the same either way.

No `from __future__ import annotations`: the request models are built at run time, and FastAPI must see them as
real objects in the route's signature, not as names to look up in this module.
"""

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import ServiceDep, auth_dependencies
from app.api.documented import error_responses
from app.config import Settings
from app.errors import error_answer
from app.failures import ClientGone
from app.responses import OrjsonResponse
from app.schemas import EXAMPLE_TEXT, EXAMPLE_TEXTS, EXPLAIN_DESCRIPTION, BatchPrediction, Prediction, request_models
from app.service import Service

PATH = "/predict"
# The one query string the plain path reads: explain requests are answered there too, so that a flood of them
# (refused by cost, mostly) costs the event loop as little as plain traffic does.
EXPLAIN_QUERY = b"explain=true"
# Never seen by anyone: the client has already gone (nginx's convention for "client closed request").
CLIENT_CLOSED_REQUEST = 499

_TIMING_HEADERS = {
    "x-request-id": {"description": "The request's id (the incoming one if it was plain, else a new one); also "
                                    "in the server log.", "schema": {"type": "string"}, "example": "3f2c1a9e0b7d4c55"},
    "x-queue-time-ms": {"description": "Milliseconds the request's texts waited for a forward pass (the longest "
                                       "wait).", "schema": {"type": "string"}, "example": "1.204"},
    "x-inference-time-ms": {"description": "Milliseconds of the forward passes that carried them.",
                            "schema": {"type": "string"}, "example": "3.871"},
}
_EXAMPLES = {
    "one": {"summary": "One review", "value": {"text": EXAMPLE_TEXT}},
    "batch": {"summary": "Several reviews", "value": {"texts": EXAMPLE_TEXTS}},
    "explain": {"summary": "One review, explained", "value": {"text": EXAMPLE_TEXT, "explain": True}},
}
_RESULT = {"label": "positive", "probabilities": {"positive": 0.97, "negative": 0.03}, "tokens": 15,
           "truncated": False, "model_version": "3.4.0"}
_NEGATIVE = {**_RESULT, "label": "negative", "probabilities": {"positive": 0.04, "negative": 0.96}, "tokens": 14}
_WEIGHTS = {"moving": 0.08, "beautifully": 0.11, "acted": 0.02, "loved": 0.21, "every": 0.03, "minute": -0.01}
_WORDS = [{"word": m.group(), "start": m.start(), "end": m.end(), "weight": _WEIGHTS.get(m.group(), 0.0)}
          for m in re.finditer(r"\w+|[^\w\s]+", EXAMPLE_TEXT)]
_EXPLAINED = {**_RESULT, "explanation": {"method": "occlusion", "words": _WORDS, "explained_words": len(_WORDS),
                                         "total_words": len(_WORDS)}}


class PredictEndpoint:
    """The request models (their limits come from the settings), built once for the route and the plain path."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.text_request, self.texts_request = request_models(settings.max_text_chars, settings.max_batch_texts)
        self.adapter = TypeAdapter(self.text_request | self.texts_request)

    def router(self) -> APIRouter:
        text_request, texts_request = self.text_request, self.texts_request
        router = APIRouter(tags=["predict"], dependencies=auth_dependencies(self.settings.api_key))
        statuses = [400, 408, 413, 415, 422, 429, 500, 503, 504]
        if self.settings.api_key is not None:
            statuses.insert(1, 401)
        responses = {
            200: {"description": "One result for `text`, or `results` in order for `texts`.",
                  "headers": _TIMING_HEADERS,
                  "content": {"application/json": {"examples": {
                      "one": {"summary": "For {\"text\": ...}", "value": _RESULT},
                      "batch": {"summary": "For {\"texts\": [...]}", "value": {"results": [_RESULT, _NEGATIVE]}},
                      "explain": {"summary": "With ?explain=true", "value": _EXPLAINED}}}}},
            **error_responses(*statuses),
        }

        @router.post(PATH, response_model=Prediction | BatchPrediction, responses=responses,
                     summary="Classify the sentiment of one review or a batch")
        async def predict(request: Request,
                          body: Annotated[text_request | texts_request, Body(openapi_examples=_EXAMPLES)],
                          service: ServiceDep,
                          explain: Annotated[bool, Query(description=EXPLAIN_DESCRIPTION)] = False) -> Response:
            """Send `{"text": "..."}` for one review or `{"texts": ["...", ...]}` for several. Each result has the
            label, calibrated probabilities, the number of tokens read and the model version. Requests arriving
            together share forward passes; a text gets the same result alone, in a batch request or batched with
            other requests.

            With `?explain=true` (or `"explain": true`) each result also has an `explanation`: every word with its
            character offsets and its weight, the change in P(positive) when that word is removed (occlusion). The
            weights are what the model does, measured, so the explanation is faithful by construction. It costs one
            extra forward-pass row per word (at most SENTIMENT_MAX_EXPLAIN_WORDS per text), run on the same
            inference thread as the batches; the probabilities are those of the plain request."""
            return await respond(service, body, request.receive, request.scope["state"],
                                 explain=explain or body.explain)

        return router


async def respond(service: Service, body, receive: Receive, state: dict, explain: bool = False) -> Response:
    """The answer to a validated request model; raises the service's domain errors (`app.failures`), which
    `app.errors.error_answer` turns into responses.

    `state` is the request's ASGI state: its `started` time sets the deadline, and the timings go back into it
    (`timing`) for the access log."""
    gone = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        done = await service.classify(body.batch(), state["started"] + service.settings.request_timeout_s, gone,
                                      explain=explain)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    finally:
        gone.cancel()
    timing = {"queue_ms": f"{done.queue_ms:.3f}", "inference_ms": f"{done.inference_ms:.3f}"}
    state["timing"] = timing
    return OrjsonResponse(body.reply(done.results), headers={"x-queue-time-ms": timing["queue_ms"],
                                                             "x-inference-time-ms": timing["inference_ms"]})


class PlainPredictPath:
    """ASGI middleware: plain /predict requests answered without the route; everything else passes through."""

    def __init__(self, app: ASGIApp, endpoint: PredictEndpoint, service: Service):
        self.app = app
        self.endpoint = endpoint
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _plain(scope):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)  # (over the size or time limit: app.middleware.BodyLimitMiddleware answers)
        try:
            request = self.endpoint.adapter.validate_json(body)
        except ValidationError:
            request = None
        if request is None:  # the route answers, with its own error messages
            await self.app(scope, _replaying(body, receive), send)
            return
        try:
            response = await respond(self.service, request, receive, scope["state"],
                                     explain=request.explain or scope["query_string"] == EXPLAIN_QUERY)
        except Exception as exc:  # noqa: BLE001 - a domain error is answered as the route answers it; others re-raise
            response = error_answer(exc, scope)
        await response(scope, receive, send)


def _plain(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
        return False
    if scope.get("query_string") not in (b"", EXPLAIN_QUERY):
        return False
    media_type = Headers(scope=scope).get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json"


async def _wait_for_disconnect(receive: Receive) -> None:
    # After the body has been read, the next ASGI message is `http.disconnect`: it arrives when the client leaves.
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left before the body was complete
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """`receive` for the route: the body already read, then whatever the client sends next (its disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
