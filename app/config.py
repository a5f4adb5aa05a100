"""Every knob of the service: one `Settings` object read from `SENTIMENT_*` environment variables.

Settings are built by `get_settings()` when the server starts (or passed to `create_app` by tests), never at import
time, so importing the app has no side effects. Each field's description is its documentation: the README's
settings table is generated from them (`python -m app.config --write README.md`), and a test keeps the two equal.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

import model
from app.cores import auto_layout, usable_cores

ENV_PREFIX = "SENTIMENT_"
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"
MAX_COUNT = 64  # most server processes, and most torch workers per process


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=False, extra="forbid",
                                      validate_default=True)

    model_dir: Path = Field(model.DEFAULT_ARTIFACT, description="model artifact folder; missing, corrupt or "
                            "tampered files stop startup")
    device: str = Field("auto", description="`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`; an absent GPU "
                        "stops startup")
    lstm_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="number format of the LSTM's weights and arithmetic; the rest of the model stays "
        "float32. `auto`: `bfloat16` on a CPU that computes in it natively (AVX512-BF16 or AMX), where it is "
        "faster at a small cost in precision (MODEL_CARD.md), else `float32`. `bfloat16` runs on a CPU only")
    max_batch_size: int = Field(model.BATCH_SIZE, ge=1, le=4096, description="most texts in one forward pass")
    max_batch_tokens: int = Field(model.MAX_BATCH_TOKENS, ge=1, description="most padded tokens (longest text × "
                                  "texts) in one forward pass; a longer text runs alone")
    max_wait_ms: float = Field(0.0, ge=0, le=10_000, description="how long an idle model waits for a batch to fill "
                               "after its first text; `0`: at once (batches still form from the texts that arrive "
                               "during a forward pass). Waiting costs every lone request that much latency")
    refill_ms: float = Field(3.0, ge=0, le=1000, description="after a batch, how long the next one may wait (at "
                             "most a tenth of the pass just ended) for the callers it answered to send their next "
                             "texts, so that under steady load batches stay whole instead of settling into halves. "
                             "A full batch never waits; `0`: at once")
    batch_window: int = Field(256, ge=1, description="when texts queue up, how many of the oldest are sorted by "
                              "length before being cut into batches: batches of similar lengths run faster. A round "
                              "is finished before the next one forms, so a text waits at most for the texts ahead of "
                              "it and the rest of its round. `1`: arrival order")
    max_queue: int = Field(1024, ge=1, description="texts admitted and waiting; beyond it `429` with `Retry-After`")
    request_timeout_s: float = Field(30.0, gt=0, description="deadline per request; past it `504`. Texts that "
                                     "would wait more than half of it in the queue (queue ÷ recent throughput) get "
                                     "`429` with `Retry-After` on arrival instead")
    max_text_chars: int = Field(20000, ge=1, description="longest text in characters (`422` beyond); IMDB reviews "
                                "reach about 14,000")
    max_batch_texts: int = Field(64, ge=1, description="most texts in one `{\"texts\": [...]}` request (`422` "
                                 "beyond); at most `SENTIMENT_MAX_QUEUE`")
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=64, description="largest request body (`413` beyond, refused "
                                "while it streams in)")
    read_timeout_s: float = Field(30.0, gt=0, le=3600, description="how long a client may take to send a request's "
                                  "headers, and then its body (`408` beyond, connection closed); bounds slow "
                                  "\"trickling\" clients")
    api_key: SecretStr | None = Field(None, description="when set, `/predict` and `/model` need `Authorization: "
                                      "Bearer <key>` (`401` otherwise); health and metrics stay open")
    log_json: bool = Field(False, description="one JSON object per log line instead of plain text")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="`debug`, `info`, `warning`, `error` or `critical`")
    torch_threads: int | None = Field(1, ge=1, le=256, description="intra-op torch CPU threads per worker (empty: "
                                      "torch's default, one per core). Keep `1` on a CPU and scale with "
                                      "`SENTIMENT_PROCESSES` and `SENTIMENT_TORCH_WORKERS`: OpenMP threads that "
                                      "share cores with the event loop slow down badly (docs/benchmarks.md)")
    processes: int | Literal["auto"] = Field(
        "auto", description="server processes sharing the port, each with its own event loop, model copy, "
        "`SENTIMENT_TORCH_WORKERS` and queue of `SENTIMENT_MAX_QUEUE` texts; readiness, `/metrics` and SIGTERM "
        "cover them all. `auto`: one per usable core on a CPU (its affinity and cgroup CPU limit, at most 8), one "
        "on a GPU (README, \"Scaling out\")")
    torch_workers: int | Literal["auto"] = Field(
        "auto", description="forward passes run at once in each process, each on its own thread with "
        "`SENTIMENT_TORCH_THREADS` intra-op threads: whole batches side by side instead of one batch split across "
        "cores. `auto`: the usable cores left to each process on a CPU (1 with `SENTIMENT_PROCESSES=auto`), 1 on "
        "a GPU")
    use_idle_cores: bool = Field(True, description="on a CPU, a forward pass that starts on an idle server (its "
                                 "texts waited for no other pass, and no other server process has run one for a "
                                 "moment) runs its LSTM's two directions on two threads at once, when the cores allow: "
                                 "the same results, a lone request answered sooner. Under load each pass keeps to one "
                                 "thread. `false`: never")
    malloc_trim_s: float = Field(10.0, ge=0, le=3600, description="under glibc's malloc only: every this many "
                                 "seconds, between forward passes, hand freed heap memory back to the OS "
                                 "(`malloc_trim`), so the resident set creeps less under steady load; `0`: never. "
                                 "jemalloc (preloaded by the image and `make serve`) needs none")
    event_loop: Literal["asyncio", "uvloop"] = Field("asyncio", description="`asyncio` or `uvloop` (both with "
                                                     "httptools). asyncio keeps accepting connections, health probes "
                                                     "included, under a flood of refused requests; uvloop stopped "
                                                     "accepting until the flood ended (docs/reliability.md)")
    shutdown_grace_s: float = Field(30.0, ge=0, description="after SIGTERM, how long admitted work may take before "
                                    "the server stops anyway")
    shutdown_delay_s: float = Field(0.0, ge=0, le=600, description="after SIGTERM, keep the port open this long "
                                    "(readiness `503`) so load balancers stop routing here first")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, description="comma-separated origins "
                                                         "allowed to call the API from browsers (unset: CORS off)")
    uncertain_below: float | None = Field(None, gt=0.5, le=1.0, description="a number in (0.5, 1]: results whose "
                                          "top probability is below it get the label `uncertain`")
    max_explain_words: int = Field(256, ge=1, le=4096, description="most words per text weighed by `explain` (each "
                                   "costs one forward-pass row); later words get no weight and the result says how "
                                   "many were explained")
    max_explain_texts: int = Field(16, ge=1, le=4096, description="most texts in one request with `explain` (`413` "
                                   "beyond it). Explain requests are also refused at once, by their estimated cost "
                                   "against the measured speed, when they could not finish within "
                                   "`SENTIMENT_REQUEST_TIMEOUT_S` (`413`) or not behind those already admitted (`429`)")

    @field_validator("device", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, value: str) -> str:
        # Only the spelling is checked here; whether that device exists is checked when the model loads.
        if not re.fullmatch(DEVICE_PATTERN, value):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return value

    @field_validator("processes", "torch_workers", mode="before")
    @classmethod
    def _count_or_auto(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            count = int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            count = 0
        if isinstance(value, bool) or not 1 <= count <= MAX_COUNT or str(count) != str(value).strip():
            raise ValueError(f"use auto or a whole number from 1 to {MAX_COUNT}")
        return count

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        # `SENTIMENT_API_KEY=` (empty, as container env files often leave it) means "no key", not "the empty key".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("torch_threads", "uncertain_below", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_batch_texts > self.max_queue:
            raise ValueError(f"{env_name('max_batch_texts')}={self.max_batch_texts} is larger than "
                             f"{env_name('max_queue')}={self.max_queue}: such a request could never be admitted")
        return self

    @model_validator(mode="after")
    def _resolve_layout(self) -> Settings:
        # Resolved here, once, so that everything downstream (and each child process, from the same environment)
        # sees numbers.
        if "auto" in (self.processes, self.torch_workers):
            on_gpu = model.resolve_device("auto").type == "cuda" if self.device == "auto" else self.device != "cpu"
            chosen = None if self.processes == "auto" else self.processes
            self.processes, workers = auto_layout(on_gpu, usable_cores(), chosen)
            if self.torch_workers == "auto":
                self.torch_workers = workers
        return self


class SettingsError(ValueError):
    """A setting is invalid; the message is one line naming the variable and what is wrong."""


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def describe(error: ValidationError) -> str:
    """One line naming each bad variable, its value (never the API key's) and what is wrong."""
    parts = []
    for e in error.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        message = re.sub(r"^Value error, ", "", e["msg"])
        if not field:
            parts.append(message)
            continue
        value = "" if field == "api_key" or e["type"] == "missing" else f"={e.get('input')!r}"
        parts.append(f"{env_name(field)}{value}: {message}")
    return "invalid setting: " + "; ".join(parts)


def unknown_variables(environ: dict[str, str]) -> list[str]:
    """SENTIMENT_* variables that match no setting: usually a typo that would otherwise be silently ignored."""
    known = {env_name(f) for f in Settings.model_fields}
    problems = []
    for name in sorted(n for n in environ if n.upper().startswith(ENV_PREFIX) and n.upper() not in known):
        close = difflib.get_close_matches(name.upper(), sorted(known), n=1)
        problems.append(f"{name} is not a setting" + (f" (did you mean {close[0]}?)" if close else ""))
    return problems


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment (plus keyword overrides); raises `SettingsError` with a one-line message."""
    unknown = unknown_variables(dict(os.environ))
    if unknown:
        raise SettingsError("invalid setting: " + "; ".join(unknown))
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None


README_START, README_END = "<!-- settings: generated by `python -m app.config --write README.md` -->", \
    "<!-- settings: end -->"


def _default_text(name: str) -> str:
    field = Settings.model_fields[name]
    value = field.get_default(call_default_factory=True)
    if value is None or value == []:
        return "unset"
    if isinstance(value, Path):
        root = Path(model.__file__).resolve().parents[1]
        value = value.resolve().relative_to(root) if value.resolve().is_relative_to(root) else value
    elif isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def settings_table() -> str:
    """The README's settings table, one row per field, from the field descriptions above."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{env_name(name)}` | {_default_text(name)} | {field.description} |"
             for name, field in Settings.model_fields.items()]
    return "\n".join(rows)


def readme_with_table(readme: str) -> str:
    start, end = readme.index(README_START) + len(README_START), readme.index(README_END)
    return readme[:start] + "\n" + settings_table() + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.config", description="Print the settings table (markdown).")
    p.add_argument("--write", metavar="README", help="replace the table between the settings markers in this file")
    a = p.parse_args(argv)
    if a.write:
        path = Path(a.write)
        path.write_text(readme_with_table(path.read_text()))
    else:
        print(settings_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
