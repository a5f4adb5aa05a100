"""The HTTP path alone: `python -m app` with an instant model, under `wrk`, to measure what a request costs the
server apart from the forward pass (uvicorn, middleware, FastAPI, the batcher's bookkeeping).

    python -m bench.http_path --data ../shared/data/aclImdb_v1.tar.gz            # 3 runs of 8 s at 64 connections
    python -m bench.http_path --serve --port 8000                                 # (what the benchmark starts)

With the model's work gone, the event loop is the bottleneck, so requests/s is about 1 / (loop CPU per request).
Bodies are real test reviews, as in bench.run. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Server, free_port, preload, test_reviews, write_bodies, wrk


def serve(argv: list[str]) -> int:
    from app.__main__ import main
    from model import predictor

    # Tokenising and the forward pass answer at once; everything around them is the real server.
    predictor.SentimentModel.encode = lambda self, texts: [predictor.Encoded((1,), 1) for _ in texts]
    predictor.SentimentModel.predict_encoded = lambda self, batch: [0.75] * len(batch)
    return main(argv)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/aclImdb_v1.tar.gz")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=float, default=8)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--serve", action="store_true", help="run the server with an instant model (internal)")
    a, rest = p.parse_known_args()
    if a.serve:
        sys.exit(serve(rest))
    bodies = write_bodies(Path(tempfile.mkdtemp()) / "bodies.jsonl", test_reviews(a.data, 2000, seed=0), 1)
    port = free_port()
    server = Server([sys.executable, "-m", "bench.http_path", "--serve", "--host", "127.0.0.1", "--port", str(port)],
                    # One process: the instant model is patched into this one, not into the children that
                    # SENTIMENT_PROCESSES=auto would start (they would run the real model).
                    {"SENTIMENT_LOG_LEVEL": "warning", "SENTIMENT_PROCESSES": "1", **preload()}, port,
                    log_path=Path(tempfile.mkdtemp()) / "server.log")
    try:
        wrk(port, bodies, a.connections, 3)  # warm-up
        for _ in range(a.runs):
            cpu, started = server.cpu_seconds(), time.perf_counter()
            r = wrk(port, bodies, a.connections, a.duration)
            cores = (server.cpu_seconds() - cpu) / (time.perf_counter() - started)
            rate = r["requests"] / r["seconds"]
            print(f"{a.connections} connections: {rate:7.0f} req/s, server {cores:.2f} cores, "
                  f"{cores / rate * 1e6:4.0f} µs of server CPU per request, non-2xx {r['non_2xx']}, "
                  f"socket errors {r['socket_errors']}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
