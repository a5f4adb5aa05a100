"""Every error the service answers with: one code enum, mapped to HTTP statuses here and nowhere else.

Bodies are always `{"error": {"code", "message", "request_id"}}`; the message says what to change. Internal
details (stack traces, file paths) go to the server log under an error id, never to the client.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from app import failures
from app.responses import OrjsonResponse
from app.validation import describe_validation_error

log = logging.getLogger("app.errors")


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_ENCODING = "invalid_encoding"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    READ_TIMEOUT = "read_timeout"
    BODY_TOO_LARGE = "body_too_large"
    URL_TOO_LONG = "url_too_long"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_REQUEST = "invalid_request"
    QUEUE_FULL = "queue_full"
    EXPLAIN_TOO_LARGE = "explain_too_large"
    HEADERS_TOO_LARGE = "headers_too_large"
    INFERENCE_FAILED = "inference_failed"
    INTERNAL = "internal_error"
    NOT_READY = "not_ready"
    SHUTTING_DOWN = "shutting_down"
    TIMEOUT = "timeout"


STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_ENCODING: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.READ_TIMEOUT: 408,
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.EXPLAIN_TOO_LARGE: 413,
    ErrorCode.URL_TOO_LONG: 414,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.INVALID_REQUEST: 422,
    ErrorCode.QUEUE_FULL: 429,
    ErrorCode.HEADERS_TOO_LARGE: 431,
    ErrorCode.INFERENCE_FAILED: 500,
    ErrorCode.INTERNAL: 500,
    ErrorCode.NOT_READY: 503,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.TIMEOUT: 504,
}


class ServiceError(HTTPException):
    """An answer other than success. An HTTPException subclass so that FastAPI re-raises it untouched even when
    it comes out of reading the body (which is how the body-size limit interrupts a request)."""

    def __init__(self, code: ErrorCode, message: str, headers: dict[str, str] | None = None):
        super().__init__(STATUS[code], message, headers)
        self.code = code
        self.message = message


def from_failure(exc: Exception) -> ServiceError:
    """The answer to one of the service's domain errors (`app.failures`), or the error itself re-raised."""
    if isinstance(exc, failures.QueueFull):
        return ServiceError(ErrorCode.QUEUE_FULL, f"the server is at capacity ({exc.queue_depth} texts waiting): "
                            f"retry after {exc.retry_after_s} s", {"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, failures.ExplainBusy):
        ahead = (f"the explanations already admitted need about {exc.waiting_s:.0f} s, too long for this one to "
                 f"finish in time" if exc.waiting_s >= 1 else
                 f"the server is busy: at the speed explanations run now, this one would need "
                 f"{'more than' if exc.at_least else 'about'} {exc.alone_s:.0f} s, more than its deadline leaves")
        return ServiceError(ErrorCode.QUEUE_FULL, f"{ahead}: retry after {exc.retry_after_s} s, or send it without "
                            f"explain", {"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, failures.ExplainTooLarge):
        return ServiceError(ErrorCode.EXPLAIN_TOO_LARGE, exc.message)
    if isinstance(exc, failures.Unavailable):
        if exc.reason == "starting":
            return ServiceError(ErrorCode.NOT_READY, "the model is still loading: retry in a few seconds",
                                {"Retry-After": "5"})
        if exc.reason == "failed":
            return ServiceError(ErrorCode.NOT_READY, "the service hit an internal failure and is restarting: retry "
                                                     "shortly", {"Retry-After": "5"})
        return ServiceError(ErrorCode.SHUTTING_DOWN, "the server is shutting down: send the request again (to "
                                                     "another instance)", {"Retry-After": "1"})
    if isinstance(exc, failures.DeadlineExceeded):
        return ServiceError(ErrorCode.TIMEOUT, f"no answer within SENTIMENT_REQUEST_TIMEOUT_S={exc.timeout_s:g} s "
                            f"(the server is overloaded): retry later or send fewer or shorter texts",
                            {"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, failures.InferenceError):
        return ServiceError(ErrorCode.INFERENCE_FAILED, f"the model failed on this input (error id {exc.error_id}, "
                            f"logged on the server): retry, and report it if it persists")
    if isinstance(exc, failures.ExplainFailed):
        return ServiceError(ErrorCode.INFERENCE_FAILED, f"the model failed to explain this input (error id "
                            f"{exc.error_id}, logged on the server): retry without explain, and report it if it "
                            f"persists")
    raise exc


def error_answer(exc: Exception, scope_or_request) -> OrjsonResponse:
    """The one way an error becomes a response: a `ServiceError` as it is, a domain error mapped by `from_failure`
    (anything else is re-raised)."""
    error = exc if isinstance(exc, ServiceError) else from_failure(exc)
    return error_response(error.code, error.message, request_id_of(scope_or_request), error.headers)


def error_body(code: ErrorCode, message: str, request_id: str | None) -> dict:
    return {"error": {"code": code.value, "message": message, "request_id": request_id}}


def error_response(code: ErrorCode, message: str, request_id: str | None,
                   headers: dict[str, str] | None = None) -> OrjsonResponse:
    return OrjsonResponse(error_body(code, message, request_id), status_code=STATUS[code], headers=headers)


def request_id_of(scope_or_request) -> str | None:
    scope = scope_or_request.scope if isinstance(scope_or_request, Request) else scope_or_request
    return scope.get("state", {}).get("request_id")


def _from_http_exception(request: Request, exc: HTTPException) -> tuple[ErrorCode, str]:
    """Errors raised by the framework itself (unknown route, wrong method, unreadable body)."""
    if isinstance(exc, ServiceError):
        return exc.code, exc.message
    if exc.status_code == 404:
        return ErrorCode.NOT_FOUND, f"no such endpoint: {request.url.path}; the API is described at /docs"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("allow") or (exc.headers or {}).get("Allow", "")
        return ErrorCode.METHOD_NOT_ALLOWED, f"{request.url.path} does not accept {request.method}; use {allowed}"
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return ErrorCode.INVALID_ENCODING, (f"the body is not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at "
                                            f"offset {cause.start}): encode the JSON as UTF-8")
    if exc.status_code == 400:
        return ErrorCode.INVALID_JSON, "the body could not be read as JSON: send a UTF-8 JSON object"
    if exc.status_code == 401:
        return ErrorCode.UNAUTHORIZED, "send the API key as `Authorization: Bearer <key>`"
    log.error("unmapped HTTP %s from the framework: %s", exc.status_code, exc.detail)
    return ErrorCode.INTERNAL, "internal error; the request id identifies it in the server log"


async def _handle_failure(request: Request, exc: Exception) -> OrjsonResponse:
    return error_answer(exc, request)


async def _handle_http_exception(request: Request, exc: HTTPException) -> OrjsonResponse:
    code, message = _from_http_exception(request, exc)
    headers = dict(exc.headers or {})
    headers.pop("content-length", None)
    return error_response(code, message, request_id_of(request), headers)


async def _handle_validation_error(request: Request, exc: RequestValidationError) -> OrjsonResponse:
    kind, message = describe_validation_error(exc.errors(), getattr(exc, "body", None))
    code = {"json": ErrorCode.INVALID_JSON, "media_type": ErrorCode.UNSUPPORTED_MEDIA_TYPE}.get(
        kind, ErrorCode.INVALID_REQUEST)
    return error_response(code, message, request_id_of(request))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _handle_http_exception)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    for failure in (failures.QueueFull, failures.Unavailable, failures.DeadlineExceeded, failures.InferenceError,
                    failures.ExplainFailed, failures.ExplainBusy, failures.ExplainTooLarge):
        app.add_exception_handler(failure, _handle_failure)
