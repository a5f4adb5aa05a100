"""Benchmark: the model in-process (the limit), the batching service, and a naive one-pass-per-request server.

    python -m bench.run --data ../shared/data/aclImdb_v1.tar.gz          # what `make bench` runs
    python -m bench.run --data PATH --duration 5 --concurrency 1 16       # a quick look

Bodies are real IMDB test reviews (their real length distribution). Load comes from `wrk` (closed loop, a Lua
script rotating the bodies); the server's CPU time and peak RSS come from /proc. Writes results JSON, a PNG plot
and a Markdown table to --out. Not part of the test suite: numbers depend on the machine and need it quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


def in_process(texts: list[str], batch_sizes: list[int], device: str, thread_counts: list[int]) -> list[dict]:
    """`predict_proba` at each batch size and torch thread count, in this (main) thread, which loaded the model.

    predict_proba sorts the whole sample by length before batching, so these batches carry almost no padding:
    a limit that live traffic (random lengths) cannot quite reach.
    """
    import torch

    from model import load_model

    model = load_model(device=device)
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        model.predict_proba(texts[:64])  # warm-up
        for bs in batch_sizes:
            sample = texts if bs > 1 else texts[: max(200, len(texts) // 4)]
            started = time.perf_counter()
            model.predict_proba(sample, batch_size=bs)
            seconds = time.perf_counter() - started
            rows.append({"batch_size": bs, "reviews_per_s": len(sample) / seconds,
                         "latency_ms": 1000 * seconds / len(sample) * bs, "threads": threads})
            print(f"  in-process threads {threads} batch {bs:4d}: {rows[-1]['reviews_per_s']:8.1f} reviews/s",
                  flush=True)
    return rows


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

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def allocator(self) -> str:
        """`jemalloc` if the server process has it loaded, else `glibc`."""
        from app.memory import jemalloc_loaded

        return "jemalloc" if jemalloc_loaded(self.proc.pid) else "glibc"

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024

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


def load_levels(name: str, server: Server, bodies: Path, levels: list[int], duration: float,
                texts_per_request: int) -> list[dict]:
    wrk(server.port, bodies, max(levels), min(3.0, duration))  # warm-up
    rows = []
    for c in levels:
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        r = wrk(server.port, bodies, c, duration)
        cpu = (server.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
        row = {"server": name, "connections": c, "texts_per_request": texts_per_request,
               "requests_per_s": r["requests"] / r["seconds"],
               "reviews_per_s": r["requests"] / r["seconds"] * texts_per_request,
               "p50_ms": r["p50_us"] / 1000, "p90_ms": r["p90_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
               "non_2xx": r["non_2xx"], "status_429_503": r["status_429_503"], "socket_errors": r["socket_errors"],
               "server_cpu_cores": cpu, "server_peak_rss_mb": server.peak_rss_mb()}
        rows.append(row)
        print(f"  {name:8s} c={c:4d} x{texts_per_request:<3d}: {row['requests_per_s']:8.1f} req/s "
              f"{row['reviews_per_s']:8.1f} reviews/s  p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:8.1f} ms  "
              f"non-2xx {row['non_2xx']}  socket errors {row['socket_errors']}  cpu {cpu:.2f}  "
              f"rss {row['server_peak_rss_mb']:.0f} MB", flush=True)
    return rows


def write_bodies(path: Path, texts: list[str], per_request: int) -> Path:
    with path.open("w") as f:
        for i in range(0, len(texts) - per_request + 1, per_request):
            chunk = texts[i:i + per_request]
            body = {"text": chunk[0]} if per_request == 1 else {"texts": chunk}
            f.write(json.dumps(body) + "\n")
    return path


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    limit = max(r["reviews_per_s"] for r in results["in_process"])
    for name in ("service", "naive"):
        rows = [r for r in results["http"] if r["server"] == name and r["texts_per_request"] == 1]
        if rows:
            xs = [r["connections"] for r in rows]
            a.plot(xs, [r["reviews_per_s"] for r in rows], "o-", label=name)
            b.plot(xs, [r["p99_ms"] for r in rows], "o-", label=name)
    a.axhline(limit, ls="--", color="grey", label="in-process limit (best batch)")
    a.set(xscale="log", xlabel="connections", ylabel="reviews/s", title="Throughput (1 review per request)")
    b.set(xscale="log", yscale="log", xlabel="connections", ylabel="p99 latency (ms)", title="p99 latency")
    a.legend()
    b.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(results: dict) -> str:
    limit = max(results["in_process"], key=lambda r: r["reviews_per_s"])
    lines = ["| in-process torch threads | batch size | reviews/s | ms per batch |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['threads']} | {r['batch_size']} | {r['reviews_per_s']:.1f} | {r['latency_ms']:.1f} |"
              for r in results["in_process"]]
    lines += ["", "| server | conns | texts/req | req/s | reviews/s | p50 ms | p90 ms | p99 ms | non-2xx | 429/503 | "
              "socket err | CPU cores | peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["http"]:
        lines.append(f"| {r['server']} | {r['connections']} | {r['texts_per_request']} | {r['requests_per_s']:.1f} | "
                     f"{r['reviews_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{r['non_2xx']} | {r['status_429_503']} | {r['socket_errors']} | {r['server_cpu_cores']:.2f} | "
                     f"{r['server_peak_rss_mb']:.0f} |")
    lines += ["", f"In-process limit: {limit['reviews_per_s']:.1f} reviews/s at batch {limit['batch_size']} with "
                  f"{limit['threads']} torch thread(s)."]
    if "limit_after" in results:
        again = results["limit_after"]["reviews_per_s"]
        lines.append(f"Measured again after the servers: {again:.1f} reviews/s "
                     f"({again / limit['reviews_per_s'] - 1:+.0%}: how far this machine drifted during the run).")
    for key, text in results["ratios"].items():
        lines.append(f"- {key}: {text}")
    lines.append(f"- service start to ready: {results['ready_s']['service']:.1f} s")
    lines.append("- memory allocator: " + ", ".join(f"{k} {v}" for k, v in results.get("allocator", {}).items()))
    return "\n".join(lines)


def ratios(results: dict) -> dict:
    limit = max(r["reviews_per_s"] for r in results["in_process"])
    b1 = min((r for r in results["in_process"] if r["batch_size"] == 1), key=lambda r: r["latency_ms"], default=None)
    out = {}

    def pick(server, c, per):
        return next((r for r in results["http"] if r["server"] == server and r["connections"] == c
                     and r["texts_per_request"] == per), None)

    for c in sorted({r["connections"] for r in results["http"]}):
        s, n = pick("service", c, 1), pick("naive", c, 1)
        if s:
            out[f"service/limit, single texts, {c} conns"] = f"{s['reviews_per_s'] / limit:.0%}"
        if s and n:
            out[f"service/naive, single texts, {c} conns"] = f"{s['reviews_per_s'] / n['reviews_per_s']:.2f}x"
    for r in results["http"]:
        if r["server"] == "service" and r["texts_per_request"] > 1:
            out[f"service/limit, {r['texts_per_request']}-text requests, {r['connections']} conns"] = \
                f"{r['reviews_per_s'] / limit:.0%}"
    s1 = pick("service", 1, 1)
    if s1 and b1:
        out["p50 at 1 conn vs in-process batch-1 latency"] = f"{s1['p50_ms']:.1f} ms vs {b1['latency_ms']:.1f} ms"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="aclImdb_v1.tar.gz or its folder (test reviews are the bodies)")
    p.add_argument("--reviews", type=int, default=2000, help="distinct test reviews to use")
    p.add_argument("--duration", type=float, default=20, help="seconds per load level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256], help="wrk connections")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64, 128], help="in-process sizes")
    p.add_argument("--device", default=os.environ.get("SENTIMENT_DEVICE", "cpu"), help="cpu or cuda")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts tried in-process "
                                                                           "(the limit is the best of all)")
    p.add_argument("--skip-naive", action="store_true", help="do not run the naive server")
    p.add_argument("--out", default="bench/results", help="folder for results.json, plot.png, table.md")
    a = p.parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = test_reviews(a.data, a.reviews, seed=0)
    results: dict = {"device": a.device, "cpu_count": os.cpu_count(), "reviews": len(texts),
                     "duration_s": a.duration, "http": [], "ready_s": {}}
    print(f"in-process limit ({a.device}):", flush=True)
    results["in_process"] = in_process(texts, a.batch_sizes, a.device, a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        single = write_bodies(Path(tmp) / "single.jsonl", texts, 1)
        multi = write_bodies(Path(tmp) / "batch32.jsonl", texts, 32)
        env = {"SENTIMENT_DEVICE": a.device, "SENTIMENT_LOG_LEVEL": "warning", **preload()}
        servers = [("service", [sys.executable, "-m", "app"])]
        if not a.skip_naive:
            servers.append(("naive", [sys.executable, "-m", "bench.naive_server"]))
        for name, argv0 in servers:
            port = free_port()
            server = Server([*argv0, "--host", "127.0.0.1", "--port", str(port)], env, port)
            results["ready_s"][name] = server.ready_s
            results.setdefault("allocator", {})[name] = server.allocator()
            print(f"{name}: ready in {server.ready_s:.1f} s, memory allocator {server.allocator()}", flush=True)
            try:
                results["http"] += load_levels(name, server, single, a.concurrency, a.duration, 1)
                if name == "service":
                    results["http"] += load_levels(name, server, multi, [16], a.duration, 32)
            finally:
                server.stop()
    # This machine's speed drifts over minutes: the best in-process setting measured again, after the servers, shows
    # how far the limit moved while they ran (the ratios use the first measurement, as the table does).
    best = max(results["in_process"], key=lambda r: r["reviews_per_s"])
    print("in-process limit again, after the servers:", flush=True)
    results["limit_after"] = in_process(texts, [best["batch_size"]], a.device, [best["threads"]])[0]
    results["ratios"] = ratios(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (out / "table.md").write_text(table + "\n")
    try:
        plot(results, out / "plot.png")
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
