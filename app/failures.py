"""Why the service could not answer, in its own terms: the batching core raises these and knows nothing of HTTP.
`app.errors.from_failure` maps each to a status code and message, once, at the API edge."""

from __future__ import annotations

from typing import Literal

from app.batcher import InferenceError, QueueFull
from app.explainer import ExplainBusy, ExplainTooLarge

__all__ = ["ClientGone", "DeadlineExceeded", "ExplainBusy", "ExplainFailed", "ExplainTooLarge", "InferenceError",
           "QueueFull", "Unavailable"]


class ClientGone(Exception):
    """The client disconnected while its texts waited; nobody will read an answer."""


class Unavailable(Exception):
    """No work is admitted: the model is still loading, the service failed, or it is shutting down."""

    def __init__(self, reason: Literal["starting", "failed", "draining"]):
        super().__init__(f"not admitting work: {reason}")
        self.reason = reason


class DeadlineExceeded(Exception):
    """The request's deadline passed before its answer was ready."""

    def __init__(self, timeout_s: float, retry_after_s: int):
        super().__init__(f"no answer within {timeout_s:g} s")
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s


class ExplainFailed(Exception):
    """Explaining a text raised; the details are in the server log under `error_id`."""

    def __init__(self, error_id: str):
        super().__init__(f"explanation failed (error id {error_id})")
        self.error_id = error_id
