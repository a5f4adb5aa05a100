"""JSON responses serialised with orjson (FastAPI's own ORJSONResponse is deprecated; this is the same few lines)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSONResponse


class OrjsonResponse(_StarletteJSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
