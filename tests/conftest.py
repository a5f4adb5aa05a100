"""Shared fixtures: a tiny real model artifact (trained once per session), settings and apps built on it, a model
stand-in whose forward pass can be held or made to fail, and a real `python -m app` server process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import model
from app.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read SENTIMENT_* variables: a developer's shell must not change what the tests see."""
    for name in list(os.environ):
        if name.upper().startswith("SENTIMENT_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def smoke_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) artifact from the training code's smoke mode: every app test runs the real inference path."""
    base = tmp_path_factory.mktemp("smoke")
    out = base / "artifact"
    subprocess.run([sys.executable, "-m", "model.train", "--smoke", "--out", str(out), "--checkpoint-dir",
                    str(base / "runs"), "--threads", "1"], cwd=ROOT, check=True, capture_output=True, timeout=240)
    return out


@pytest.fixture(scope="session")
def shipped_artifact() -> Path:
    if not (model.DEFAULT_ARTIFACT / "config.json").is_file():
        pytest.skip(f"the shipped model is not committed yet ({model.DEFAULT_ARTIFACT} has no config.json)")
    return model.DEFAULT_ARTIFACT


@pytest.fixture(scope="session")
def loaded_model(smoke_artifact: Path) -> model.SentimentModel:
    """Loaded once and shared by apps (each app still runs its own warm-up and batcher)."""
    return model.load_model(smoke_artifact, "cpu")


@pytest.fixture
def make_settings(smoke_artifact: Path) -> Callable[..., Settings]:
    def make(**overrides) -> Settings:
        # One torch worker unless a test asks for more: the gated-model tests hold one forward pass and count on the
        # texts behind it queueing (tests/test_batcher.py and test_api_predict.py cover several workers).
        return Settings(**{"model_dir": smoke_artifact, "device": "cpu", "torch_workers": 1, **overrides})

    return make


@pytest.fixture
def make_client(make_settings, loaded_model) -> Callable[..., contextlib.AbstractContextManager[TestClient]]:
    """`with make_client(max_batch_size=4, model=...) as client:` runs the app with its lifespan."""

    @contextlib.contextmanager
    def make(*, model=None, **overrides) -> Iterator[TestClient]:
        app = create_app(make_settings(**overrides), model=model or loaded_model)
        with TestClient(app) as client:
            yield client

    return make


@pytest.fixture
def client(make_client) -> Iterator[TestClient]:
    with make_client() as c:
        yield c


@contextlib.asynccontextmanager
async def running(app) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, reached over ASGI from the test's own event loop (for concurrent requests)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as c:
            yield c


@pytest.fixture
def asgi() -> Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]:
    """`async with asgi(app) as client:` (see `running`)."""
    return running


class GatedModel:
    """The real model, except that the forward pass can be held (`gate`) or made to fail for chosen texts.

    It records every batch it is given, so tests can see how requests were grouped."""

    def __init__(self, inner: model.SentimentModel):
        self._inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a forward pass has started (and is maybe held)
        self.fail_if: Callable[[model.Encoded], bool] = lambda e: False
        self.batches: list[list[model.Encoded]] = []
        self.threads: set[str] = set()

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def predict_encoded(self, batch, beside=None):
        self.batches.append(list(batch))
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise RuntimeError("test gate never opened")
        if any(self.fail_if(e) for e in batch):
            raise RuntimeError("injected failure")
        return self._inner.predict_encoded(batch, beside)


@pytest.fixture
def gated_model(loaded_model) -> Iterator[GatedModel]:
    m = GatedModel(loaded_model)
    yield m
    m.gate.set()  # never leave a worker thread blocked


# -- a real server process ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m app` on 127.0.0.1 (a free port unless given), its output collected in a file. The one way the
    tests start a real server: `script` runs `python -c SCRIPT` instead, a script that patches the app to inject a
    fault and then runs its entry point with the same arguments."""

    def __init__(self, env: dict[str, str], log_path: Path, *, script: str | None = None, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - open for the life of the process
        full_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SENTIMENT_")}
        full_env.update({"PYTHONUNBUFFERED": "1", **env})
        command = ["-c", script] if script else ["-m", "app"]
        self.proc = subprocess.Popen([sys.executable, *command, "--host", "127.0.0.1", "--port", str(self.port)],
                                     cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log()}")

    def wait_log(self, done: Callable[[str], bool], timeout: float = 10) -> str:
        """The log once `done(log)` holds (or at the timeout): the access line is written after the answer is
        sent, so a client that has its answer may read the log before that line is in it."""
        deadline = time.monotonic() + timeout
        while not done(log := self.log()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return log

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_server(smoke_artifact: Path, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def start(script: str | None = None, port: int | None = None, **env: str) -> ServerProcess:
        """A server on the smoke model; `env` sets SENTIMENT_* variables (see `ServerProcess` for the rest). One
        server process unless `env` asks for more (the default, `auto`, has its own test): each costs seconds."""
        env = {"SENTIMENT_MODEL_DIR": str(smoke_artifact), "SENTIMENT_DEVICE": "cpu", "SENTIMENT_PROCESSES": "1",
               **env}
        server = ServerProcess(env, tmp_path / f"server-{len(servers)}.log", script=script, port=port)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def live_server(smoke_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by the read-only suites (schemathesis, the browser)."""
    server = ServerProcess({"SENTIMENT_MODEL_DIR": str(smoke_artifact), "SENTIMENT_DEVICE": "cpu",
                            "SENTIMENT_PROCESSES": "1", "SENTIMENT_LOG_LEVEL": "warning"},
                           tmp_path_factory.mktemp("live") / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


# -- a headless browser ------------------------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path):
    """Headless Chromium driven by Selenium (skipped, with the reason, where Chromium is not installed)."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver); "
                    f"{CHROMIUM} or {CHROMEDRIVER} is absent")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,2000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
