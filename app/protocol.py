"""uvicorn's httptools protocol plus the limits it lacks on the request head: its size and the time to send it.

Left alone, uvicorn (httptools) accepts a URL of up to ~64 KiB and headers of any size, buffering them all, and
waits for ever for a client that opens a connection, or starts a request, and never finishes the head. This
subclass answers with the service's JSON error body and closes the connection:

- 414 when the URL passes `MAX_URL_BYTES`;
- 431 when the request head (request line and headers) passes `MAX_HEAD_BYTES`: checked exactly once the head is
  complete, and while it streams in by the bytes received, so an endless header is cut off too;
- 408 when no complete request head arrived within SENTIMENT_READ_TIMEOUT_S of the connection opening or of the
  request's first byte (idle keep-alive connections are uvicorn's own `timeout_keep_alive`).

The body is limited (size and time) in `app.middleware`, where the request id is known; when the app answered
without reading the body (a 404, say) and the client is still trickling it, the connection is closed here a second
after that deadline. These answers come before
any ASGI code runs, so they carry no request id and are not in the access log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.errors import STATUS, ErrorCode, error_body

log = logging.getLogger("app.protocol")

MAX_URL_BYTES = 8 * 1024
MAX_HEAD_BYTES = 32 * 1024
# At shutdown, how long a connection that has not sent its request head yet gets to send it (see `shutdown`).
FRESH_AT_SHUTDOWN_S = 2.0
_REASONS = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large",
            503: b"Service Unavailable"}


def raw_error(code: ErrorCode, message: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 error answer with the service's JSON body that closes the connection, for answers written
    on the socket outside any ASGI app (here, and for the listen backlog at shutdown in app/backlog.py)."""
    status = STATUS[code]
    body = orjson.dumps(error_body(code, message, None))
    head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
    head += [name + b": " + value + b"\r\n" for name, value in headers]
    head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
             b"connection: close\r\n\r\n"]
    return b"".join(head) + body


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; uvicorn then calls `send_400_response`."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    read_timeout_s: float = 30.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._in_head = True  # between a request's first byte (or the connection opening) and its last header
        self._head_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[ErrorCode, str] | None = None

    # -- connection ------------------------------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm(self.read_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown, except for a connection with no request yet: it may have been accepted just
        before the listener closed, its request on the way, and closing it would cut that request off (the client
        sees a reset). It gets FRESH_AT_SHUTDOWN_S for its head, and the request is then answered like any other
        while draining (503, `Connection: close`). Idle keep-alive connections close at once, as before."""
        if self.cycle is None:
            self._arm(min(FRESH_AT_SHUTDOWN_S, self.read_timeout_s), self._no_request_at_shutdown)
            return
        super().shutdown()

    def _no_request_at_shutdown(self) -> None:
        self._timer = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            # Still inside a head after this chunk: (almost) all of it was head. Cuts off endless headers, which
            # httptools would otherwise keep buffering until the head ends.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._answer(ErrorCode.HEADERS_TOO_LARGE, self._head_message())

    # -- parser callbacks --------------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._arm(self.read_timeout_s, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self._refuse(ErrorCode.URL_TOO_LONG, f"the URL is longer than {MAX_URL_BYTES} bytes: send texts in the "
                                                 f"JSON body of POST /predict")

    def on_headers_complete(self) -> None:
        self._in_head = False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > MAX_HEAD_BYTES:
            self._refuse(ErrorCode.HEADERS_TOO_LARGE, self._head_message())
        # The middleware answers 408 at read_timeout_s if the app reads the body; this is the backstop.
        self._arm(self.read_timeout_s + 1.0, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    # -- refusing ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _head_message() -> str:
        return f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes: send fewer or shorter headers"

    def _refuse(self, code: ErrorCode, message: str) -> None:
        self._refusal = (code, message)
        raise _Refused(message)

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this for any parser error, including the _Refused raised above.
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._answer(*self._refusal)

    def _answer(self, code: ErrorCode, message: str) -> None:
        if self.transport.is_closing():
            return
        self._disarm()
        self._in_head = False
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.info("refused a request from %s: %d %s", client, STATUS[code], code.value)
        self.transport.write(raw_error(code, message, self.server_state.default_headers))
        self.transport.close()

    # -- deadlines ---------------------------------------------------------------------------------------------------

    def _arm(self, delay: float, callback) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._in_head:
            self._answer(ErrorCode.READ_TIMEOUT, f"no complete request head within {self.read_timeout_s:g} s "
                                                 f"(SENTIMENT_READ_TIMEOUT_S)")

    def _body_timed_out(self) -> None:
        self._timer = None
        # Answered already (the app did not need the body) yet still receiving it: nothing more to say, close.
        if self.cycle is not None and self.cycle.response_complete and not self.transport.is_closing():
            log.info("closed a connection still sending a body %g s after its headers", self.read_timeout_s)
            self.transport.close()


def guarded_protocol(read_timeout_s: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to hand to `uvicorn.Config(http=...)`."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"read_timeout_s": read_timeout_s})
