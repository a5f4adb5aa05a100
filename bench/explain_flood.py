"""Explain flood: clients asking for explanations of many long reviews while another sends one plain review at a
time. What must hold (docs/reliability.md): explain requests are answered (200) or refused at once (413 when they
could never finish in time, 429 with Retry-After when others are ahead), never left to run into a 504; plain
requests stay fast.

    python -m bench.explain_flood --data ../shared/data/aclImdb_v1.tar.gz

Two phases against one real server (default settings, jemalloc preloaded like `make serve`), each with the plain
client running beside it:
- **as filed**: 8 clients sending requests of 64 long reviews with `explain=true`, back to back, for 20 s (the
  issue's 3 requests each are refused within a second, too short to time the plain client);
- **admissible**: 8 clients sending requests of 4 long reviews with `explain=true`, back to back, for 20 s.
Then the plain client alone, as the baseline. The plain client runs in a process of its own: in the flood's event
loop its latency would include the time that loop spends building and sending the flood's bodies. It alternates
two kinds of review, timed apart: `short` (the shortest tenth of the sampled test reviews; the issue's client sent
one short review at a time, and the latency targets are its) and `typical` (any test review, about ten times
longer, so the model's own time is a larger part of each answer). Writes JSON to
bench/results/explain-flood.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

PLAIN_TARGETS = {"p50_ms": 20.0, "p99_ms": 250.0}


async def plain_client(url: str, plain: dict[str, list[str]], stop, out: list[tuple[str, int, float]]) -> None:
    """One plain review at a time, back to back, each kind of `plain` in turn, until `stop` (an event) is set:
    (kind, status, seconds) per request."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        i = 0
        while not stop.is_set():
            for kind, texts in plain.items():
                started = time.perf_counter()
                r = await c.post("/predict", json={"text": texts[i % len(texts)]})
                out.append((kind, r.status_code, time.perf_counter() - started))
            i += 1


def _plain_process(url: str, plain: dict[str, list[str]], stop, results) -> None:
    out: list[tuple[str, int, float]] = []
    asyncio.run(plain_client(url, plain, stop, out))
    results.send(out)


