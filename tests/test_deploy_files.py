"""The compose files and Kubernetes manifests stay in step with the app's settings (no Docker or cluster needed).

The app refuses SENTIMENT_* variables it does not know, so a renamed setting left behind in a deploy file would stop
the container at startup; these tests catch that at `make test` time instead. scripts/docker_smoke.sh runs the image.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from app.config import Settings, env_name

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.gpu.yml"]
K8S_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "deploy" / "k8s").rglob("*.yaml"))
INTERPOLATION = re.compile(r"^\$\{(\w+):-([^}]*)\}$")
KNOWN = {env_name(f): f for f in Settings.model_fields}


def _compose_service(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())["services"]["sentiment"]


def _compose_env(name: str) -> dict[str, str]:
    """The variables a compose file sets, each at the default of its `${VAR:-default}` interpolation."""
    env = {}
    for var, value in _compose_service(name).get("environment", {}).items():
        m = INTERPOLATION.match(str(value))
        assert m and m.group(1) == var, f"{name}: {var} should read `${{{var}:-default}}`, not {value!r}"
        env[var] = m.group(2)
    return env


def _k8s_envs(name: str) -> list[dict[str, str]]:
    envs = []
    for doc in yaml.safe_load_all((ROOT / name).read_text()):
        if doc and doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                envs.append({e["name"]: e["value"] for e in container.get("env", [])})
    return envs


def _check(env: dict[str, str], where: str) -> None:
    unknown = sorted(set(env) - set(KNOWN))
    assert not unknown, f"{where}: {unknown} are not settings (see app/config.py); the app would refuse to start"
    Settings(**{KNOWN[var]: value for var, value in env.items()})  # raises on a value the app would reject


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_environment_is_valid_settings(name):
    _check(_compose_env(name), name)


def test_compose_spells_out_every_setting():
    # SENTIMENT_MODEL_DIR stays at its default (the artifact baked into the image); the file says so in a comment.
    missing = sorted(set(KNOWN) - set(_compose_env("docker-compose.yml")) - {env_name("model_dir")})
    assert not missing, f"add {missing} with their defaults to docker-compose.yml's environment"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_work_with_compose_v1_and_v2(name):
    doc = yaml.safe_load((ROOT / name).read_text())
    assert set(doc) <= {"services", "volumes", "networks", "configs", "secrets"}, "no top-level name:/version:"


def test_compose_service_is_locked_down():
    svc = _compose_service("docker-compose.yml")
    assert {"image", "build", "healthcheck"} <= set(svc)
    assert svc["restart"] == "unless-stopped" and svc["read_only"] is True and svc["tmpfs"]
    assert {"cpus", "memory"} <= set(svc["deploy"]["resources"]["limits"])
    assert any(str(p).endswith(":8000") for p in svc["ports"])


def test_gpu_override_reserves_a_gpu():
    svc = _compose_service("docker-compose.gpu.yml")
    assert _compose_env("docker-compose.gpu.yml")["SENTIMENT_DEVICE"] == "cuda"
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


@pytest.mark.parametrize("name", K8S_FILES)
def test_k8s_environment_is_valid_settings(name):
    for env in _k8s_envs(name):
        _check(env, name)


def test_dockerfile_runs_the_app_and_its_own_supervisor_as_non_root():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]' in dockerfile
    assert "--workers" not in dockerfile
    assert re.search(r"^USER (?!root|0\b)", dockerfile, re.MULTILINE)
    assert "HEALTHCHECK" in dockerfile and "/health/ready" in dockerfile


def test_the_image_runs_the_server_on_jemalloc():
    # glibc's malloc let the resident set creep up under steady load; jemalloc kept it flat (docs/reliability.md).
    # scripts/docker_smoke.sh checks that the running container's server has it loaded.
    runtime = (ROOT / "Dockerfile").read_text().split("AS runtime", 1)[1]
    assert "libjemalloc2" in runtime
    assert re.search(r"LD_PRELOAD=/usr/local/lib/libjemalloc\.so\.2\b", runtime)


def test_the_image_and_make_serve_run_jemalloc_with_the_apps_malloc_conf():
    # Without it jemalloc gave large tensors back to the OS after every forward pass (app/memory.py).
    from app.memory import JEMALLOC_CONF

    runtime = (ROOT / "Dockerfile").read_text().split("AS runtime", 1)[1]
    assert re.search(rf"^\s*MALLOC_CONF={re.escape(JEMALLOC_CONF)}$", runtime, re.MULTILINE)
    makefile = (ROOT / "Makefile").read_text()
    assert f"MALLOC_CONF ?= {JEMALLOC_CONF}\n" in makefile
    assert "MALLOC_CONF=$(MALLOC_CONF)" in makefile.split("\nserve:", 1)[1].split("\n\n", 1)[0]


def test_nothing_at_run_time_needs_a_shell():
    # Exec (JSON) form everywhere: the container runs python directly, so the image needs no /bin/sh to start,
    # answer its health check or stop cleanly (a shell-form CMD would also swallow SIGTERM).
    runtime = (ROOT / "Dockerfile").read_text().split("AS runtime", 1)[1]
    runtime = re.sub(r"\\\n", " ", runtime)
    for line in runtime.splitlines():
        instruction = line.split(" ", 1)[0]
        if instruction in ("CMD", "ENTRYPOINT"):
            assert line.split(" ", 1)[1].lstrip().startswith("["), line
        if instruction == "HEALTHCHECK":
            assert re.search(r"\bCMD \[", line), line
    assert _compose_service("docker-compose.yml")["healthcheck"]["test"][0] == "CMD"  # not CMD-SHELL
