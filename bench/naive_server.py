"""The baseline the service must beat: the same model behind FastAPI, one forward pass per request, no batching.

    python -m bench.naive_server --port 8001
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from model import load_model

model = load_model(device=os.environ.get("SENTIMENT_DEVICE", "cpu"))
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
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
