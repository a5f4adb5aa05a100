"""Every knob of the service: one `Settings` object read from `SENTIMENT_*` environment variables.

Settings are built by `get_settings()` when the server starts (or passed to `create_app` by tests), never at import
time, so importing the app has no side effects. Each field's description is its documentation (README table).
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

import model

ENV_PREFIX = "SENTIMENT_"
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=False, extra="forbid",
                                      validate_default=True)

    model_dir: Path = Field(model.DEFAULT_ARTIFACT, description="model artifact folder (config.json, weights.pt, …)")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N")
    max_batch_size: int = Field(64, ge=1, le=4096, description="most texts in one forward pass")
    max_batch_tokens: int = Field(32768, ge=1, description="most padded tokens (longest text × texts) in one "
                                                           "forward pass; a longer single text runs alone")
    max_wait_ms: float = Field(0.0, ge=0, le=10_000, description="how long an idle model waits for a batch to "
                                                                 "fill after its first text arrives; 0: go at once")
    max_queue: int = Field(1024, ge=1, description="texts admitted and waiting; beyond it requests get 429")
    request_timeout_s: float = Field(30.0, gt=0, description="deadline per request; past it the answer is 504")
    max_text_chars: int = Field(20000, ge=1, description="longest text accepted, in characters (422 beyond)")
    max_batch_texts: int = Field(64, ge=1, description="most texts in one {\"texts\": [...]} request (422 beyond)")
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=64, description="largest request body; 413 beyond")
    read_timeout_s: float = Field(30.0, gt=0, le=3600, description="how long a client may take to send a request's "
                                  "headers, and then its body; 408 beyond (a trickling client holds a connection)")
    api_key: SecretStr | None = Field(None, description="when set, /predict and /model need "
                                                        "`Authorization: Bearer <key>`")
    log_json: bool = Field(False, description="log JSON lines instead of plain text")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field("info", description="log level")
    torch_threads: int | None = Field(1, ge=1, le=256, description="torch CPU threads for forward passes (empty: "
                                      "torch's default, one per core). 1 measured fastest on 2 cores: the event "
                                      "loop needs a core, and 2 OpenMP threads sharing with it ran up to 10x slower")
    malloc_trim_s: float = Field(10.0, ge=0, le=3600, description="every this many seconds, between forward "
                                 "passes, return freed heap memory to the OS (glibc malloc_trim) so the resident "
                                 "set creeps less under steady load; 0: never. Only under glibc's malloc: "
                                 "preloaded jemalloc returns memory by itself")
    torch_workers: int = Field(2, ge=1, le=64, description="forward passes run at once, each on its own thread "
                               "with SENTIMENT_TORCH_THREADS intra-op threads. On 2 cores, 2 workers x 1 thread "
                               "ran 1,238 reviews/s against 637 for 1 worker x 2 threads (batch 32); on a GPU use 1")
    event_loop: Literal["asyncio", "uvloop"] = Field("asyncio", description="asyncio kept accepting new "
                                                     "connections (health probes included) under a flood of "
                                                     "refused requests, where uvloop stopped until the flood "
                                                     "ended; both ran the same requests/s at 64 connections")
    shutdown_grace_s: float = Field(30.0, ge=0, description="after SIGTERM, how long admitted work may take "
                                                           "before the server stops anyway")
    shutdown_delay_s: float = Field(0.0, ge=0, le=600, description="after SIGTERM, keep the port open this long "
                                                                   "answering readiness with 503, so load "
                                                                   "balancers stop routing here first")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, description="comma-separated "
                                                         "origins allowed by CORS (empty: CORS off)")
    uncertain_below: float | None = Field(None, gt=0.5, le=1.0, description="when set, a result whose top "
                                          "probability is below it is labelled \"uncertain\"")
    max_explain_words: int = Field(256, ge=1, le=4096, description="most words per text that `explain` weighs (one "
                                   "extra forward-pass row per word); words beyond get no weight")

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
