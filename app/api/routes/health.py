"""Liveness and readiness probes (open even when an API key is set)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep
from app.api.documented import error_responses
from app.schemas import Health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Health)
async def live() -> dict:
    """The process is up and its event loop answers. Restart the process only if this fails."""
    return {"status": "alive"}


@router.get("/ready", response_model=Health,
            responses=error_responses(503, d503="Not ready: the model is loading or warming up, the server is "
                                                "shutting down, or its batcher failed. Send no traffic here."))
async def ready(service: ServiceDep) -> dict:
    """200 once the model is loaded and warmed up and the batcher runs (in every server process, when there are
    several); 503 before that and while shutting down."""
    if not service.ready_to_serve:
        raise service.refusal()
    return {"status": "ready"}
