"""The page at `/`: paste a review, see the label, P(positive) as a bar and the words highlighted by their weights.

Plain HTML, CSS and JavaScript from app/static/page (no CDN, no build step); it calls `POST /predict?explain=true`
like any client. Not part of the API, so not in the OpenAPI document.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse

from app.docs import STATIC

PAGE = STATIC / "page" / "index.html"
# Only the server's own files, and no inline script or style: user text can never become code on this page.
CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")


def install_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE, headers={"content-security-policy": CSP, "x-content-type-options": "nosniff"})
