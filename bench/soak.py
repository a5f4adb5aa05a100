"""Soak: steady load at about half capacity for a long while; memory must stay flat and nothing may fail.

    python -m bench.soak --minutes 10                     # capacity measured first (wrk, 15 s), then half of it
    python -m bench.soak --minutes 10 --rate 80           # a fixed rate, requests per second

Starts the real server (`python -m app` on a free 127.0.0.1 port). The load is open loop: requests of real IMDB test
reviews are scheduled at a fixed rate and latency is counted from the scheduled time (a slow server cannot slow the
client down and hide it). Every second the server's RSS is sampled and /health/ready probed. Checks: no answer other
than 200 and no client error; RSS at the end within 5% of RSS one minute in (and its peak after the first minute
reported). Writes JSON and a PNG of the RSS curve; exit status 1 if a check failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.harness import DEFAULT_DATA, Sampler, metrics, report, review_bodies, start_service, wrk

WARM_S = 60.0  # RSS is compared from the end of the first minute: allocators and caches settle in it (--warm)


class PacedLoad:
    """`workers` threads, each with a keep-alive connection, sending request i at t0 + i / rate."""

    def __init__(self, port: int, bodies: list[str], rate: float, seconds: float, workers: int = 32):
        self.port, self.bodies, self.rate, self.seconds = port, bodies, rate, seconds
        self.total = int(rate * seconds)
        self.records: list[tuple[float, float, int | str]] = []  # (scheduled s, latency ms, status or error)
        self._next = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]

    def run(self) -> None:
        self.t0 = time.monotonic() + 0.5
        for t in self.threads:
            t.start()
        for t in self.threads:
            t.join()

    def _ticket(self) -> int | None:
        with self._lock:
            if self._next >= self.total:
                return None
            self._next += 1
            return self._next - 1

    def _work(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while (i := self._ticket()) is not None:
            scheduled = self.t0 + i / self.rate
            time.sleep(max(0.0, scheduled - time.monotonic()))
            try:
                conn.request("POST", "/predict", self.bodies[i % len(self.bodies)],
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                status: int | str = r.status
            except (OSError, http.client.HTTPException) as exc:
                status = f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.records.append((scheduled - self.t0, (time.monotonic() - scheduled) * 1000, status))
        conn.close()


def windows(records, samples, width_s: float = 10.0) -> list[dict]:
    """Per `width_s` window: requests/s, p50 and p99 latency, mean RSS."""
    end = max((r[0] for r in records), default=0.0)
    out = []
    t = 0.0
    while t < end:
        lat = sorted(r[1] for r in records if t <= r[0] < t + width_s)
        rss = [s["rss_mb"] for s in samples if "rss_mb" in s and t <= s["t_load"] < t + width_s]
        if lat:
            out.append({"t": t + width_s / 2, "req_per_s": len(lat) / width_s, "p50_ms": lat[len(lat) // 2],
                        "p99_ms": lat[int(0.99 * (len(lat) - 1))], "rss_mb": statistics.fmean(rss) if rss else None})
        t += width_s
    return out


def plot(samples, wins, baseline: float, warm_s: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 6), dpi=110, sharex=True)
    xs = [s["t_load"] / 60 for s in samples if "rss_mb" in s]
    a.plot(xs, [s["rss_mb"] for s in samples if "rss_mb" in s], lw=1, label="server RSS (1 s samples)")
    a.axvline(warm_s / 60, color="grey", ls=":", label="baseline taken here")
    a.axhspan(baseline, baseline * 1.05, color="green", alpha=0.12, label="baseline to +5%")
    a.set(ylabel="RSS (MB)", title=title)
    a.legend(loc="lower right")
    b.plot([w["t"] / 60 for w in wins], [w["p50_ms"] for w in wins], label="p50")
    b.plot([w["t"] / 60 for w in wins], [w["p99_ms"] for w in wins], label="p99")
    b.set(xlabel="minutes of load", ylabel="latency (ms), 10 s windows", yscale="log")
    b.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10, help="minutes of steady load")
    p.add_argument("--rate", type=float, default=None, help="requests per second (default: --fraction of the "
                                                            "capacity measured first)")
    p.add_argument("--fraction", type=float, default=0.5, help="share of the measured capacity to offer")
    p.add_argument("--capacity-duration", type=float, default=15, help="seconds of the capacity run (wrk)")
    p.add_argument("--capacity-connections", type=int, default=64, help="connections for the capacity run")
    p.add_argument("--data", default=DEFAULT_DATA, help="aclImdb_v1.tar.gz or its folder (test reviews)")
    p.add_argument("--reviews", type=int, default=2000, help="distinct test reviews rotated through")
    p.add_argument("--model-dir", default=None, help="artifact to serve (default: the shipped model)")
    p.add_argument("--max-growth", type=float, default=5.0, help="allowed RSS growth after the first minute, %%")
    p.add_argument("--warm", type=float, default=WARM_S, help="seconds after which RSS is the baseline")
    p.add_argument("--out", default="bench/results/soak.json", help="JSON results; the PNG goes next to it")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {"minutes": a.minutes}
    with tempfile.TemporaryDirectory() as tmp:
        texts, bodies_path = review_bodies(a.data, a.reviews, Path(tmp) / "bodies.jsonl")
        server = start_service(out.with_suffix(".server.log"), model_dir=a.model_dir)
        result["allocator"] = server.allocator()
        print(f"server ready in {server.ready_s:.1f} s (pid {server.proc.pid}, port {server.port}, memory allocator "
              f"{result['allocator']})", flush=True)
        try:
            if a.rate is None:
                if not shutil.which("wrk"):
                    sys.exit("wrk not found (apt-get install -y wrk), or give --rate")
                r = wrk(server.port, bodies_path, a.capacity_connections, a.capacity_duration, 2, 60)
                result["capacity_req_per_s"] = r["requests"] / r["seconds"]
                rate = a.fraction * result["capacity_req_per_s"]
                print(f"capacity: {result['capacity_req_per_s']:.1f} req/s; soaking at {rate:.1f} req/s", flush=True)
                time.sleep(5)  # let the capacity run's queue drain
            else:
                rate = a.rate
            result["rate_req_per_s"] = rate
            before = metrics(server.port)
            load = PacedLoad(server.port, [json.dumps({"text": t}) for t in texts], rate, 60 * a.minutes)
            sampler = Sampler(server, interval_s=1.0)
            sampler.start()
            load.run()
            samples = sampler.stop()
            after = metrics(server.port)
        finally:
            result["exit_code"] = server.stop()
    for s in samples:
        s["t_load"] = s["t"] - (load.t0 - sampler.t0)
    loaded = [s for s in samples if "rss_mb" in s and 0 <= s["t_load"] <= 60 * a.minutes]
    baseline = statistics.median(s["rss_mb"] for s in loaded if a.warm <= s["t_load"] < a.warm + 10)
    end = statistics.median(s["rss_mb"] for s in loaded if s["t_load"] >= 60 * a.minutes - 10)
    peak = max(s["rss_mb"] for s in loaded if s["t_load"] >= a.warm)
    first = loaded[0]["rss_mb"]
    statuses: dict[str, int] = {}
    for _, _, status in load.records:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    latencies = sorted(r[1] for r in load.records)
    wins = windows(load.records, samples)
    result.update({
        "requests": len(load.records), "statuses": statuses,
        "latency_ms": {"p50": latencies[len(latencies) // 2], "p99": latencies[int(0.99 * (len(latencies) - 1))],
                       "max": latencies[-1]},
        "rss_mb": {"at_start": first, "after_first_minute": baseline, "at_end": end, "peak_after_first_minute": peak,
                   "growth_pct": 100 * (end - baseline) / baseline,
                   "peak_growth_pct": 100 * (peak - baseline) / baseline},
        "probes_not_200": [s for s in samples if s.get("ready") != 200 and "rss_mb" in s],
        "server_counts": {k: after[k] - before.get(k, 0.0) for k in after
                          if k.startswith(("sentiment_requests_total", "sentiment_rejected", "sentiment_dropped",
                                           "sentiment_inference_failures")) and after[k] != before.get(k, 0.0)},
        "windows": wins, "samples": samples,
    })
    png = out.with_suffix(".png")
    plot(samples, wins, baseline, a.warm, png, f"Soak: {rate:.0f} req/s of IMDB reviews for {a.minutes:g} min")
    rss = result["rss_mb"]
    checks = {
        "every answer 200, no client error": (set(statuses) == {"200"}, json.dumps(statuses)),
        "offered rate kept": (len(load.records) == load.total, f"{len(load.records)}/{load.total} requests"),
        f"RSS growth after the first {a.warm:g} s < {a.max_growth:g}%": (
            rss["growth_pct"] < a.max_growth,
            (f"{rss['after_first_minute']:.1f} MB at {a.warm:g} s -> {rss['at_end']:.1f} MB at the end "
             f"({rss['growth_pct']:+.2f}%), peak {rss['peak_after_first_minute']:.1f} MB "
             f"({rss['peak_growth_pct']:+.2f}%)")),
        "ready throughout": (not result["probes_not_200"], f"{len(result['probes_not_200'])} probes not 200"),
        "clean exit on SIGTERM": (result["exit_code"] == 0, f"exit {result['exit_code']}"),
    }
    result["checks"] = {k: {"ok": ok, "detail": d} for k, (ok, d) in checks.items()}
    result["ok"] = all(ok for ok, _ in checks.values())
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(load.records)} requests at {rate:.1f}/s: p50 {result['latency_ms']['p50']:.1f} ms, p99 "
          f"{result['latency_ms']['p99']:.1f} ms, max {result['latency_ms']['max']:.1f} ms; RSS {first:.1f} MB at "
          f"start; server-side counts {json.dumps(result['server_counts'])}")
    ok = report(checks)
    print(f"{'PASS' if ok else 'FAIL'}; results in {out}, RSS curve in {png}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
