"""The dependency lock and the audit around it (scripts/audit.py), with a stand-in for pip-audit (no network)."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_the_lock_pins_every_dependency_at_an_allowed_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(spec)
        if req.name == "imdb-sentiment":
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} is not in requirements.lock: regenerate it (see its header)"
        assert Version(pins[name]) in req.specifier or req.specifier.contains(Version(pins[name]).public), \
            f"{req.name}=={pins[name]} does not satisfy {req.specifier}"


FAKE_PIP_AUDIT = '''#!{python}
import json, sys
args = sys.argv[1:]
ignored = {{args[i + 1] for i, a in enumerate(args) if a == "--ignore-vuln"}}
reqs = open(args[args.index("-r") + 1]).read()
assert "+cpu" not in reqs, "local version labels must be stripped"
known = [{{"id": "GHSA-test-0001", "fix_versions": ["9.9"], "description": "bad"}}]
vulns = [v for v in known if v["id"] not in ignored]
deps = [{{"name": "torch", "version": "2.13.0", "vulns": vulns}}, {{"name": "other", "version": "1", "vulns": []}}]
json.dump({{"dependencies": deps, "fixes": []}}, open(args[args.index("--output") + 1], "w"))
sys.exit(1 if vulns else 0)
'''


@pytest.fixture
def audit(tmp_path):
    spec = importlib.util.spec_from_file_location("audit_script", ROOT / "scripts" / "audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fake = tmp_path / "pip-audit"
    fake.write_text(FAKE_PIP_AUDIT.format(python=sys.executable))
    fake.chmod(0o755)
    lock = tmp_path / "requirements.lock"
    lock.write_text("# comment\ntorch==2.13.0+cpu\nother==1\n")

    def run(ignore_text: str) -> int:
        ignore = tmp_path / "ignore"
        ignore.write_text(ignore_text)
        return module.main(lock, ignore, fake)

    return run


def test_a_known_vulnerability_fails_the_audit(audit, capsys):
    assert audit("# nothing accepted\n") == 1
    assert "VULNERABLE torch==2.13.0: GHSA-test-0001 (fixed in 9.9)" in capsys.readouterr().out


def test_an_accepted_vulnerability_with_a_reason_passes(audit, capsys):
    assert audit("GHSA-test-0001  only reachable through an API this service never calls\n") == 0
    assert "accepted GHSA-test-0001: only reachable" in capsys.readouterr().out


def test_an_accepted_vulnerability_needs_a_reason(audit):
    with pytest.raises(SystemExit, match="GHSA-test-0001 has no reason"):
        audit("GHSA-test-0001\n")
