"""Overload: a burst far beyond what the service can serve, and what it must still promise (docs/reliability.md).

    python -m bench.overload                                   # 512 connections for 30 s, then a minute's rest
    python -m bench.overload --connections 1024 --duration 60 --env SENTIMENT_MAX_QUEUE=256

Starts the real server (`python -m app` on a free 127.0.0.1 port), measures a lone request's latency and the
throughput at moderate load, then runs the burst with wrk (closed loop, real IMDB test reviews, bench/rotate.lua)
while a sampler checks every second that the process is alive and /health/ready answers 200. Checks: the server
stayed up and ready; every answer was 200, or 429/503 with Retry-After; no 5xx; no socket error; no request took
longer than SENTIMENT_REQUEST_TIMEOUT_S (wrk's p99 and max); after a minute's rest a lone request is as fast as
before (median within 25% + 2 ms). Prints a table, writes JSON; exit status 1 if any check failed.
Needs wrk (apt-get install -y wrk) and a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import (
    DEFAULT_DATA,
    Sampler,
    lone_latency,
    metrics,
    report,
    review_bodies,
    setting,
    start_service,
    wrk,
)


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("SENTIMENT_"):
            raise SystemExit(f"--env takes SENTIMENT_NAME=value, not {pair!r}")
        env[name] = value
    return env


def wrk_row(name: str, r: dict) -> dict:
    return {"phase": name, "requests": r["requests"], "req_per_s": r["requests"] / r["seconds"],
            "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000, "max_ms": r["max_us"] / 1000,
            "statuses": r["statuses"], "no_retry_after": r["no_retry_after"], "socket_errors": r["socket_errors"],
            "errors": r["errors"]}


def table(result: dict) -> str:
    lines = [("| phase | conns | requests | req/s | p50 ms | p99 ms | max ms | statuses | 429/503 w/o Retry-After | "
              "socket errors |"), "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for row in result["load"]:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(row["statuses"].items()))
        lines.append(f"| {row['phase']} | {row['connections']} | {row['requests']} | {row['req_per_s']:.1f} | "
                     f"{row['p50_ms']:.0f} | {row['p99_ms']:.0f} | {row['max_ms']:.0f} | {statuses} | "
                     f"{row['no_retry_after']} | {row['socket_errors']} |")
    lines += ["", "| lone request | p50 ms | p90 ms | max ms |", "|---|---:|---:|---:|"]
    for name in ("before", "after"):
        s = result["lone"][name]
        lines.append(f"| {name} the burst | {s['p50_ms']:.1f} | {s['p90_ms']:.1f} | {s['max_ms']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="aclImdb_v1.tar.gz or its folder (test reviews)")
    p.add_argument("--reviews", type=int, default=2000, help="distinct test reviews rotated through")
    p.add_argument("--connections", type=int, default=512, help="wrk connections during the burst")
    p.add_argument("--duration", type=float, default=30, help="seconds of burst")
    p.add_argument("--capacity-connections", type=int, default=64, help="connections for the capacity run")
    p.add_argument("--capacity-duration", type=float, default=10, help="seconds of the capacity run (0: skip)")
    p.add_argument("--rest", type=float, default=60, help="seconds between the burst and the lone request after")
    p.add_argument("--lone", type=int, default=100, help="requests in each lone-latency measurement")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--model-dir", default=None, help="artifact to serve (default: SENTIMENT_MODEL_DIR or the "
                                                     "shipped model)")
    p.add_argument("--env", action="append", default=[], metavar="SENTIMENT_X=V", help="extra server setting")
    p.add_argument("--out", default="bench/results/overload.json", help="JSON results file")
    a = p.parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    env = parse_env(a.env)
    deadline_s = float(setting(env, "request_timeout_s"))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {"connections": a.connections, "duration_s": a.duration, "rest_s": a.rest, "env": env,
                    "request_timeout_s": deadline_s, "load": [], "lone": {}}
    with tempfile.TemporaryDirectory() as tmp:
        texts, bodies = review_bodies(a.data, a.reviews, Path(tmp) / "bodies.jsonl")
        lone_texts = texts[: a.lone]
        server = start_service(out.with_suffix(".server.log"), env, a.model_dir)
        print(f"server ready in {server.ready_s:.1f} s (pid {server.proc.pid}, port {server.port})", flush=True)
        try:
            lone_latency(server.port, lone_texts[:10])  # warm the connection path
            result["lone"]["before"] = lone_latency(server.port, lone_texts)
            print(f"lone request before: p50 {result['lone']['before']['p50_ms']:.1f} ms", flush=True)
            if a.capacity_duration > 0:
                r = wrk(server.port, bodies, a.capacity_connections, a.capacity_duration, a.threads, deadline_s + 30)
                result["load"].append({**wrk_row("capacity", r), "connections": a.capacity_connections})
                result["capacity_req_per_s"] = result["load"][-1]["req_per_s"]
                print(f"capacity ({a.capacity_connections} conns): {result['capacity_req_per_s']:.1f} req/s",
                      flush=True)
            rss_before = server.rss_mb()
            before = metrics(server.port)
            sampler = Sampler(server, interval_s=1.0)
            sampler.start()
            # wrk's own timeout is past the deadline: a slow answer is measured, not hidden as a socket timeout.
            r = wrk(server.port, bodies, a.connections, a.duration, a.threads, deadline_s + 30)
            samples = sampler.stop()
            result["load"].append({**wrk_row("burst", r), "connections": a.connections})
            after = metrics(server.port)
            result["metrics_delta"] = {k: after[k] - before.get(k, 0.0) for k in after
                                       if k.startswith(("sentiment_requests_total", "sentiment_rejected",
                                                        "sentiment_dropped", "sentiment_inference_failures"))
                                       and after[k] != before.get(k, 0.0)}
            result["rss_mb"] = {"before": rss_before, "peak_during": max(s.get("rss_mb", 0) for s in samples),
                                "after": server.rss_mb()}
            result["probes"] = {"count": len(samples), "not_200": [s for s in samples if s.get("ready") != 200],
                                "max_probe_ms": max((s.get("probe_ms", 0) for s in samples), default=0)}
            print(f"resting {a.rest:.0f} s", flush=True)
            time.sleep(a.rest)
            alive_after_rest = server.proc.poll() is None
            result["lone"]["after"] = lone_latency(server.port, lone_texts)
        finally:
            result["exit_code"] = server.stop()
    burst = result["load"][-1]
    statuses = {int(k): v for k, v in burst["statuses"].items()}
    lone_b, lone_a = result["lone"]["before"], result["lone"]["after"]
    checks = {
        "process stayed up": (all(s["alive"] for s in samples) and alive_after_rest, f"{len(samples)} samples"),
        "ready throughout (/health/ready 200)": (
            not result["probes"]["not_200"],
            (f"{len(samples) - len(result['probes']['not_200'])}/{len(samples)} probes 200, slowest "
             f"{result['probes']['max_probe_ms']:.0f} ms")),
        "only 200, 429, 503": (set(statuses) <= {200, 429, 503}, json.dumps(burst["statuses"])),
        "429/503 carry Retry-After": (burst["no_retry_after"] == 0, f"{burst['no_retry_after']} without"),
        "no socket errors": (burst["socket_errors"] == 0, json.dumps(burst["errors"])),
        "p99 and max below the deadline": (
            burst["max_ms"] < 1000 * deadline_s,
            f"p99 {burst['p99_ms']:.0f} ms, max {burst['max_ms']:.0f} ms < {deadline_s:g} s"),
        "a lone request as fast after a minute": (
            lone_a["p50_ms"] <= 1.25 * lone_b["p50_ms"] + 2,
            f"p50 {lone_b['p50_ms']:.1f} ms before, {lone_a['p50_ms']:.1f} ms after"),
        "clean exit on SIGTERM": (result["exit_code"] == 0, f"exit {result['exit_code']}"),
    }
    result["checks"] = {k: {"ok": ok, "detail": d} for k, (ok, d) in checks.items()}
    result["ok"] = all(ok for ok, _ in checks.values())
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"RSS: {result['rss_mb']['before']:.0f} MB before, {result['rss_mb']['peak_during']:.0f} MB peak, "
          f"{result['rss_mb']['after']:.0f} MB after the burst; server-side counts: "
          f"{json.dumps(result['metrics_delta'])}")
    ok = report(checks)
    print(f"{'PASS' if ok else 'FAIL'}; results in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
