"""OpenAPI descriptions of the error answers, so every route documents the statuses it can give, with examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.errors import STATUS, ErrorCode, error_body
from app.schemas import ErrorResponse

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"},
                                "example": "2"}}
@dataclass(frozen=True)
class _Documented:
    description: str
    code: ErrorCode
    example: str
    headers: dict = field(default_factory=dict)


_ERRORS: dict[int, _Documented] = {
    400: _Documented(
        "The body is not valid JSON, or not UTF-8.", ErrorCode.INVALID_JSON,
        ('the body is not valid JSON (Expecting value at character 9): send {"text": "..."} or '
         '{"texts": ["...", ...]}')),
    401: _Documented(
        "The API key is missing or wrong (only when SENTIMENT_API_KEY is set).", ErrorCode.UNAUTHORIZED,
        "this endpoint needs the API key: send the header `Authorization: Bearer <key>`",
        {"WWW-Authenticate": {"description": "The authentication scheme to use.", "schema": {"type": "string"},
                              "example": 'Bearer realm="sentiment"'}}),
    408: _Documented(
        ("The body did not arrive within SENTIMENT_READ_TIMEOUT_S of the headers; the connection is closed. (A "
         "request head that is not complete in that time gets the same answer.)"), ErrorCode.READ_TIMEOUT,
        "the body did not arrive within 30 s (SENTIMENT_READ_TIMEOUT_S): send it at once"),
    413: _Documented(
        ("The body is larger than SENTIMENT_MAX_BODY_BYTES (refused before it is read whole), or, with `explain`, "
         "the request has more than SENTIMENT_MAX_EXPLAIN_TEXTS texts or more explaining than could finish within "
         "SENTIMENT_REQUEST_TIMEOUT_S (code `explain_too_large`; the message says how many texts would fit)."),
        ErrorCode.BODY_TOO_LARGE,
        ("the body is larger than the limit of 2097152 bytes (SENTIMENT_MAX_BODY_BYTES): send fewer or shorter "
         "texts per request")),
    415: _Documented(
        "The body was not sent as `application/json`.", ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        "the body must be JSON: set the header `Content-Type: application/json`"),
    422: _Documented(
        ("Well-formed JSON that is not a valid request: the message names the field and what to change (empty or "
         "blank text, missing or unknown field, both fields, wrong type, null, empty list, too many texts, text "
         "too long)."), ErrorCode.INVALID_REQUEST, "texts[1] is blank: send some words"),
    429: _Documented(
        ("The server is at capacity: retry after `Retry-After` seconds (computed from the current throughput and "
         "queue depth). With `explain`, also when the explanations already admitted leave no time for this one."),
        ErrorCode.QUEUE_FULL, "the server is at capacity (1024 texts waiting): retry after 2 s",
        _RETRY_AFTER),
    500: _Documented(
        "The model failed on this input; the message carries an error id that is in the server log.",
        ErrorCode.INFERENCE_FAILED,
        ("the model failed on this input (error id 1f2e3d4c5b6a, logged on the server): retry, and report it if "
         "it persists")),
    503: _Documented(
        "The model is still loading, or the server is shutting down.", ErrorCode.NOT_READY,
        "the model is still loading: retry in a few seconds", _RETRY_AFTER),
    504: _Documented(
        "No answer within SENTIMENT_REQUEST_TIMEOUT_S.", ErrorCode.TIMEOUT,
        ("no answer within SENTIMENT_REQUEST_TIMEOUT_S=30 s (the server is overloaded): retry later or send fewer "
         "or shorter texts"), _RETRY_AFTER),
}


def error_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these statuses; `descriptions` (keyed like `d503=`) override the defaults."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        doc = _ERRORS[status]
        assert STATUS[doc.code] == status
        out[status] = {
            "model": ErrorResponse,
            "description": descriptions.get(f"d{status}", doc.description),
            "content": {"application/json": {"example": error_body(doc.code, doc.example, "3f2c1a9e0b7d4c55")}},
        }
        if doc.headers:
            out[status]["headers"] = doc.headers
    return out
