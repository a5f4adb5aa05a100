"""`python -m app --host 127.0.0.1 --port 8000`: one uvicorn process, one model copy, one queue; or, when
SENTIMENT_PROCESSES is above 1 (`auto` on a CPU with several cores), a supervisor of that many such processes on the
same port (app/processes.py).

Settings and the model are loaded before the port opens, so a bad setting, a missing or corrupt artifact or an
unavailable device ends startup with one line naming the cause and a non-zero exit: never a half-up server.

SIGTERM (or Ctrl+C): readiness turns 503 and nothing new is admitted while the port stays open (answers say
`Connection: close`, so keep-alive clients reconnect elsewhere); once every admitted text is answered (and
SENTIMENT_SHUTDOWN_DELAY_S has passed) the port closes, connections still in the listen backlog get a 503 rather
than a reset, in-flight responses finish and the process exits 0. A second signal stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import uvicorn

import model as sentiment_model
from app.backlog import BacklogRefuser
from app.config import Settings, SettingsError, get_settings
from app.logs import configure_logging
from app.main import create_app
from app.processes import EXIT_BAD_CONFIG, EXIT_FATAL, REUSE_PORT, Siblings, Supervisor
from app.protocol import guarded_protocol
from app.service import Service
from app.torch_pool import torch_pool

log = logging.getLogger("app.server")


class DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM/SIGINT drains the service before the listener closes."""

    def __init__(self, config: uvicorn.Config, service: Service):
        super().__init__(config)
        self.service = service
        self.fatal_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task | None = None

    async def startup(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame) -> None:
        if self._loop is None or not self.started or self._draining is not None or self.should_exit:
            super().handle_exit(sig, frame)  # not serving yet, or a second signal: uvicorn's own behaviour
            return
        self._loop.call_soon_threadsafe(self._begin_drain, sig)

    def _begin_drain(self, sig: int) -> None:
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain(sig))

    async def _drain(self, sig: int) -> None:
        s = self.service.settings
        log.info("%s: draining (readiness 503, no new work; up to %.0f s for admitted work)",
                 signal.Signals(sig).name, s.shutdown_grace_s)
        started = time.monotonic()
        await asyncio.gather(self.service.drain(s.shutdown_grace_s), asyncio.sleep(s.shutdown_delay_s))
        # Every admitted text is answered (or, past the grace, refused): what is left are responses being written.
        # uvicorn waits for them only for what remains of the grace, at least a second.
        self.config.timeout_graceful_shutdown = max(1.0, s.shutdown_grace_s - (time.monotonic() - started))
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown (stop accepting, finish in-flight responses, end the lifespan), while the connections
        left in the listen backlog get a 503 instead of a reset (app/backlog.py)."""
        if not sockets:
            await super().shutdown(sockets)
            return
        refuser = BacklogRefuser(sockets[0])  # before uvicorn closes the socket
        own = asyncio.ensure_future(super().shutdown(sockets))
        await refuser.run(own)
        await own
        if refuser.refused:
            log.info("answered %d connections from the listen backlog with 503", refuser.refused)

    def on_fatal(self, exc: BaseException) -> None:
        self.fatal_error = exc
        self.should_exit = True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app", description="Serve the sentiment model over HTTP. Every "
                                "other setting is a SENTIMENT_* environment variable (see the README).")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    # How a supervisor (SENTIMENT_PROCESSES > 1) starts its children: the socket it bound, and their places.
    p.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--process", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def fail(message: str) -> None:
    print(f"sentiment: {message}", file=sys.stderr, flush=True)


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket | None:
    """The listening address, taken before the model loads so that a busy port is a one-line error too. Bound but
    not yet listening: connections are refused until uvicorn starts serving, after the warm-up. With `reuse_port`,
    other sockets of this user may bind the same address (app.processes: one per server process)."""
    # IPPROTO_TCP spelt out: asyncio's loop sets TCP_NODELAY on accepted connections only when the listening
    # socket says it is TCP, and without it a response written in two parts waited 40 ms for a delayed ACK
    # (48 ms per lone request on SENTIMENT_EVENT_LOOP=asyncio; uvloop sets it regardless).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        return None
    sock.set_inheritable(True)
    return sock


def bind_each(host: str, port: int, count: int) -> list[socket.socket] | None:
    """A listening socket for each of `count` server processes on one address (SO_REUSEPORT; where there is none,
    one socket shared by all), or None after printing why not."""
    first = bind(host, port, reuse_port=REUSE_PORT)
    if first is None or not REUSE_PORT:
        return None if first is None else [first] * count
    socks = [first]
    while len(socks) < count:
        sock = bind(host, first.getsockname()[1], reuse_port=True)  # (port 0: the port the first one got)
        if sock is None:
            for bound in socks:
                bound.close()
            return None
        socks.append(sock)
    return socks


def load(settings: Settings, executor):
    """The model, loaded on the thread that will run it (app.torch_pool), or None after printing why not."""
    try:
        return executor.submit(sentiment_model.load_model, settings.model_dir, settings.device,
                               settings.lstm_dtype).result()
    except sentiment_model.ArtifactError as exc:
        fail(f"cannot load the model (SENTIMENT_MODEL_DIR): {exc}")
    except sentiment_model.DtypeError as exc:
        fail(f"SENTIMENT_LSTM_DTYPE={settings.lstm_dtype!r}: {exc}")
    except ValueError as exc:  # resolve_device: unknown or unavailable device
        fail(f"SENTIMENT_DEVICE={settings.device!r}: {exc}")
    except Exception as exc:  # noqa: BLE001 - e.g. CUDA initialisation errors; one line, not a traceback
        fail(f"cannot load the model on {settings.device}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    return None


def sequential_tokenizer() -> None:
    """The torch workers tokenise their own batches (app.service), one batch per worker, a worker per core: the
    tokenizer's own thread pool on top only adds threads waiting for a core and hand-offs between them (measured
    slower at 64 connections; see git log for this function). A value set by the user is kept."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Compiled oneDNN primitives kept for reuse, one per input shape (oneDNN's own default keeps 1,024).
