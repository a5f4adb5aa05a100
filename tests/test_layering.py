"""The layers stay apart: the batching core speaks no HTTP (its errors are domain errors, mapped at the API edge)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_service_and_batcher_import_no_web_framework():
    code = ("import sys, app.service, app.batcher, app.failures, app.explainer; "
            "print(sorted({n.split('.')[0] for n in sys.modules} & {'fastapi', 'starlette', 'uvicorn'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_domain_error_has_an_answer():
    from app import failures
    from app.errors import STATUS, from_failure

    cases = {failures.QueueFull(3, 10): 429, failures.Unavailable("starting"): 503,
             failures.Unavailable("failed"): 503, failures.Unavailable("draining"): 503,
             failures.DeadlineExceeded(30.0, 2): 504, failures.InferenceError("abc"): 500,
             failures.ExplainFailed("def"): 500, failures.ExplainBusy(4, 3.5): 429,
             failures.ExplainTooLarge("send at most 2 of these texts per request"): 413}
    for exc, status in cases.items():
        error = from_failure(exc)
        assert STATUS[error.code] == status and error.message, exc
        if status in (429, 503, 504):
            assert "Retry-After" in (error.headers or {}), exc
