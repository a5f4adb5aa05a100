"""POST /predict without FastAPI's routing, for the plain requests that need nothing else from it.

FastAPI's layers (its routing, dependency solving, request parsing and middleware) cost the event loop about half
of a request (`bench.http_path` measures the HTTP path alone; the figures are in the commit that added this file).
On a small machine the event loop shares the cores with the forward passes, so that half is throughput.

A request takes this path only when the server has no API key, and the request is a JSON POST to /predict with no
query string, its body validates against the route's own request models, and it does not ask to be explained.
Anything else goes on to the route (`app.api.routes.predict`), its body replayed. That includes every invalid body,
so the error answers stay the route's, and the OpenAPI page documents the one behaviour both share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.routes.predict import answer
from app.config import Settings
from app.errors import from_failure, request_id_of
from app.middleware import PREDICT_PATH
from app.schemas import request_models
from app.service import Service


class PredictFastPath:
    def __init__(self, app: ASGIApp, settings: Settings, service: Service):
        self.app = app
        self.service = service
        self.text_request, texts_request = request_models(settings.max_text_chars, settings.max_batch_texts)
        self.adapter = TypeAdapter(self.text_request | texts_request)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._plain(scope):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)  # (over the size or time limit: app.middleware.BodyLimitMiddleware answers)
        try:
            request = self.adapter.validate_json(body)
        except ValidationError:
            request = None
        if request is None or request.explain:
            await self.app(scope, _replaying(body, receive), send)
            return
        try:
            response = await answer(self.service, request, isinstance(request, self.text_request), receive,
                                    scope["state"])
        except Exception as exc:  # noqa: BLE001 - a domain error is answered as the route answers it; others re-raise
            response = from_failure(exc).response(request_id_of(scope))
        await response(scope, receive, send)

    @staticmethod
    def _plain(scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PREDICT_PATH:
            return False
        if scope.get("query_string"):
            return False
        media_type = Headers(scope=scope).get("content-type", "").split(";", 1)[0].strip().lower()
        return media_type == "application/json"


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
