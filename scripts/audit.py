"""pip-audit over requirements.lock: fails on any known vulnerability not listed, with a reason, in .pip-audit-ignore.

    .venv/bin/python scripts/audit.py            # what .ci/run does
    AUDIT_REQUIRED=1 .venv/bin/python scripts/audit.py   # also fail when the advisory service cannot be reached

Queries PyPI's vulnerability data (pip-audit's default service) for every pinned package, without installing or
resolving anything (--no-deps --disable-pip). A package the service does not answer for is reported as not audited;
when none could be audited (no network, or a proxy that hides PyPI's per-version JSON API) the audit did not happen,
which is said loudly and fails only with AUDIT_REQUIRED=1, so an offline CI machine is not blocked by it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
IGNORE = ROOT / ".pip-audit-ignore"


def ignored(path: Path = IGNORE) -> dict[str, str]:
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        vuln, _, reason = line.partition(" ")
        if not reason.strip():
            sys.exit(f"{path.name}:{n}: {vuln} has no reason: say why it does not apply or cannot be fixed yet")
        out[vuln] = reason.strip()
    return out


def main(lock: Path = LOCK, ignore: Path = IGNORE, pip_audit: Path | None = None) -> int:
    accepted = ignored(ignore)
    pip_audit = pip_audit or Path(sys.executable).with_name("pip-audit")
    with tempfile.TemporaryDirectory() as tmp:
        # PyPI knows releases, not local builds: torch==2.13.0+cpu is audited as torch==2.13.0.
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text(re.sub(r"^([^#\s][^=]*==[^+\s]+)\+\S+", r"\1", lock.read_text(), flags=re.MULTILINE))
        report = Path(tmp) / "audit.json"
        cmd = [str(pip_audit), "-r", str(reqs), "--no-deps", "--disable-pip", "--progress-spinner", "off",
               "--format", "json", "--output", str(report)]
        for vuln in accepted:
            cmd += ["--ignore-vuln", vuln]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if not report.is_file():
            print(done.stdout + done.stderr)
            sys.exit(f"pip-audit failed (exit {done.returncode}) without a report")
        deps = json.loads(report.read_text())["dependencies"]
    audited = [d for d in deps if "skip_reason" not in d]
    vulnerable = [d for d in audited if d.get("vulns")]
    for d in vulnerable:
        for v in d["vulns"]:
            fix = ", ".join(v.get("fix_versions") or []) or "no fixed release yet"
            print(f"VULNERABLE {d['name']}=={d['version']}: {v['id']} (fixed in {fix}) "
                  f"{v.get('description', '')[:200]}")
    for vuln, reason in accepted.items():
        print(f"accepted {vuln}: {reason}")
    print(f"pip-audit: {len(audited)} of {len(deps)} locked packages audited, {len(vulnerable)} with known "
          f"vulnerabilities ({len(accepted)} accepted in {ignore.name})")
    if vulnerable:
        return 1
    if not audited:
        print("WARNING: no package could be audited: the advisory service (PyPI's JSON API) did not answer. The "
              "audit did NOT happen.", file=sys.stderr)
        return 1 if os.environ.get("AUDIT_REQUIRED") == "1" else 0
    if len(audited) < len(deps):
        skipped = ", ".join(d["name"] for d in deps if "skip_reason" in d)
        print(f"WARNING: not audited: {skipped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
