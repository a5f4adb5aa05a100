"""At shutdown, an HTTP answer for every connection the kernel accepted, instead of a reset.

When a server closes its listening socket, the connections that completed their handshake but were not yet
accepted by the application (the listen backlog) are reset by the kernel: their clients sent a request and get no
answer. `BacklogRefuser` keeps the listening socket open (a duplicate of its descriptor) after the server proper
has stopped accepting, accepts what is queued there and answers each with 503 `shutting_down`, `Retry-After` and
`Connection: close`, until the server has finished its in-flight responses; then it closes the socket. A client
that connects after that is refused (never admitted), which it can tell apart from a lost request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from app.errors import from_failure
from app.failures import Unavailable
from app.protocol import raw_error

# Seconds between two sweeps of the backlog while the server finishes its responses, and the most a refused client
# may take to send its request and read the answer.
SWEEP_S = 0.005
CLIENT_S = 2.0

# The answer the app gives while draining, written on the socket by hand.
_DRAINING = from_failure(Unavailable("draining"))
ANSWER = raw_error(_DRAINING.code, _DRAINING.message,
                   [(name.lower().encode(), value.encode()) for name, value in _DRAINING.headers.items()])


class BacklogRefuser:
    def __init__(self, listener: socket.socket):
        # A second descriptor of the same listening socket: it stays open when the server closes its own.
        self._sock = listener.dup()
        self._sock.setblocking(False)
        self._answering: set[asyncio.Task] = set()
        self.refused = 0

    async def run(self, done: asyncio.Future) -> None:
        """Answer queued connections until `done` (the server's own shutdown) completes, then close."""
        try:
            while True:
                self._sweep()
                if done.done():
                    break
                await asyncio.wait({done}, timeout=SWEEP_S)
            self._sweep()  # what queued while the last responses were written
        finally:
            self._sock.close()
        if self._answering:
            await asyncio.wait(self._answering, timeout=CLIENT_S + 1)

    def _sweep(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # closed under us
                return
            self.refused += 1
            task = asyncio.ensure_future(_answer(conn))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)


async def _answer(conn: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    conn.setblocking(False)
    with conn, contextlib.suppress(OSError, TimeoutError):
        # Read the request head first: a socket closed with unread data is reset, and the client would see that
        # rather than the answer. The body (if any) is read after the answer, until the client closes.
        head = b""
        async with asyncio.timeout(CLIENT_S):
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = await loop.sock_recv(conn, 65536)
                if not chunk:
                    break
                head += chunk
            await loop.sock_sendall(conn, ANSWER)
            conn.shutdown(socket.SHUT_WR)
            while await loop.sock_recv(conn, 65536):
                pass