@contextmanager
def plain_beside(url: str, plain: dict[str, list[str]]) -> Iterator[list[tuple[str, int, float]]]:
    """The plain client in its own process for the duration of the block; the list fills when the block ends."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_plain_process, args=(url, plain, stop, send), daemon=True)
    proc.start()
    out: list[tuple[str, int, float]] = []
    try:
        yield out
    finally:
        stop.set()
        out.extend(receive.recv())
        proc.join()


async def explain_client(url: str, bodies: list[bytes], requests: int | None, until: float | None,
                         out: list[dict]) -> None:
    """Explain requests (JSON bodies, encoded beforehand), one after another: `requests` of them, or until
    `until`."""
    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"content-type": "application/json"}) as c:
        n = 0
        while (requests is None or n < requests) and (until is None or time.monotonic() < until):
            started = time.perf_counter()
            r = await c.post("/predict?explain=true", content=bodies[n % len(bodies)])
            out.append({"status": r.status_code, "seconds": time.perf_counter() - started,
                        "retry_after": r.headers.get("retry-after"),
                        "code": r.json().get("error", {}).get("code") if r.status_code != 200 else None})
            n += 1


def latencies(answers: list[tuple[int, float]]) -> dict:
    times = sorted(s for _, s in answers)
    return {"requests": len(answers), "non_200": sum(1 for status, _ in answers if status != 200),
            "p50_ms": 1000 * statistics.median(times) if times else None,
            "p99_ms": 1000 * times[min(len(times) - 1, int(0.99 * len(times)))] if times else None}


def summary(plain: list[tuple[str, int, float]], explained: list[dict]) -> dict:
    statuses: dict[str, int] = {}
    for e in explained:
        statuses[str(e["status"])] = statuses.get(str(e["status"]), 0) + 1
    refused = [e["seconds"] for e in explained if e["status"] in (413, 429)]
    kinds = dict.fromkeys(kind for kind, _, _ in plain)
    return {
        "plain": {kind: latencies([(status, s) for k, status, s in plain if k == kind]) for kind in kinds},
        "explain": {"requests": len(explained), "statuses": statuses,
                    "slowest_refusal_s": max(refused, default=None),
                    "429_without_retry_after": sum(1 for e in explained if e["status"] == 429 and not e["retry_after"]),
                    "slowest_200_s": max((e["seconds"] for e in explained if e["status"] == 200), default=None)},
    }


async def flood(url: str, texts: list[str], plain: dict[str, list[str]], *, clients: int, per_request: int,
                requests: int | None = None, seconds: float | None = None) -> dict:
    """One phase: `clients` clients explaining `texts`, `per_request` at a time (each `requests` requests, or for
    `seconds`), and the plain client sending each kind of `plain` in turn."""
    explained: list[dict] = []
    bodies = [json.dumps({"texts": [texts[(n * per_request + k) % len(texts)] for k in range(per_request)]}).encode()
              for n in range(max(1, len(texts) // per_request))]
    with plain_beside(url, plain) as answers:
        until = time.monotonic() + seconds if seconds else None
        await asyncio.gather(*(explain_client(url, bodies[i::clients] or bodies, requests, until, explained)
                               for i in range(clients)))
    return summary(answers, explained)


async def baseline(url: str, plain: dict[str, list[str]], seconds: float) -> dict:
    with plain_beside(url, plain) as answers:
        await asyncio.sleep(seconds)
    return summary(answers, [])


def checks(phase: dict) -> dict[str, tuple[bool, str]]:
    """The issue's targets: explain answers and refusals, every plain answer 200, and the latency of the plain
    client's short reviews (the kind the issue timed)."""
    p, e = phase["plain"], phase["explain"]
    statuses = set(e["statuses"])
    short = p["short"]
    return {
        "explain answers are 200, 413 or 429 (no 504)": (statuses <= {"200", "413", "429"}, str(e["statuses"])),
        "every 429 has Retry-After": (e["429_without_retry_after"] == 0, str(e["429_without_retry_after"])),
        "refusals come at once (< 1 s)": ((e["slowest_refusal_s"] or 0) < 1.0, f"{e['slowest_refusal_s']}"),
        "plain requests all 200": (all(k["non_200"] == 0 for k in p.values()),
                                   ", ".join(f"{k['non_200']} of {k['requests']} {kind}" for kind, k in p.items())),
        f"short plain p50 <= {PLAIN_TARGETS['p50_ms']:g} ms": (short["p50_ms"] <= PLAIN_TARGETS["p50_ms"],
                                                               f"{short['p50_ms']:.1f}"),
        f"short plain p99 <= {PLAIN_TARGETS['p99_ms']:g} ms": (short["p99_ms"] <= PLAIN_TARGETS["p99_ms"],
                                                               f"{short['p99_ms']:.1f}"),
    }


def main(argv: list[str] | None = None) -> int:
    from bench.harness import report, start_service, test_reviews

    p = argparse.ArgumentParser(prog="python -m bench.explain_flood", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="aclImdb_v1.tar.gz or its folder (long test reviews are the texts)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20, help="length of the admissible phase")
    p.add_argument("--out", default="bench/results/explain-flood.json")
    a = p.parse_args(argv)
    reviews = test_reviews(a.data, 4000, seed=0)
    by_length = sorted(reviews, key=len)
    long_reviews = by_length[-400:]  # the longest tenth: explanations cost most there
    plain = {"short": by_length[:400], "typical": reviews}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    server = start_service(out.with_suffix(".log"))
    url = f"http://127.0.0.1:{server.port}"
    results: dict = {}
    try:
        results["baseline"] = asyncio.run(baseline(url, plain, 10))
        print("plain alone:", results["baseline"]["plain"], flush=True)
        results["as_filed"] = asyncio.run(flood(url, long_reviews, plain, clients=a.clients, per_request=64,
                                                seconds=a.seconds))
        print("as filed:", results["as_filed"], flush=True)
        results["admissible"] = asyncio.run(flood(url, long_reviews, plain, clients=a.clients, per_request=4,
                                                  seconds=a.seconds))
        print("admissible:", results["admissible"], flush=True)
    finally:
        results["exit_code"] = server.stop()
    out.write_text(json.dumps(results, indent=2) + "\n")
    ok = all([report({f"as filed: {k}": v for k, v in checks(results["as_filed"]).items()}),
              report({f"admissible: {k}": v for k, v in checks(results["admissible"]).items()})])
    print(f"{'PASS' if ok else 'FAIL'}; results in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
