"""What the benchmark scripts share: a real server process (`Server`), wrk, bodies from real IMDB test reviews, a
lone request's latency, a readiness prober and an RSS sampler running beside the load, and /metrics."""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).with_name("rotate.lua")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def preload() -> dict[str, str]:
    """jemalloc for server processes when this machine has it, as `make serve` and the Docker image run them (set
    LD_PRELOAD yourself to choose; empty to keep glibc's malloc)."""
    from app.memory import JEMALLOC_CONF, jemalloc_library

    if "LD_PRELOAD" in os.environ:
        return {}
    library = jemalloc_library()
    return {"LD_PRELOAD": library, "MALLOC_CONF": os.environ.get("MALLOC_CONF", JEMALLOC_CONF)} if library else {}


def test_reviews(data: str, n: int, seed: int) -> list[str]:
    from model import data as imdb

    reviews = [r.text for r in imdb.iter_reviews(data, ("test",))]
    random.Random(seed).shuffle(reviews)
    return reviews[:n]


class Server:
    """A server subprocess on a free port, with its CPU time and peak RSS read from /proc."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, log_path: Path | None = None):
        """`log_path`: where the server's output goes (long runs must not fill an unread pipe); default a pipe."""
        self.port = port
        started = time.perf_counter()
        self._log = open(log_path, "w") if log_path else subprocess.PIPE  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                     stderr=self._log, text=True, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                output = log_path.read_text() if log_path else self.proc.stderr.read()
                raise RuntimeError(f"server exited: {output[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("server never became ready")
        self.ready_s = time.perf_counter() - started

    def pids(self) -> list[int]:
        """The server's processes: it and every process under it (its own session, so its process group, and the
        children of a supervisor, which run in process groups of their own: app/processes.py)."""
        parents: dict[int, tuple[int, int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            parents[int(stat.parent.name)] = (int(fields[1]), int(fields[2]))  # parent pid, process group
        root = self.proc.pid
        found = {pid for pid, (_, group) in parents.items() if group == root} | {root}
        while True:
            more = {pid for pid, (parent, _) in parents.items() if parent in found} - found
            if not more:
                break
            found |= more
        return sorted(pid for pid in found if pid in parents) or [root]

    def cpu_seconds(self) -> float:
        """CPU time of all of the server's processes (see `pids`)."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def allocator(self) -> str:
        """`jemalloc` if the server process has it loaded, else `glibc`."""
        from app.memory import jemalloc_loaded

        return "jemalloc" if jemalloc_loaded(self.proc.pid) else "glibc"

    def _memory_mb(self, field: str) -> float:
        total = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            found = re.search(rf"{field}:\s+(\d+)", status)
            total += int(found.group(1)) if found else 0
        return total / 1024

    def peak_rss_mb(self) -> float:
        """The sum of each server process's peak RSS: an upper bound on their peak together."""
        return self._memory_mb("VmHWM")

    def rss_mb(self) -> float:
        return self._memory_mb("VmRSS")

    def stop(self) -> int:
        """SIGTERM (a drain), then SIGKILL after 40 s; the exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not subprocess.PIPE:
            self._log.close()
        return self.proc.returncode


def wrk(port: int, bodies: Path, connections: int, duration: float, threads: int = 2, timeout_s: float = 60) -> dict:
    """One closed-loop wrk run; the Lua script prints a JSON summary line at the end."""
    # wrk takes whole seconds only ("-d2.5s" is a usage error).
    cmd = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{max(1, round(duration))}s",
           "--timeout", f"{max(1, round(timeout_s))}s",
           "-s", str(LUA), f"http://127.0.0.1:{port}/predict"]
    out = subprocess.run(cmd, env={**os.environ, "BENCH_BODIES": str(bodies)}, capture_output=True, text=True,
                         timeout=duration + 120).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    return json.loads(line[5:])


def write_bodies(path: Path, texts: list[str], per_request: int) -> Path:
    with path.open("w") as f:
        for i in range(0, len(texts) - per_request + 1, per_request):
            chunk = texts[i:i + per_request]
            body = {"text": chunk[0]} if per_request == 1 else {"texts": chunk}
            f.write(json.dumps(body) + "\n")
    return path


DEFAULT_DATA = "../shared/data/aclImdb_v1.tar.gz"


def start_service(log_path: Path, env: dict[str, str] | None = None, model_dir: str | None = None) -> Server:
    """`python -m app` on a free 127.0.0.1 port, logging to `log_path`, ready."""
    port = free_port()
    full = {"SENTIMENT_DEVICE": os.environ.get("SENTIMENT_DEVICE", "cpu"), "SENTIMENT_LOG_LEVEL": "warning",
            **preload(), **({"SENTIMENT_MODEL_DIR": model_dir} if model_dir else {}), **(env or {})}
    return Server([sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)], full, port, log_path)


def setting(env: dict[str, str], name: str) -> object:
    """The value the server runs with: from `env` (SENTIMENT_<NAME>) or the setting's default."""
    from app.config import Settings, env_name

    raw = env.get(env_name(name), os.environ.get(env_name(name)))
    default = Settings.model_fields[name].default
    return type(default)(raw) if raw is not None else default


def review_bodies(data: str, n: int, path: Path) -> tuple[list[str], Path]:
    texts = test_reviews(data, n, seed=0)
    return texts, write_bodies(path, texts, 1)


def lone_latency(port: int, texts: list[str]) -> dict:
    """One request at a time over one keep-alive connection: the latency a lone client sees, in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    try:
        for text in texts:
            body = json.dumps({"text": text})
            started = time.perf_counter()
            conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            times.append((time.perf_counter() - started) * 1000)
            if r.status != 200:
                raise RuntimeError(f"a lone request got {r.status}")
    finally:
        conn.close()
    times.sort()
    return {"requests": len(times), "p50_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
            "p90_ms": times[int(0.9 * (len(times) - 1))], "max_ms": times[-1]}


def metrics(port: int) -> dict[str, float]:
    """The server's /metrics as {sample: value} (labels kept in the name)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(sentiment_[^ ]+) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


class Sampler(threading.Thread):
    """Every `interval_s`: the server's RSS, whether it is alive, and /health/ready (status and latency)."""

    def __init__(self, server: Server, interval_s: float = 1.0, probe_timeout_s: float = 5.0):
        super().__init__(daemon=True)
        self.server = server
        self.interval_s = interval_s
        self.probe_timeout_s = probe_timeout_s
        self.samples: list[dict] = []
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self._halt.is_set():
            t = time.monotonic()
            sample = {"t": round(t - self.t0, 3), "alive": self.server.proc.poll() is None}
            if sample["alive"]:
                sample["rss_mb"] = self.server.rss_mb()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.server.port}/health/ready",
                                                timeout=self.probe_timeout_s) as r:
                        sample["ready"] = r.status
                except urllib.error.HTTPError as exc:
                    sample["ready"] = exc.code
                except OSError as exc:
                    sample["ready"] = f"error: {exc}"
                sample["probe_ms"] = round((time.monotonic() - t) * 1000, 1)
            self.samples.append(sample)
            self._halt.wait(max(0.0, self.interval_s - (time.monotonic() - t)))

    def stop(self) -> list[dict]:
        self._halt.set()
        self.join()
        return self.samples


def report(checks: dict[str, tuple[bool, str]]) -> bool:
    width = max(map(len, checks))
    for name, (ok, detail) in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name:{width}s}  {detail}")
    return all(ok for ok, _ in checks.values())
