"""Prometheus metrics (open even when an API key is set)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

router = APIRouter(tags=["operations"])

_EXAMPLE = ('# HELP sentiment_batch_size texts per forward pass\n# TYPE sentiment_batch_size histogram\n'
            'sentiment_batch_size_bucket{le="1.0"} 3.0\n...')


@router.get("/metrics", response_class=Response,
            responses={200: {"description": "Prometheus text exposition format.",
                             "content": {"text/plain": {"schema": {"type": "string"}, "example": _EXAMPLE}}}})
async def metrics(request: Request) -> Response:
    """Request counts by status, batch sizes, queue and inference times, queue depth, dropped texts."""
    m = request.app.state.metrics
    return Response(m.render(), media_type=m.content_type)