ONEDNN_PRIMITIVE_CACHE_CAPACITY = 128


def bounded_primitive_cache() -> None:
    """On a CPU, torch runs the LSTM through oneDNN, which compiles a primitive for each input shape it meets and
    keeps the last ones it used, each holding memory. Live batches run LSTM segments of many (rows, steps)
    shapes, and with oneDNN's default capacity the resident set grew under load until the processes passed the
    memory target; this capacity kept it flat at the same speed (figures in git log for this function). oneDNN
    reads it when it first runs, so this only has to precede the first forward pass. A value set by the user is
    kept."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_PRIMITIVE_CACHE_CAPACITY))


# Seconds a thread waiting for the GIL lets the holder run before asking it to switch (Python's default is 0.005).
GIL_SWITCH_INTERVAL_S = 0.0001


def share_the_gil() -> None:
    """A forward pass takes the GIL back after every torch op. When the event loop is busy in Python (a flood of
    requests refused with 429), each of those takes waits up to the switch interval, and with the 5 ms default the
    model starved (bench.overload answered several times fewer requests; figures in git log for this function)."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sequential_tokenizer()
    bounded_primitive_cache()
    share_the_gil()
    try:
        settings = get_settings()
    except SettingsError as exc:
        fail(str(exc))
        return EXIT_BAD_CONFIG
    child = args.listen_fd is not None
    configure_logging(settings.log_level, settings.log_json, process=args.process if child else None)
    if child:
        sock, siblings = socket.socket(fileno=args.listen_fd), Siblings(args.run_dir, args.process, args.processes)
    elif settings.processes > 1:
        socks = bind_each(args.host, args.port, settings.processes)
        return EXIT_BAD_CONFIG if socks is None else Supervisor(socks, args.host, args.port).run()
    else:
        sock, siblings = bind(args.host, args.port), None
        if sock is None:
            return EXIT_BAD_CONFIG
    executor = torch_pool(settings.torch_workers, settings.torch_threads)
    model = load(settings, executor)
    if model is None:
        sock.close()
        return EXIT_BAD_CONFIG

    holder: dict[str, DrainingServer] = {}
    app = create_app(settings, model=model, on_fatal=lambda exc: holder["server"].on_fatal(exc),
                     torch_executor=executor, siblings=siblings)
    # httptools plus limits on the request head's size and time (app/protocol.py); the body's are in the app.
    config = uvicorn.Config(app, host=args.host, port=args.port, loop=settings.event_loop,
                            http=guarded_protocol(settings.read_timeout_s), lifespan="on",
                            log_config=None, access_log=False, server_header=False,
                            timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)))
    server = holder["server"] = DrainingServer(config, app.state.service)
    # uvicorn re-raises the signal that stopped it once it is done; with a handler in place that is a no-op, so a
    # drained shutdown exits 0 instead of dying of SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
    if server.fatal_error is not None:
        return EXIT_FATAL
    return 0


if __name__ == "__main__":
    code = main()
    # Not sys.exit: a forward pass still running when the grace ran out would hold the interpreter at exit (it
    # joins the worker thread) for as long as it takes. Logs and output are flushed first.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
