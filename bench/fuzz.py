"""Schemathesis with every check against a live server: at least 1,000 generated cases, zero failures expected.

    python -m bench.fuzz                          # 1,000 examples per operation, open and with an API key
    python -m bench.fuzz --max-examples 200 --seed random

Starts the real server (`python -m app` on a free 127.0.0.1 port) twice: without an API key, and with one (the
key sent as a header, so the `ignored_auth` check probes requests without it). Each run is `st run --checks all`
over /openapi.json: examples, coverage and fuzzing phases; every response is checked against the documented
statuses, headers, content types and schemas, for server errors, and for accepting invalid or refusing valid input.
Writes schemathesis' JSON reports and a summary; exit status 1 on any failure or if fewer than --min-cases ran.
tests/test_api_schemathesis.py runs a smaller version of this in `make test`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.harness import ROOT, start_service

KEY = "fuzz-key-0123456789abcdef"


def run_st(url: str, a: argparse.Namespace, report: Path, headers: list[str]) -> dict:
    st = Path(sys.executable).with_name("st")
    cmd = [str(st), "--config-file", str(ROOT / "schemathesis.toml"), "run", f"{url}/openapi.json", "--checks", "all",
           "--max-examples", str(a.max_examples),
           "--workers", str(a.workers), "--request-timeout", "30", "--no-color", "--report", "json",
           "--report-json-path", str(report), *[arg for h in headers for arg in ("-H", h)]]
    if a.seed != "random":
        cmd += ["--seed", a.seed]
    # In the output folder: schemathesis keeps its example database (.schemathesis/) in the working directory.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, check=False, cwd=report.parent)
    report.with_suffix(".txt").write_text(done.stdout + done.stderr)
    data = json.loads(report.read_text())
    return {"exit_code": done.returncode, "generated": data["test_cases"]["generated"],
            "with_failures": data["test_cases"]["with_failures"], "errored": data["test_cases"]["errored"],
            "unique_failures": data["test_cases"]["unique_failures"], "errors": len(data["errors"]),
            "operations_tested": data["operations"]["tested"], "seconds": data["running_time"],
            "seed": data["seed"], "summary": done.stdout.strip().splitlines()[-1]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-examples", type=int, default=1000, help="schemathesis examples per operation")
    p.add_argument("--min-cases", type=int, default=1000, help="fail unless each run generated this many cases")
    p.add_argument("--seed", default="20261126", help="schemathesis seed, or 'random'")
    p.add_argument("--workers", type=int, default=2, help="schemathesis workers")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per run")
    p.add_argument("--model-dir", default=None, help="artifact to serve (default: the shipped model)")
    p.add_argument("--out", default="bench/results/fuzz", help="folder for the reports")
    a = p.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name, env, headers in (("open", {}, []), ("api-key", {"SENTIMENT_API_KEY": KEY},
                                                  [f"Authorization: Bearer {KEY}"])):
        server = start_service(out / f"{name}.server.log", env, a.model_dir)
        try:
            runs[name] = run_st(f"http://127.0.0.1:{server.port}", a, out / f"{name}.json", headers)
        finally:
            runs[name]["server_exit_code"] = server.stop()
        r = runs[name]
        print(f"{name:8s}: {r['generated']} cases over {r['operations_tested']} operations in {r['seconds']:.0f} s, "
              f"{r['with_failures']} with failures, {r['errored']} errored; seed {r['seed']}; st: {r['summary']}",
              flush=True)
    ok = all(r["exit_code"] == 0 and r["with_failures"] == 0 and r["errored"] == 0 and r["errors"] == 0
             and r["generated"] >= a.min_cases and r["server_exit_code"] == 0 for r in runs.values())
    (out / "summary.json").write_text(json.dumps({"ok": ok, "runs": runs}, indent=2) + "\n")
    print(f"{'PASS' if ok else 'FAIL'}; reports in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
