"""Turns FastAPI's request-validation errors into one message that tells the client what to fix."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

USAGE = 'send {"text": "..."} or {"texts": ["...", ...]}'
BODY_FIELDS = ("text", "texts", "explain")
MAX_PROBLEMS = 3


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _problem(error: dict) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    path = _path(error["loc"])
    if kind == "string_type":
        return f"{path} must be a string, not {_json_type(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"{path} must be true or false, not {_json_type(value)}"
    if kind == "list_type":
        return f"{path} must be a list of strings, not {_json_type(value)}"
    if kind == "string_unicode":
        return (f"{path} contains an unpaired UTF-16 surrogate (such as a lone \\ud800 escape), which is not a "
                f"character: send whole characters")
    if kind == "string_too_short":
        return f"{path} is empty: send some words"
    if kind == "string_too_long":
        return (f"{path} has {len(value)} characters; the limit is {ctx.get('max_length')}: shorten it or split it "
                f"into several texts")
    if kind == "too_short":
        return f"{path} is empty: send at least one text"
    if kind == "too_long":
        return (f"{path} has {len(value)} texts; the limit is {ctx.get('max_length')}: split them over several "
                f"requests")
    if kind == "value_error":
        return f"{path} {ctx.get('error', error['msg'])!s}"
    if kind == "missing":
        return f"{path} is missing"
    return f"{path}: {error['msg']}"


def describe_validation_error(errors: Sequence[dict], body: Any) -> tuple[Literal["json", "media_type", "body"],
                                                                            str]:
    """(kind, message): kind "json" for unparseable JSON, "media_type" for a non-JSON body, else "body"."""
    for e in errors:
        if e["type"] == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "malformed")
            position = e["loc"][-1] if len(e["loc"]) > 1 else "?"
            return "json", f"the body is not valid JSON ({reason} at character {position}): {USAGE}"
    if isinstance(body, (bytes, bytearray)):
        return "media_type", "the body must be JSON: set the header `Content-Type: application/json`"
    query = [e for e in errors if e["loc"] and e["loc"][0] == "query"]
    if query:
        # Query values are always strings: quote the value rather than its type.
        return "body", "; ".join(f"query parameter {e['loc'][-1]}={e.get('input')!r} is not valid: use true or "
                                 f"false" for e in query[:MAX_PROBLEMS])
    if body is None or body == b"":
        return "body", f"the body is empty or null: {USAGE}"
    if not isinstance(body, dict):
        return "body", f"the body must be a JSON object, not {_json_type(body)}: {USAGE}"
    fields = [k for k in ("text", "texts") if k in body]
    unknown = sorted(k for k in body if k not in BODY_FIELDS)
    if len(fields) == 2:
        return "body", 'send either "text" (one review) or "texts" (a list), not both'
    if not fields:
        extra = f" (unknown field {', '.join(json.dumps(k) for k in unknown)})" if unknown else ""
        return "body", f'the body has no "text" or "texts" field{extra}: {USAGE}'
    if unknown:
        return "body", f"unknown field {', '.join(json.dumps(k) for k in unknown)}: {USAGE}"
    # The body is a union of the two request models; keep only the errors of the one the client meant.
    branch = "TextRequest" if fields == ["text"] else "TextsRequest"
    chosen = [e for e in errors if len(e["loc"]) > 1 and e["loc"][1] == branch] or list(errors)
    problems = []
    for e in chosen:
        loc = e["loc"][2:] if len(e["loc"]) > 2 and e["loc"][1] == branch else e["loc"][1:]
        problems.append(_problem({**e, "loc": loc}))
    message = "; ".join(dict.fromkeys(problems[:MAX_PROBLEMS]))
    if len(problems) > MAX_PROBLEMS:
        message += f" (and {len(problems) - MAX_PROBLEMS} more problems)"
    return "body", message
