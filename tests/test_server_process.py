"""`python -m app` as a real uvicorn process on a free port: startup errors, SIGTERM drain, logs, body limits."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import ROOT
from test_security import evil_artifact

from app.cores import auto_layout, usable_cores

pytestmark = pytest.mark.slow


def test_startup_errors_are_one_line_and_a_non_zero_exit(smoke_artifact: Path, tmp_path: Path, start_server):
    tampered = shutil.copytree(smoke_artifact, tmp_path / "tampered")
    with open(tampered / "weights.pt", "ab") as f:
        f.write(b"\0")
    truncated = shutil.copytree(smoke_artifact, tmp_path / "truncated")
    weights = (truncated / "weights.pt").read_bytes()
    (truncated / "weights.pt").write_bytes(weights[: len(weights) // 2])
    cut_config = shutil.copytree(smoke_artifact, tmp_path / "cut-config")
    config = (cut_config / "config.json").read_text()
    (cut_config / "config.json").write_text(config[: len(config) // 2])
    payload_ran = tmp_path / "payload-ran"
    pickled = evil_artifact(smoke_artifact, tmp_path / "pickled", payload_ran)
    not_an_artifact = tmp_path / "empty"
    not_an_artifact.mkdir()
    good = str(smoke_artifact)
    cases = {
        "missing artifact": ({"SENTIMENT_MODEL_DIR": str(tmp_path / "nowhere")},
                             r"cannot load the model .*artifact folder not found: .*nowhere"),
        "not an artifact": ({"SENTIMENT_MODEL_DIR": str(not_an_artifact)}, r"config.json is missing"),
        "tampered weights": ({"SENTIMENT_MODEL_DIR": str(tampered)}, r"checksum mismatch for .*weights.pt"),
        "truncated weights": ({"SENTIMENT_MODEL_DIR": str(truncated)}, r"checksum mismatch for .*weights.pt"),
        "truncated config": ({"SENTIMENT_MODEL_DIR": str(cut_config)}, r"config.json is not valid JSON"),
        "pickled code in the weights": ({"SENTIMENT_MODEL_DIR": str(pickled)},
                                        r"weights.pt: it holds pickled objects besides tensors, which are never"),
        "absent GPU": ({"SENTIMENT_MODEL_DIR": good, "SENTIMENT_DEVICE": "cuda:99"},
                       r"SENTIMENT_DEVICE='cuda:99': device 'cuda:99' requested but"),
        "bad device name": ({"SENTIMENT_MODEL_DIR": good, "SENTIMENT_DEVICE": "gpu"},
                            r"SENTIMENT_DEVICE='gpu': use auto, cpu, cuda or cuda:N"),
        "bad setting": ({"SENTIMENT_MODEL_DIR": good, "SENTIMENT_MAX_BATCH_SIZE": "zero"},
                        r"invalid setting: SENTIMENT_MAX_BATCH_SIZE='zero'"),
        "unknown setting": ({"SENTIMENT_MODEL_DIR": good, "SENTIMENT_MAX_WAIT": "5"},
                            r"SENTIMENT_MAX_WAIT is not a setting \(did you mean SENTIMENT_MAX_WAIT_MS\?\)"),
    }
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases["busy port"] = ({"SENTIMENT_MODEL_DIR": good}, r"cannot listen on 127.0.0.1:\d+: Address already in use")
    # With several processes the first starts alone: its error is the one line, not one per process.
    cases["missing artifact, two processes"] = ({"SENTIMENT_MODEL_DIR": str(tmp_path / "nowhere"),
                                                 "SENTIMENT_PROCESSES": "2"}, r"artifact folder not found: .*nowhere")
    started = time.monotonic()
    # In parallel: each pays for importing torch.
    servers = {name: start_server(port=busy.getsockname()[1] if name == "busy port" else None, **env)
               for name, (env, _) in cases.items()}
    for name, server in servers.items():
        code = server.proc.wait(timeout=120)
        output = server.log()
        pattern = cases[name][1]
        lines = [line for line in output.splitlines() if line.strip()]
        assert code != 0, (name, output)
        assert len(lines) == 1, (name, output)
        assert lines[0].startswith("sentiment: "), (name, lines)
        assert re.search(pattern, lines[0]), (name, lines[0])
        assert "Traceback" not in output and "Uvicorn running" not in output, name
    busy.close()
    assert time.monotonic() - started < 90
    assert not payload_ran.exists()


async def _sigterm_drain(server) -> dict:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
        admitted = [asyncio.create_task(c.post("/predict", json={"text": f"review {i}: great plot, awful acting"}))
                    for i in range(6)]
        for _ in range(1000):  # until all six wait in the queue (the batch would leave only after 10 s)
            metrics = (await c.get("/metrics")).text
            if "sentiment_queue_depth 6.0" in metrics:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the six requests were never all queued")
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        ready = await c.get("/health/ready")
        live = await c.get("/health/live")
        refused = await c.post("/predict", json={"text": "arrived after SIGTERM"})
        answers = await asyncio.gather(*admitted)
        answered_after = time.monotonic() - sent
    return {"ready": ready, "live": live, "refused": refused, "answers": answers, "answered_after": answered_after}


def test_sigterm_turns_readiness_503_answers_admitted_work_and_exits_0(start_server):
    # Batches would wait 10 s to fill; the drain sends them at once. The port stays open 2 s after SIGTERM
    # (SHUTDOWN_DELAY_S) so that readiness can be seen turning 503.
    server = start_server(SENTIMENT_MAX_WAIT_MS="10000", SENTIMENT_SHUTDOWN_DELAY_S="2")
    server.wait_ready()
    seen = asyncio.run(_sigterm_drain(server))
    assert seen["ready"].status_code == 503 and seen["ready"].json()["error"]["code"] == "shutting_down"
    assert seen["live"].status_code == 200
    assert seen["refused"].status_code == 503 and seen["refused"].headers["retry-after"] == "1"
    assert [r.status_code for r in seen["answers"]] == [200] * 6
    assert seen["answered_after"] < 8
    assert server.proc.wait(30) == 0
    log = server.log()
    assert "SIGTERM: draining" in log
    assert "Traceback" not in log
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health/live", timeout=2)


def test_a_real_server_serves_logs_request_ids_and_limits_bodies(start_server):
    server = start_server(SENTIMENT_LOG_JSON="true", SENTIMENT_MAX_BODY_BYTES="2000")
    server.wait_ready()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        ok = c.post("/predict", json={"texts": ["fine", "great"]}, headers={"x-request-id": "proc-test-1"})
        assert ok.status_code == 200 and len(ok.json()["results"]) == 2
        assert ok.headers["x-request-id"] == "proc-test-1"
        declared = c.post("/predict", json={"text": "x" * 5000})
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "body_too_large"

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(50):
                yield b"y" * 100

        streamed = c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
    assert server.stop() == 0
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "app.access" and line.get("request_id") == "proc-test-1"]
    assert len(access) == 1
    assert access[0]["status"] == 200 and access[0]["path"] == "/predict" and access[0]["latency_ms"] > 0
    assert "queue_ms" in access[0] and "inference_ms" in access[0]


def test_the_port_is_not_open_until_the_model_is_ready(start_server):
    # Settings and the model are checked before uvicorn binds: a probe either cannot connect or sees 200.
    server = start_server()
    statuses = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and 200 not in statuses and server.proc.poll() is None:
        try:
            statuses.add(httpx.get(server.url + "/health/ready", timeout=2).status_code)
        except httpx.TransportError:
            time.sleep(0.05)
    assert server.stop() == 0, server.log()
    assert statuses == {200}
    with socket.socket() as s:  # and the port is released
        s.bind(("127.0.0.1", server.port))


async def _client_loop(url: str, n: int, outcomes: list, in_flight: list[int]) -> None:
    """Sends reviews back to back on fresh connections until it sees the 503 of a draining server (as a load
    balancer would) or the port is closed; records what each request got."""
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as c:
        for i in range(100_000):
            in_flight[0] += 1
            try:
                r = await c.post("/predict", json={"text": f"client {n}, review {i}: a fine cast, a thin plot"})
            except httpx.ConnectError:
                outcomes.append(("not connected", None))  # the listener had closed: never admitted
                return
            except httpx.TransportError as exc:
                outcomes.append(("broken", repr(exc)))  # admitted, then lost: what must never happen
                return
            finally:
                in_flight[0] -= 1
            outcomes.append((r.status_code, r.headers.get("retry-after")))
            if r.status_code == 503:
                return


async def _sigterm_under_load(server, clients: int) -> dict:
    outcomes: list = []
    in_flight = [0]
    loops = [asyncio.create_task(_client_loop(server.url, n, outcomes, in_flight)) for n in range(clients)]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as probe:
        while sum(1 for o in outcomes if o[0] == 200) < 3 * clients:  # load is flowing
            await asyncio.sleep(0.05)
        busy_at_signal = in_flight[0]
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        ready = (await probe.get("/health/ready")).status_code
    await asyncio.wait_for(asyncio.gather(*loops), 60)
    return {"outcomes": outcomes, "busy_at_signal": busy_at_signal, "ready": ready,
            "exit": await asyncio.to_thread(server.proc.wait, 60), "exited_after": time.monotonic() - sent}


def test_sigterm_under_load_answers_every_admitted_request_and_exits_0(start_server):
    # Batches linger 100 ms for company, so requests are always queued when the signal lands; the port stays open
    # 1 s after the drain so that clients see 503s rather than closed connections.
    server = start_server(SENTIMENT_MAX_WAIT_MS="100", SENTIMENT_SHUTDOWN_DELAY_S="1", SENTIMENT_SHUTDOWN_GRACE_S="10",
                          SENTIMENT_LOG_LEVEL="warning")
    server.wait_ready()
    seen = asyncio.run(_sigterm_under_load(server, clients=16))
    statuses = [o[0] for o in seen["outcomes"]]
    assert seen["busy_at_signal"] > 0
    assert seen["ready"] == 503
    assert "broken" not in statuses, [o for o in seen["outcomes"] if o[0] == "broken"]
    assert set(statuses) <= {200, 503, "not connected"}, sorted(set(map(str, statuses)))
    assert all(o[1] for o in seen["outcomes"] if o[0] == 503)  # every refusal says when to retry
    assert statuses.count(200) >= 48
    assert seen["exit"] == 0 and seen["exited_after"] < 10, seen["exited_after"]
    assert "Traceback" not in server.log()


async def _hammer(url: str, n: int, keep_alive: bool, outcomes: list) -> None:
    """Posts reviews back to back, 503s or not, until the port is closed: what a client that ignores readiness
    sees. New connection per request, or one kept alive (httpx reconnects when an answer says `Connection: close`)."""
    limits = httpx.Limits(max_keepalive_connections=None if keep_alive else 0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
        for i in range(1_000_000):
            try:
                r = await c.post("/predict", json={"text": f"client {n}, review {i}: a fine cast, a thin plot"})
            except httpx.ConnectError:
                outcomes.append(("refused", keep_alive))  # the listener had closed: never admitted
                return
            except httpx.TransportError as exc:  # reset or cut short after the request was sent
                outcomes.append((f"broken: {exc!r}", keep_alive))
                return
            outcomes.append((r.status_code, keep_alive))
            if r.status_code == 503 and not r.headers.get("retry-after"):
                outcomes.append(("503 without Retry-After", keep_alive))


@pytest.mark.parametrize("processes", ["1", "2"])
def test_sigterm_answers_every_connection_it_accepted_none_is_reset(start_server, processes):
    # Clients that keep posting through the drain (as a load balancer that is slow to notice would), on new and on
    # kept-alive connections: each request gets an HTTP answer until the port closes, then a refused connection.
    server = start_server(SENTIMENT_SHUTDOWN_DELAY_S="1", SENTIMENT_LOG_LEVEL="warning", SENTIMENT_PROCESSES=processes)
    server.wait_ready()

    async def scenario():
        outcomes: list = []
        clients = [asyncio.create_task(_hammer(server.url, n, n % 2 == 0, outcomes)) for n in range(16)]
        while sum(1 for o in outcomes if o[0] == 200) < 50:  # load is flowing
            await asyncio.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*clients), 60)
        return outcomes, await asyncio.to_thread(server.proc.wait, 60)

    outcomes, code = asyncio.run(scenario())
    broken = [o for o in outcomes if str(o[0]).startswith(("broken", "503 without"))]
    assert not broken, broken
    assert {o[0] for o in outcomes} <= {200, 503, "refused"}, {o[0] for o in outcomes}
    assert sum(1 for o in outcomes if o[0] == 503) > 0  # the drain was under way while clients kept coming
    assert sum(1 for o in outcomes if o[0] == "refused") == 16  # every client ended on a closed port
    assert code == 0, server.log()


def _pids(log: str) -> dict[int, int]:
    """Each server process's pid by its index, from uvicorn's "Started server process" lines."""
    return {int(i): int(pid) for i, pid in re.findall(r"\[process (\d+)\] uvicorn.error: Started server process "
                                                      r"\[(\d+)\]", log)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_several_processes_are_ready_together_count_together_and_stop_together(start_server):
    server = start_server(SENTIMENT_PROCESSES="2")
    server.wait_ready()
    log = server.wait_log(lambda log: "GET /health/ready 200" in log and "[process 1] app.service: ready" in log)
    # Process 1 starts once process 0 is warm; meanwhile process 0 serves, and readiness says 503.
    assert re.search(r"\[process 0\] app.access: GET /health/ready 503", log), log
    assert log.index("[process 1] app.service: ready") < log.index("GET /health/ready 200")

    def post(i: int) -> int:
        return httpx.post(server.url + "/predict", json={"text": f"review {i}: a fine cast"}, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:  # new connections, side by side: both processes accept some
        assert list(pool.map(post, range(64))) == [200] * 64
    log = server.wait_log(lambda log: log.count("app.access: POST /predict 200") >= 64)
    served = {i: log.count(f"[process {i}] app.access: POST /predict 200") for i in (0, 1)}
    assert sum(served.values()) == 64, served
    metrics = httpx.get(server.url + "/metrics").text  # from either process: the sum over both
    assert 'sentiment_requests_total{status="200"} 64.0' in metrics, metrics
    assert "sentiment_ready 1.0" in metrics
    pids = _pids(server.log())
    assert len(pids) == 2
    # Each in a process group of its own: a signal to the supervisor's group (Ctrl+C) reaches it once, forwarded.
    assert all(os.getpgid(pid) == pid for pid in pids.values())
    assert server.stop() == 0
    assert not any(_alive(pid) for pid in pids.values())
    assert server.log().count("SIGTERM: draining") == 2


def test_by_default_a_cpu_server_runs_one_process_per_usable_core_with_one_worker_each(start_server):
    processes, workers = auto_layout(False, usable_cores())
    server = start_server(SENTIMENT_PROCESSES="auto", SENTIMENT_TORCH_WORKERS="auto")
    server.wait_ready()
    log = server.wait_log(lambda log: log.count("app.service: ready") >= processes)
    if processes > 1:
        assert f"started {processes} server processes" in log, log
    assert log.count(f"{workers} torch worker(s)") == processes, log
    assert server.stop() == 0


def test_connections_opened_together_are_spread_over_the_processes(start_server):
    """A client pool opening its keep-alive connections at once (as wrk does): with one socket shared by both
    processes, the first to wake accepted nearly all of them. One socket each (SO_REUSEPORT) spreads them."""
    server = start_server(SENTIMENT_PROCESSES="2")
    server.wait_ready()
    # Opened in one burst, before any is used: the kernel completes each handshake before a process accepts it.
    conns = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(16)]
    try:
        for s in conns:
            s.sendall(b"GET /health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert [int(s.recv(64).split()[1]) for s in conns] == [200] * 16
    finally:
        for s in conns:
            s.close()
    assert server.stop() == 0
    served = [server.log().count(f"[process {i}] app.access: GET /health/live 200") for i in (0, 1)]
    # Shared, it was 16 and 0, run after run. Spread by a hash, each gets some (both at least 1: p > 0.999).
    assert sum(served) == 16 and min(served) >= 1, served


def test_when_one_process_dies_the_others_stop_and_the_server_exits_non_zero(start_server):
    server = start_server(SENTIMENT_PROCESSES="2")
    server.wait_ready()
    pids = _pids(server.log())
    os.kill(pids[1], signal.SIGKILL)
    assert server.proc.wait(30) == 1
    assert not _alive(pids[0])
    log = server.log()
    assert re.search(r"server process 1 \(pid \d+\) ended with exit code -9; stopping the others", log), log
    assert "[process 0] app.server: SIGTERM: draining" in log


# A real `python -m app` whose forward passes (after the warm-up) take a minute: the shutdown grace must cut it short.
_STUCK_SERVER = """
import runpy, sys, time
from app.batcher import Batcher
real = Batcher._forward
Batcher._forward = lambda self, jobs: (time.sleep(60), real(self, jobs))[1]
sys.argv = ["app", *sys.argv[1:]]
runpy.run_module("app", run_name="__main__")
"""


def test_when_the_grace_runs_out_waiting_requests_get_503_and_the_process_exits_0_in_time(start_server):
    server = start_server(script=_STUCK_SERVER, SENTIMENT_SHUTDOWN_GRACE_S="2")
    server.wait_ready()
    proc = server.proc

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            stuck = [asyncio.create_task(c.post("/predict", json={"text": f"stuck {i}"})) for i in range(3)]
            # At least one is in a forward pass (with the default two workers, maybe two), the rest queued.
            while not re.search(r"^sentiment_batch_size_count [1-9]", (await c.get("/metrics")).text, re.M):
                await asyncio.sleep(0.05)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            answers = await asyncio.gather(*stuck)
            code = await asyncio.to_thread(proc.wait, 30)
            return answers, code, time.monotonic() - sent

    answers, code, elapsed = asyncio.run(scenario())
    text = server.log()
    for r in answers:  # in the forward pass or queued behind it: refused properly, not dropped
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "shutting_down" and r.headers["retry-after"]
    assert code == 0, text
    assert elapsed < 2 + 3, elapsed  # the grace, plus a second for responses in flight, plus margin
    assert "shutdown grace (2.0 s) ran out" in text


@pytest.mark.parametrize("allocator, malloc_conf", [("jemalloc", "app"), ("jemalloc", ""), ("glibc", "")])
def test_the_server_names_its_memory_allocator_and_trims_only_under_glibc(start_server, allocator, malloc_conf):
    from app.memory import JEMALLOC_CONF, jemalloc_library

    library = jemalloc_library()
    if allocator == "jemalloc" and library is None:
        pytest.skip("jemalloc is not installed here (apt-get install libjemalloc2); the Docker image has it")
    conf = JEMALLOC_CONF if malloc_conf == "app" else malloc_conf
    server = start_server(LD_PRELOAD=library if allocator == "jemalloc" else "", MALLOC_CONF=conf,
                          SENTIMENT_MALLOC_TRIM_S="0.05")
    server.wait_ready()
    time.sleep(0.5)
    metrics = httpx.get(server.url + "/metrics").text
    trims = float(re.search(r"^sentiment_malloc_trim_seconds_count (\S+)$", metrics, re.M).group(1))
    assert server.stop() == 0
    log = server.log()
    assert f"memory allocator {allocator}" in log
    if allocator == "jemalloc":
        assert trims == 0 and "preload jemalloc" not in log  # jemalloc returns memory by itself
        # Run without the app's MALLOC_CONF (jemalloc's defaults), the log says what to set.
        assert (f"set MALLOC_CONF={JEMALLOC_CONF}" in log) == (conf != JEMALLOC_CONF), log
    else:
        assert trims >= 2 and "preload jemalloc" in log  # and a warning says how to keep memory flat


def test_the_server_tokenises_without_the_tokenizers_thread_pool_unless_asked(start_server):
    # Each torch worker tokenises its own batch; the tokenizer's thread pool (rayon) would add threads of its own.
    threads = {}
    for setting in (None, "true"):
        server = start_server(**({"TOKENIZERS_PARALLELISM": setting} if setting else {}))
        server.wait_ready()
        texts = ["A long and winding review of a film I liked a great deal. " * 20] * 32
        assert httpx.post(server.url + "/predict", json={"texts": texts}, timeout=30).status_code == 200
        threads[setting] = len(list(Path(f"/proc/{server.proc.pid}/task").iterdir()))
        assert server.stop() == 0
    assert threads["true"] > threads[None]


def test_the_server_shortens_the_gil_switch_interval_and_keeps_a_tokenizer_setting_given_to_it():
    code = ("import os, sys, app.__main__ as m; m.sequential_tokenizer(); m.share_the_gil(); "
            "print(round(sys.getswitchinterval() * 1e6), os.environ['TOKENIZERS_PARALLELISM'])")
    for given, expected in ((None, "false"), ("true", "true")):
        env = {"PATH": "/usr/bin:/bin", **({"TOKENIZERS_PARALLELISM": given} if given else {})}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             check=True).stdout.split()
        assert out == ["100", expected]  # microseconds


PRIMITIVE_CACHE_RUN = """
import os, app.__main__ as m
m.bounded_primitive_cache()
from model import load_model
from model.predictor import Encoded
model = load_model(device="cpu")
def rss_mb(): return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
model.predict_encoded([Encoded((5,) * 10, 10)])
before = rss_mb()
for i in range(600):  # batches of 600 different shapes (steps on multiples of 16), as live traffic makes them
    steps = 16 * (1 + i // 40)
    model.predict_encoded([Encoded((5,) * steps, steps)] * (1 + i % 40))
print(os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"], rss_mb() - before)
"""


def test_the_server_bounds_onednns_cache_of_lstm_shapes_and_keeps_a_capacity_given_to_it():
    grew = {}
    for given, expected in ((None, "128"), ("1024", "1024")):  # (1024: oneDNN's own default)
        env = {"PATH": "/usr/bin:/bin", **({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": given} if given else {})}
        capacity, mb = subprocess.run([sys.executable, "-c", PRIMITIVE_CACHE_RUN], cwd=ROOT, env=env,
                                      capture_output=True, text=True, check=True).stdout.split()
        assert capacity == expected
        grew[capacity] = float(mb)
    assert grew["128"] < grew["1024"] - 20, grew  # each cached shape holds memory


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_event_loop_is_a_setting(start_server, loop):
    server = start_server(SENTIMENT_EVENT_LOOP=loop)  # (asyncio is the default)
    server.wait_ready()
    assert httpx.post(server.url + "/predict", json={"text": "A fine film."}, timeout=30).status_code == 200
    uses_uvloop = "uvloop" in Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert server.stop() == 0
    assert uses_uvloop == (loop == "uvloop")


def test_the_listening_socket_says_it_is_tcp_so_asyncio_sets_nodelay_on_connections():
    # Without IPPROTO_TCP asyncio leaves Nagle on, and a lone request waited 40 ms for a delayed ACK.
    from app.__main__ import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


@pytest.mark.skipif(usable_cores() < 2, reason="lending an idle core to a pass needs two usable cores")
def test_a_lone_pass_runs_on_an_idle_core_too_and_answers_the_same(start_server):
    texts = ["A moving, beautifully acted film.", "Dull, and far too long: I left early."]
    answers = {}
    for setting in ("true", "false"):
        server = start_server(SENTIMENT_USE_IDLE_CORES=setting, SENTIMENT_TORCH_WORKERS="1")
        server.wait_ready()
        answers[setting] = [httpx.post(server.url + "/predict", json={"text": t}, timeout=30).json()["probabilities"]
                            for t in texts]
        metrics = httpx.get(server.url + "/metrics").text
        helped = float(re.search(r"^sentiment_helped_passes_total (\S+)$", metrics, re.M).group(1))
        assert helped >= len(texts) if setting == "true" else helped == 0, metrics
        assert server.stop() == 0
    assert answers["true"] == answers["false"]
