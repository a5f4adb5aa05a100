"""Logging: plain lines for people, or one JSON object per line (SENTIMENT_LOG_JSON) for log collectors."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra=` and belongs in the JSON line.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message",
                                                                           "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, process: int | None = None):
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.process is not None:
            line["process"] = self.process
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str = "info", json: bool = False, process: int | None = None) -> None:
    """`process`: the index of this server process among several (SENTIMENT_PROCESSES), named on every line."""
    handler = logging.StreamHandler(sys.stderr)
    where = "" if process is None else f" [process {process}]"
    handler.setFormatter(JsonFormatter(process) if json else
                         logging.Formatter(f"%(asctime)s %(levelname)s{where} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own loggers: let them reach the root handler (one format), and drop its access log (ours is
    # app.access, which carries the request id).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.captureWarnings(True)
