"""What bench.overload and bench.soak share: the real server (bench.run.Server), bodies from real IMDB test reviews,
a lone request's latency, a readiness prober and an RSS sampler running beside the load, and /metrics."""

from __future__ import annotations

import http.client
import json
import os
import re
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

from bench.run import Server, free_port, preload, test_reviews, write_bodies

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
