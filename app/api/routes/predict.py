"""POST /predict: the sentiment of one text or of a batch of texts.

No `from __future__ import annotations` here: the request models are local to `create_router`, and FastAPI must
see them as real objects in the signature, not as names to look up in the module.
"""

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response

from app.api.deps import ServiceDep, auth_dependencies
from app.api.documented import error_responses
from app.config import Settings
from app.failures import ClientGone
from app.responses import OrjsonResponse
from app.schemas import EXAMPLE_TEXT, EXAMPLE_TEXTS, EXPLAIN_DESCRIPTION, BatchPrediction, Prediction, request_models
from app.service import Service

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
           "truncated": False, "model_version": "3.0.0"}
_NEGATIVE = {**_RESULT, "label": "negative", "probabilities": {"positive": 0.04, "negative": 0.96}, "tokens": 14}
_WEIGHTS = {"moving": 0.08, "beautifully": 0.11, "acted": 0.02, "loved": 0.21, "every": 0.03, "minute": -0.01}
_WORDS = [{"word": m.group(), "start": m.start(), "end": m.end(), "weight": _WEIGHTS.get(m.group(), 0.0)}
          for m in re.finditer(r"\w+|[^\w\s]+", EXAMPLE_TEXT)]
_EXPLAINED = {**_RESULT, "explanation": {"method": "occlusion", "words": _WORDS, "explained_words": len(_WORDS),
                                         "total_words": len(_WORDS)}}
# Never seen by anyone: the client has already gone (nginx's convention for "client closed request").
CLIENT_CLOSED_REQUEST = 499


def create_router(settings: Settings) -> APIRouter:
    text_request, texts_request = request_models(settings.max_text_chars, settings.max_batch_texts)
    router = APIRouter(tags=["predict"], dependencies=auth_dependencies(settings.api_key))
    statuses = [400, 408, 413, 415, 422, 429, 500, 503, 504]
    if settings.api_key is not None:
        statuses.insert(1, 401)
    responses = {
        200: {"description": "One result for `text`, or `results` in order for `texts`.", "headers": _TIMING_HEADERS,
              "content": {"application/json": {"examples": {
                  "one": {"summary": "For {\"text\": ...}", "value": _RESULT},
                  "batch": {"summary": "For {\"texts\": [...]}", "value": {"results": [_RESULT, _NEGATIVE]}},
                  "explain": {"summary": "With ?explain=true", "value": _EXPLAINED}}}}},
        **error_responses(*statuses),
    }

    @router.post("/predict", response_model=Prediction | BatchPrediction, responses=responses,
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
        return await answer(service, body, isinstance(body, text_request), request.receive,
                            request.scope["state"], explain=explain or body.explain)

    return router


async def answer(service: Service, body, single: bool, receive, state: dict, explain: bool = False) -> Response:
    """The answer to a validated body (`app.api.fast_predict` answers most requests with it too); raises the
    service's domain errors (`app.failures`), which `app.errors.from_failure` maps to statuses.

    `state` is the request's ASGI state: its `started` time sets the deadline, and the timings go back into it
    (`timing`) for the access log."""
    texts = [body.text] if single else body.texts
    gone = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        done = await service.classify(texts, state["started"] + service.settings.request_timeout_s, gone,
                                      explain=explain)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    finally:
        gone.cancel()
    content = done.results[0] if single else {"results": done.results}
    timing = {"queue_ms": f"{done.queue_ms:.3f}", "inference_ms": f"{done.inference_ms:.3f}"}
    state["timing"] = timing
    return OrjsonResponse(content, headers={"x-queue-time-ms": timing["queue_ms"],
                                            "x-inference-time-ms": timing["inference_ms"]})


async def _wait_for_disconnect(receive) -> None:
    # After the body has been read, the next ASGI message is `http.disconnect`: it arrives when the client leaves.
    while (await receive())["type"] != "http.disconnect":
        pass
