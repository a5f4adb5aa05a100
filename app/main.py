"""`create_app(settings)`: the FastAPI application. Its lifespan loads the model (unless one is given), warms it
up, starts the batcher and only then reports ready; on shutdown readiness turns 503 first, nothing new is admitted
and every admitted text is answered before the batcher stops."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import predict
from app.api.routes import health, metrics
from app.api.routes import model as model_route
from app.config import Settings, get_settings
from app.docs import install_docs
from app.errors import install_error_handlers
from app.metrics import Metrics
from app.middleware import BodyLimitMiddleware, RequestContextMiddleware
from app.page import install_page
from app.processes import Siblings
from app.responses import OrjsonResponse
from app.service import Service

DESCRIPTION = """Sentiment of movie reviews from a PyTorch LSTM trained on IMDB.

`POST /predict` takes `{"text": "..."}` or `{"texts": ["...", ...]}` and answers with calibrated probabilities.
Concurrent requests share forward passes. `?explain=true` adds, per text, each word's effect on P(positive)
(occlusion). Errors always look like `{"error": {"code", "message", "request_id"}}`. A page to try it is at `/`.
"""
TAGS = [
    {"name": "predict", "description": "Classify reviews."},
    {"name": "model", "description": "What model answers, and how it is run."},
    {"name": "health", "description": "Probes for orchestrators and load balancers."},
    {"name": "operations", "description": "Monitoring."},
]


def _version() -> str:
    try:
        return version("imdb-sentiment")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def create_app(settings: Settings | None = None, *, model: Any | None = None,
               on_fatal: Callable[[BaseException], None] | None = None,
               torch_executor: ThreadPoolExecutor | None = None, siblings: Siblings | None = None) -> FastAPI:
    """`model`: an already loaded model (the server entry point loads it first to fail fast), with
    `torch_executor` the thread it was loaded on (see app.torch_pool); `on_fatal`: called if the batcher dies,
    after readiness has turned 503 (the entry point uses it to stop the process); `siblings`: this process's
    place among several on one port (app.processes), whose readiness is all of theirs."""
    settings = settings or get_settings()
    metrics_ = Metrics()
    service = Service(settings, metrics_, model, on_fatal, torch_executor=torch_executor, siblings=siblings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="IMDB sentiment", version=_version(),
                  description=DESCRIPTION, openapi_tags=TAGS, lifespan=lifespan, docs_url=None, redoc_url=None,
                  default_response_class=OrjsonResponse)
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = metrics_
    install_error_handlers(app)
    endpoint = predict.PredictEndpoint(settings)
    app.include_router(endpoint.router())
    app.include_router(model_route.create_router(settings))
    app.include_router(health.router)
    app.include_router(metrics.router)
    install_docs(app)
    install_page(app)
    # add_middleware wraps: the last added runs first. Request ids come first so every answer carries one; the
    # fast path for /predict runs last, inside the body limits and CORS. With an API key every request takes the
    # route, where the key is checked.
    if settings.api_key is None:
        app.add_middleware(predict.PlainPredictPath, endpoint=endpoint, service=service)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "X-Queue-Time-Ms", "X-Inference-Time-Ms", "Retry-After"])
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.read_timeout_s)
    app.add_middleware(RequestContextMiddleware, metrics=metrics_, counted_path=predict.PATH,
                       closing=lambda: service.state in ("draining", "stopped", "failed"))
    return app
