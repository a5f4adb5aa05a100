"""Abuse of the HTTP layer, against a real `python -m app` (uvicorn + httptools + app/protocol.py) over raw sockets:
huge headers and URLs, bad methods, unknown paths, malformed requests, a 50 MB body, and clients that trickle."""

from __future__ import annotations

import json
import re
import select
import socket
import time
from pathlib import Path

import pytest
from conftest import ServerProcess

pytestmark = pytest.mark.slow

READ_TIMEOUT_S = 1.0
MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(smoke_artifact: Path, tmp_path_factory: pytest.TempPathFactory):
    s = ServerProcess({"SENTIMENT_MODEL_DIR": str(smoke_artifact), "SENTIMENT_DEVICE": "cpu",
                       "SENTIMENT_READ_TIMEOUT_S": str(READ_TIMEOUT_S)}, tmp_path_factory.mktemp("abuse") / "log")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one response (Content-Length framed)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def exchange(server: ServerProcess, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(server) as sock:
        sock.sendall(raw)
        return read_response(sock)


def closed_by_server(sock: socket.socket, timeout: float = 5) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def check_json_error(status: int, headers: dict, body: bytes, code: str) -> dict:
    assert headers["content-type"] == "application/json", (status, body)
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    assert not re.search(r"Traceback|\.py\b|/work/|site-packages", body.decode()), body
    return error


@pytest.mark.parametrize("name, raw, status, code", [
    ("100 KB header", b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431,
     "headers_too_large"),
    ("5,000 headers", b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(5000))
     + b"\r\n", 431, "headers_too_large"),
    ("9 KB URL", b"GET /health/live?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "url_too_long"),
    ("1 MB URL", b"GET /" + b"a" * MB + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "url_too_long"),
    ("unknown path", b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found"),
    ("path traversal", b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found"),
    ("encoded traversal", b"GET /static/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found"),
    ("DELETE", b"DELETE /predict HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"),
    ("PUT", b"PUT /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 405, "method_not_allowed"),
    ("TRACE", b"TRACE /predict HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"),
    ("POST to a probe", b"POST /health/ready HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405,
     "method_not_allowed"),
])
def test_header_and_url_abuse_gets_a_4xx_json_error(server, name, raw, status, code):
    got, headers, body = exchange(server, raw)
    assert got == status, (name, got, body[:200])
    check_json_error(got, headers, body, code)


@pytest.mark.parametrize("raw", [
    b"BREW /predict HTTP/1.1\r\nHost: x\r\n\r\n",  # not a method
    b"\x00\x01\x02 nonsense\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    # Content-Length and chunked together: the request-smuggling ambiguity
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /health/live HTTP/1.1\r\nHost: x\r\nBad Header Name: y\r\n\r\n",
])
def test_malformed_requests_get_400_and_a_closed_connection(server, raw):
    with connect(server) as sock:
        sock.sendall(raw)
        status, headers, _ = read_response(sock)
        assert status == 400 and headers["connection"] == "close"
        assert closed_by_server(sock)


def test_the_server_survives_the_abuse(server):
    payload = b'{"text": "still fine!"}'
    status, _, body = exchange(server, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                       b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
    assert status == 200 and json.loads(body)["label"] in ("positive", "negative")


def rss_mb(server: ServerProcess) -> float:
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def send_until_answered(sock: socket.socket, chunks, limit_bytes: int) -> int:
    """Sends chunks until the server answers (or `limit_bytes`); returns how many body bytes went out."""
    sent = 0
    for chunk in chunks:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable or sent >= limit_bytes:
            break
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    return sent


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_50_mb_body_is_refused_with_413_without_being_buffered(server, framing):
    before = rss_mb(server)
    piece = b"x" * 65536
    with connect(server) as sock:
        if framing == "content-length":
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % (50 * MB))
            chunks = (piece for _ in range(50 * MB // len(piece)))
        else:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            chunks = (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(50 * MB // len(piece)))
        sent = send_until_answered(sock, chunks, 50 * MB)
        status, headers, body = read_response(sock)
    assert status == 413
    check_json_error(status, headers, body, "body_too_large")
    assert headers["connection"] == "close"
    assert sent < 10 * MB, sent  # refused long before the 50 MB were sent (the limit is 2 MB)
    assert rss_mb(server) - before < 20  # and never held in memory


def test_a_client_trickling_its_body_gets_408(server):
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n"
                     b"\r\n")
        started = time.monotonic()
        for byte in b'{"text": "one byte every 0.2 s ':  # well under 40 bytes before the deadline
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                break
            sock.sendall(bytes([byte]))
        status, headers, body = read_response(sock)
        elapsed = time.monotonic() - started
        assert status == 408 and headers["connection"] == "close"
        error = check_json_error(status, headers, body, "read_timeout")
        assert "SENTIMENT_READ_TIMEOUT_S" in error["message"] and error["request_id"]
        assert READ_TIMEOUT_S <= elapsed < READ_TIMEOUT_S + 2
        assert closed_by_server(sock)


def test_a_client_trickling_its_headers_gets_408(server):
    with connect(server) as sock:
        started = time.monotonic()
        for byte in b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 100:
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                break
            sock.sendall(bytes([byte]))
        status, headers, body = read_response(sock)
        assert status == 408
        check_json_error(status, headers, body, "read_timeout")
        assert time.monotonic() - started < READ_TIMEOUT_S + 2
        assert closed_by_server(sock)


def test_a_silent_connection_is_closed(server):
    with connect(server) as sock:
        started = time.monotonic()
        status, _, _ = read_response(sock)  # it never sends a byte
        assert status == 408 and time.monotonic() - started < READ_TIMEOUT_S + 2
        assert closed_by_server(sock)


def test_a_body_still_trickling_after_an_answer_is_cut_off(server):
    # /nope answers 404 without reading the body; a client that keeps trickling it is disconnected.
    with connect(server) as sock:
        sock.sendall(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
        status, _, _ = read_response(sock)
        assert status == 404
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < READ_TIMEOUT_S + 4:
            try:
                sock.sendall(b"c")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable and not sock.recv(1024):
                closed = True
                break
        assert closed
