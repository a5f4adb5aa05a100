"""Pure ASGI middleware: request ids, the access log and request metrics; the request-body size and time limits.

Pure ASGI rather than `BaseHTTPMiddleware`: it streams, does not buffer bodies, and sees the body as it arrives,
which is what a size limit and a read deadline need.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ErrorCode, ServiceError, error_answer, error_response
from app.metrics import Metrics

access_log = logging.getLogger("app.access")
log = logging.getLogger("app.middleware")

# An incoming id is echoed only if it is short and plain, so it cannot inject anything into logs or headers.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestContextMiddleware:
    """Gives every request an id (echoed in `x-request-id`), logs one line per request, and counts the POSTs to
    `counted_path` (the prediction endpoint) in the request metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics, counted_path: str,
                 closing: Callable[[], bool] = lambda: False):
        """`closing()`: true once the server is shutting down; answers then carry `Connection: close`, so that
        keep-alive clients reconnect (elsewhere) rather than send a request as the server closes the connection."""
        self.app = app
        self.metrics = metrics
        self.counted_path = counted_path
        self.closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started"] = started
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                if self.closing():
                    headers["connection"] = "close"
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error [request_id=%s]", request_id, extra={"request_id": request_id})
            status = 500
            if not response_started:
                response = error_response(ErrorCode.INTERNAL, "internal error; quote the request id when reporting "
                                                              "it", request_id)
                await response(scope, receive, send_with_id)
        finally:
            elapsed = time.monotonic() - started
            path = scope.get("path", "")
            if path == self.counted_path and scope.get("method") == "POST":
                self.metrics.requests.labels(str(status)).inc()
                self.metrics.request_seconds.observe(elapsed)
            timing = state.get("timing", {})  # set by the /predict answer (app.api.predict.respond)
            extras = "".join(f" {k}={v}" for k, v in timing.items())
            access_log.info("%s %s %d %.1fms request_id=%s%s", scope.get("method"), path, status, elapsed * 1000,
                            request_id, extras,
                            extra={"request_id": request_id, "method": scope.get("method"), "path": path,
                                   "status": status, "latency_ms": round(elapsed * 1000, 3), **timing})


class BodyLimitMiddleware:
    """Refuses bodies over `max_bytes` with 413: at once from Content-Length, else as soon as the streamed bytes
    pass the limit, so an oversized body is never buffered whole. A body still incomplete `timeout_s` after the
    headers arrived is refused with 408: uvicorn's keep-alive timeout does not cover a client that trickles its
    body, and such a client would hold its connection (and the bytes so far) for as long as it likes."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def _too_large(self) -> ServiceError:
        return ServiceError(ErrorCode.BODY_TOO_LARGE, f"the body is larger than the limit of {self.max_bytes} bytes "
                                                      f"(SENTIMENT_MAX_BODY_BYTES): send fewer or shorter texts per "
                                                      f"request", {"connection": "close"})

    def _too_slow(self) -> ServiceError:
        return ServiceError(ErrorCode.READ_TIMEOUT, f"the body did not arrive within {self.timeout_s:g} s "
                                                    f"(SENTIMENT_READ_TIMEOUT_S): send it at once",
                            {"connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_answer(self._too_large(), scope)(scope, receive, send)
            return
        received = 0
        body_done = False
        response_started = False
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body only `http.disconnect` comes, whenever the client leaves: no deadline
                return await receive()
            try:
                # asyncio.timeout_at, not wait_for: wait_for wraps receive() in a task of its own, per message.
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                log.info("refused a body still incomplete after %g s (%d bytes so far) [request_id=%s]",
                         self.timeout_s, received, scope.get("state", {}).get("request_id"))
                raise self._too_slow() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except ServiceError as exc:
            # FastAPI turns these into a 413/408 itself while parsing the body; this catches any other reader.
            if exc.code not in (ErrorCode.BODY_TOO_LARGE, ErrorCode.READ_TIMEOUT) or response_started:
                raise
            await error_answer(exc, scope)(scope, receive, send)
