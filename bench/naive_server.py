"""The baseline the service must beat: the same model behind FastAPI, one forward pass per request, no batching.

    python -m bench.naive_server --port 8001 [--workers 2] [--threads 1]

`--workers N` runs N uvicorn processes on the port, each with its own model copy (its best layout on a multi-core
CPU); `--threads` sets torch's intra-op threads in each (NAIVE_TORCH_THREADS, read when a worker imports this).
"""

from __future__ import annotations

import argparse
import os

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from model import load_model

torch.set_num_threads(int(os.environ.get("NAIVE_TORCH_THREADS", "1")))
# The service's own model settings, so both sides run the same arithmetic (bfloat16 LSTMs where `auto` picks it).
model = load_model(device=os.environ.get("SENTIMENT_DEVICE", "cpu"),
                   lstm_dtype=os.environ.get("SENTIMENT_LSTM_DTYPE", "auto"))
app = FastAPI(title="naive sentiment server (benchmark baseline)")


class Body(BaseModel):
    text: str


@app.get("/health/ready")
def ready() -> dict:
    return {"status": "ready"}


@app.post("/predict")
async def predict(body: Body) -> dict:
    # One request = one forward pass, on the event loop (the thread that loaded the model). A plain `def` endpoint
    # would run it on FastAPI's thread pool, where torch on threads other than the loader's ran 7x slower here
    # (see app/torch_pool.py): that baseline would flatter the service.
    p = model.predict_proba([body.text])[0]
    return {"label": "positive" if p >= 0.5 else "negative", "probabilities": {"positive": p, "negative": 1 - p}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default 1)")
    args = parser.parse_args()
    if args.threads is not None:
        os.environ["NAIVE_TORCH_THREADS"] = str(args.threads)  # for the workers, which import this module afresh
        torch.set_num_threads(args.threads)
    if args.workers > 1:
        uvicorn.run("bench.naive_server:app", host=args.host, port=args.port, workers=args.workers,
                    log_level="warning")
    else:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
