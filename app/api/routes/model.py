"""The model card: what model answers, how well it does, and how this server runs it."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep, auth_dependencies
from app.api.documented import error_responses
from app.config import Settings
from app.schemas import ModelCard


def create_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["model"], dependencies=auth_dependencies(settings.api_key))
    statuses = (401, 503) if settings.api_key is not None else (503,)

    @router.get("/model", response_model=ModelCard,
                responses=error_responses(*statuses, d503="The model is not loaded yet."))
    async def model_card(service: ServiceDep) -> dict:
        """Name, version, architecture, training data, validation and test metrics, calibration, device, length
        limits and batching settings."""
        if service.model is None:
            raise service.refusal()
        s = service.settings
        return {
            **service.model.card(),
            "uncertain_below": s.uncertain_below,
            "batching": {"max_batch_size": s.max_batch_size, "max_batch_tokens": s.max_batch_tokens,
                         "max_wait_ms": s.max_wait_ms, "batch_window": s.batch_window, "refill_ms": s.refill_ms,
                         "max_queue": s.max_queue},
            "limits": {"max_text_chars": s.max_text_chars, "max_batch_texts": s.max_batch_texts,
                       "max_body_bytes": s.max_body_bytes, "max_tokens": None,
                       "request_timeout_s": s.request_timeout_s, "max_explain_texts": s.max_explain_texts,
                       "max_explain_words": s.max_explain_words},
        }

    return router
