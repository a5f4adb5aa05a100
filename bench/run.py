"""Benchmark: the model in-process (the limit), the batching service, and a naive one-pass-per-request server.

    python -m bench.run --data ../shared/data/aclImdb_v1.tar.gz --report docs/benchmarks.md   # `make bench`
    python -m bench.run --data PATH --duration 5 --concurrency 1 16       # a quick look

Bodies are real IMDB test reviews (their real length distribution). Load comes from `wrk` (closed loop, a Lua
script rotating the bodies); the server's CPU time and peak RSS come from /proc. Writes results JSON, a PNG plot
and a Markdown table to --out. Not part of the test suite: numbers depend on the machine and need it quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from app.cores import usable_cores
from bench.harness import Server, free_port, preload, test_reviews, write_bodies, wrk
from bench.model_speed import layouts, measure_layouts


def load_levels(name: str, server: Server, bodies: Path, levels: list[int], duration: float,
                texts_per_request: int) -> list[dict]:
    wrk(server.port, bodies, max(levels), min(3.0, duration))  # warm-up
    rows = []
    for c in levels:
        wait_idle(server)  # (see `interleave`)
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        r = wrk(server.port, bodies, c, duration)
        cpu = (server.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
        row = {"server": name, "connections": c, "texts_per_request": texts_per_request,
               "requests_per_s": r["requests"] / r["seconds"],
               "reviews_per_s": r["requests"] / r["seconds"] * texts_per_request,
               "p50_ms": r["p50_us"] / 1000, "p90_ms": r["p90_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
               "non_2xx": r["non_2xx"], "status_429_503": r["status_429_503"], "socket_errors": r["socket_errors"],
               "server_cpu_cores": cpu, "server_peak_rss_mb": server.peak_rss_mb()}
        rows.append(row)
        print(f"  {name:8s} c={c:4d} x{texts_per_request:<3d}: {row['requests_per_s']:8.1f} req/s "
              f"{row['reviews_per_s']:8.1f} reviews/s  p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:8.1f} ms  "
              f"non-2xx {row['non_2xx']}  socket errors {row['socket_errors']}  cpu {cpu:.2f}  "
              f"rss {row['server_peak_rss_mb']:.0f} MB", flush=True)
    return rows


def interleave(servers: dict[str, Server], bodies: Path, levels: list[int], rounds: int, duration: float) -> list[dict]:
    """Every server up at once, measured in turn at each level, `rounds` times. A ratio between two servers then
    compares runs seconds apart, where the runs one server after another are minutes apart and this machine's speed
    drifts over minutes. Each round starts with the next server in line, so none always goes first, and each run
    waits until the server before it is idle: the naive server goes on answering the requests of connections wrk
    has dropped, at 256 connections for over a second, on the cores the next run measures."""
    for server in servers.values():
        wrk(server.port, bodies, max(levels), min(3.0, duration))  # warm-up
        wait_idle(server)
    names, rows = list(servers), []
    for r in range(rounds):
        for c in levels:
            for name in names[r % len(names):] + names[:r % len(names)]:
                res = wrk(servers[name].port, bodies, c, duration)
                wait_idle(servers[name])
                rows.append({"round": r + 1, "server": name, "connections": c,
                             "requests_per_s": res["requests"] / res["seconds"], "p50_ms": res["p50_us"] / 1000})
                print(f"  round {r + 1} {name:12s} c={c:4d}: {rows[-1]['requests_per_s']:8.1f} req/s  "
                      f"p50 {rows[-1]['p50_ms']:7.1f} ms", flush=True)
    return rows


def wait_idle(server: Server, timeout_s: float = 60.0, step_s: float = 0.5) -> None:
    """Return once `server` uses under 5% of a core (or after `timeout_s`)."""
    deadline, last = time.monotonic() + timeout_s, server.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(step_s)
        now = server.cpu_seconds()
        if now - last < 0.05 * step_s:
            return
        last = now


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    limit = max(r["reviews_per_s"] for r in results["in_process"])
    for name in dict.fromkeys(r["server"] for r in results["http"]):
        rows = [r for r in results["http"] if r["server"] == name and r["texts_per_request"] == 1]
        if rows:
            xs = [r["connections"] for r in rows]
            a.plot(xs, [r["reviews_per_s"] for r in rows], "o-", label=name)
            b.plot(xs, [r["p99_ms"] for r in rows], "o-", label=name)
    a.axhline(limit, ls="--", color="grey", label="in-process limit (best layout)")
    a.set(xscale="log", xlabel="connections", ylabel="reviews/s", title="Throughput (1 review per request)")
    b.set(xscale="log", yscale="log", xlabel="connections", ylabel="p99 latency (ms)", title="p99 latency")
    a.legend()
    b.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(results: dict) -> str:
    """The tables and ratios of one run (results.json)."""
    limit = best_in_process(results)
    lines = ["| callers × torch threads | batch size | reviews/s | ms per batch |", "|---|---:|---:|---:|"]
    lines += [f"| {r.get('callers', 1)} × {r['threads']} | {r['batch_size']} | {r['reviews_per_s']:.1f} | "
              f"{r['latency_ms']:.1f} |" for r in results["in_process"]]
    lines += ["", "| server | conns | texts/req | req/s | reviews/s | p50 ms | p90 ms | p99 ms | non-2xx | 429/503 | "
              "socket err | CPU cores | peak RSS MB |", "|---|" + "---:|" * 12]
    for r in results["http"]:
        lines.append(f"| {r['server']} | {r['connections']} | {r['texts_per_request']} | {r['requests_per_s']:.1f} | "
                     f"{r['reviews_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{r['non_2xx']} | {r['status_429_503']} | {r['socket_errors']} | {r['server_cpu_cores']:.2f} | "
                     f"{r['server_peak_rss_mb']:.0f} |")
    if results.get("interleaved"):
        names = list(dict.fromkeys(r["server"] for r in results["interleaved"]))
        lines += ["", "Interleaved, single texts (all up at once, in turn; req/s):", "",
                  "| conns | round | " + " | ".join(names) + " | service / naive best |",
                  "|---:|---:|" + "---:|" * (len(names) + 1)]
        rounds = interleaved_rounds(results)
        for (c, rnd), ratio in interleaved_ratios(results).items():
            got = rounds[c, rnd]
            lines.append(f"| {c} | {rnd} | " + " | ".join(f"{got[n]:.1f}" if n in got else "" for n in names)
                         + f" | {ratio:.2f}x |")
    lines += ["", f"In-process limit: **{limit['reviews_per_s']:.1f} reviews/s**, {limit.get('callers', 1)} "
                  f"caller(s) × {limit['threads']} torch thread(s) at batch {limit['batch_size']}."]
    if results.get("limit_checks"):
        checks = ", ".join(f"{c['when']} {c['reviews_per_s']:.1f}" for c in results["limit_checks"])
        lines.append(f"The same layout measured again during the run: {checks} reviews/s.")
    elif "limit_after" in results:
        again = results["limit_after"]["reviews_per_s"]
        lines.append(f"Measured again after the servers: {again:.1f} reviews/s "
                     f"({again / limit['reviews_per_s'] - 1:+.0%}: how far the machine drifted during the run).")
    lines.append("")
    for key, text in results["ratios"].items():
        lines.append(f"- {key}: {text}")
    lines += [f"- {name} start to ready: {seconds:.1f} s" for name, seconds in results["ready_s"].items()
              if name.startswith("service")]
    lines.append("- memory allocator: " + ", ".join(f"{k} {v}" for k, v in results.get("allocator", {}).items()))
    return "\n".join(lines)


def best_in_process(results: dict) -> dict:
    return max(results["in_process"], key=lambda r: r["reviews_per_s"])


def limit_around(results: dict, server: str) -> float | None:
    """The best in-process layout measured again just before `server` ran and just after (the better of the
    two), or None for a run without those checks."""
    checks = results.get("limit_checks", [])
    i = next((k for k, c in enumerate(checks) if c["when"] == f"before {server}"), None)
    if i is None:
        return None
    return max(c["reviews_per_s"] for c in checks[i:i + 2])


def ratios(results: dict) -> dict:
    """Every ratio against the best the other side can do: the in-process limit over all layouts, and the naive
    server's best layout at the same number of connections."""
    default = results.get("default_service", "service")
    limit = best_in_process(results)["reviews_per_s"]
    around = limit_around(results, default)
    b1 = min((r for r in results["in_process"] if r["batch_size"] == 1 and r.get("callers", 1) == 1),
             key=lambda r: r["latency_ms"], default=None)
    out = {}

    def of_limit(load: str, reviews_per_s: float) -> None:
        out[f"service/limit, {load}"] = f"{reviews_per_s / limit:.0%}"
        if around:
            out[f"service/limit around its run, {load}"] = f"{reviews_per_s / around:.0%}"

    def service(c, per):
        return next((r for r in results["http"] if r["server"] == default and r["connections"] == c
                     and r["texts_per_request"] == per), None)

    def naive_best(c):
        rows = [r for r in results["http"] if r["server"].startswith("naive") and r["connections"] == c]
        return max(rows, key=lambda r: r["reviews_per_s"], default=None)

    for c in sorted({r["connections"] for r in results["http"]}):
        s, n = service(c, 1), naive_best(c)
        if s:
            of_limit(f"single texts, {c} conns", s["reviews_per_s"])
        if s and n:
            ratio = s["reviews_per_s"] / n["reviews_per_s"]
            out[f"service/naive best, single texts, {c} conns"] = f"{ratio:.2f}x ({n['server']})"
    for r in results["http"]:
        if r["server"] == default and r["texts_per_request"] > 1:
            of_limit(f"{r['texts_per_request']}-text requests, {r['connections']} conns", r["reviews_per_s"])
    by_level: dict[int, list[float]] = {}
    for (c, _), ratio in interleaved_ratios(results).items():
        by_level.setdefault(c, []).append(ratio)
    for c, got in by_level.items():
        out[f"service/naive best, interleaved, single texts, {c} conns"] = over_rounds(got)
    for c, (layout, got) in interleaved_layout_ratios(results).items():
        out[f"service/naive best layout by median, interleaved, single texts, {c} conns"] = over_rounds(got, layout)
    s1, n1 = service(1, 1), naive_best(1)
    if s1 and b1:
        out["p50 at 1 conn vs in-process batch-1 latency"] = f"{s1['p50_ms']:.1f} ms vs {b1['latency_ms']:.1f} ms"
    if s1 and n1:
        out["p50 at 1 conn, service vs naive best"] = f"{s1['p50_ms']:.1f} ms vs {n1['p50_ms']:.1f} ms ({n1['server']})"
    return out


def over_rounds(ratios_: list[float], against: str | None = None) -> str:
    """`1.02x (naive-1x2), the median of 4 rounds (0.95-1.17x)`, naming what it divides by when given."""
    named = f" ({against})" if against else ""
    return (f"{statistics.median(ratios_):.2f}x{named}, the median of {len(ratios_)} rounds "
            f"({min(ratios_):.2f}-{max(ratios_):.2f}x)")


def interleaved_rounds(results: dict) -> dict[tuple[int, int], dict[str, float]]:
    """(connections, round) -> each server's req/s in that round, in the order they were measured."""
    rounds: dict[tuple[int, int], dict[str, float]] = {}
    for r in results.get("interleaved", []):
        rounds.setdefault((r["connections"], r["round"]), {})[r["server"]] = r["requests_per_s"]
    return rounds


def interleaved_ratios(results: dict) -> dict[tuple[int, int], float]:
    """(connections, round) -> the default service layout's req/s over the best naive layout's in that round."""
    default = results.get("default_service", "service")
    out = {}
    for key, got in interleaved_rounds(results).items():
        naive = [v for name, v in got.items() if name.startswith("naive")]
        if default in got and naive:
            out[key] = got[default] / max(naive)
    return out


def interleaved_layout_ratios(results: dict) -> dict[int, tuple[str, list[float]]]:
    """connections -> (the naive layout with the best median over the rounds, the default service layout's req/s
    over that layout's in each round). Each round's best naive run is the largest of several noisy runs, and
    favours the naive side by their noise most where its layouts run alike (one connection reaches one process);
    this picks the layout that is best on a typical run instead."""
    default = results.get("default_service", "service")
    by_level: dict[int, dict[int, dict[str, float]]] = {}
    for (c, rnd), got in interleaved_rounds(results).items():
        by_level.setdefault(c, {})[rnd] = got
    out = {}
    for c, rounds in by_level.items():
        runs: dict[str, list[float]] = {}
        for got in rounds.values():
            for name, v in got.items():
                if name.startswith("naive"):
                    runs.setdefault(name, []).append(v)
        if not runs:
            continue
        layout = max(runs, key=lambda name: statistics.median(runs[name]))
        ratios_ = [got[default] / got[layout] for got in rounds.values() if default in got and layout in got]
        if ratios_:
            out[c] = (layout, ratios_)
    return out


def report(results: dict, gpu: dict | None) -> str:
    """docs/benchmarks.md: what the last `make bench` measured, and how to read it."""
    m = results.get("meta", {})
    lines = [
        "# Benchmarks", "",
        "Written by `make bench` (`python -m bench.run --data PATH --report docs/benchmarks.md`); it needs the IMDB",
        "archive, `wrk` and a quiet machine. Nothing in this file is edited by hand: run it again to refresh it.", "",
        f"Last run: {m.get('date', '?')}, {results['cpu_count']} CPU cores ({m.get('cpu', '?')}), device "
        f"{results['device']}, torch {m.get('torch', '?')}, model {m.get('model', '?')} "
        f"(LSTM in {m.get('lstm_dtype', 'float32')}, for all sides), "
        f"commit {m.get('commit', '?')}. "
        f"Bodies: {results['reviews']} real IMDB test reviews, {results['duration_s']:g} s per load level after a "
        f"warm-up; `wrk` runs on the same cores as the server. Server settings: the defaults, except "
        f"`service-PxW`: P processes (SENTIMENT_PROCESSES) × W torch workers each (SENTIMENT_TORCH_WORKERS); the "
        f"ratios are those of the default layout, {results.get('default_service', 'service')}.", "",
        "How to read it:",
        "- **The in-process limit** is the model alone, in this process, in the best of every layout the server can",
        "  run (parallel callers × torch threads × batch size), on length-sorted batches: a ceiling that live",
        "  traffic cannot quite reach. Its best layout is measured again before each server and after the last,",
        "  because this machine's speed drifts over minutes: \"service/limit\" divides by the best of the first",
        "  sweep, \"around its run\" by the better of the two checks either side of the default layout's server.",
        "- **The naive server** (`bench/naive_server.py`) runs one forward pass per request; it is measured with one",
        "  process, with one process per core, and with one process using every core for each pass (`naive-PxT`: P",
        "  processes × T torch threads), and each ratio against it uses its best layout at that number of",
        "  connections.",
        "- **Interleaved**: the default service layout and the naive layouts again, all up at once and measured in",
        "  turn, a few seconds each, round after round. The sequential runs are minutes apart; these ratios compare",
        "  runs seconds apart (the median over the rounds, and their range), once against each round's best naive",
        "  run and once against the naive layout with the best median over the rounds. The first is the largest of",
        "  several noisy runs, and favours the naive side most where its layouts run alike (at one connection).",
        "- CPU cores and peak RSS cover all of a server's processes (peak RSS is the sum of each one's peak).", "",
        "![throughput and p99 against connections](benchmarks.png)", "",
        markdown(results),
    ]
    if gpu:
        g = gpu.get("meta", {})
        lines += ["", f"## GPU: {g.get('gpu', 'a GPU')}", "",
                  f"Run {g.get('date', '?')} with model {g.get('model', '?')} at commit {g.get('commit', '?')} "
                  f"(`python -m bench.run --device cuda` on a lent machine, {gpu['cpu_count']} CPU cores); "
                  f"its results are "
                  f"`docs/benchmarks-gpu.json`.", "", markdown(gpu)]
    return "\n".join(lines) + "\n"


def default_layout(device: str) -> tuple[int, int]:
    """The server's default processes x torch workers per process on `device`, here (`auto`, resolved as the
    server's settings resolve it)."""
    from app.config import Settings

    s = Settings(device=device, processes="auto", torch_workers="auto")
    return s.processes, s.torch_workers


def run_meta(model, device: str) -> dict:
    import platform
    import subprocess

    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "app", "model", "bench"],
                          capture_output=True, text=True, check=True).stdout.strip():
            commit += " with uncommitted changes"  # the figures are not that commit's
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?") if Path("/proc/cpuinfo").exists() \
        else platform.processor() or "?"
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "commit": commit, "torch": torch.__version__, "cpu": cpu,
            "model": f"{model.name} {model.version}", "lstm_dtype": model.lstm_dtype,
            "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="aclImdb_v1.tar.gz or its folder (test reviews are the bodies)")
    p.add_argument("--reviews", type=int, default=2000, help="distinct test reviews to use")
    p.add_argument("--duration", type=float, default=20, help="seconds per load level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256], help="wrk connections")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 32, 64, 128], help="in-process sizes")
    p.add_argument("--device", default=os.environ.get("SENTIMENT_DEVICE", "cpu"), help="cpu or cuda")
    p.add_argument("--max-threads", type=int, default=usable_cores(),
                   help="cores the in-process layouts may use (callers x threads); the limit is the best layout")
    p.add_argument("--service-layouts", nargs="+", metavar="PxW", default=None,
                   help="server processes x torch workers per process to measure (default: the settings' default, "
                        "1 x cores and cores x 1)")
    p.add_argument("--skip-naive", action="store_true", help="do not run the naive server")
    p.add_argument("--interleaved-rounds", type=int, default=4, help="rounds of the default service layout and "
                   "the naive layouts measured in turn, all up at once (0: none)")
    p.add_argument("--interleaved-duration", type=float, default=5, help="seconds per server per level and round")
    p.add_argument("--interleaved-concurrency", type=int, nargs="+", default=[1, 64, 256],
                   help="wrk connections for the interleaved rounds")
    p.add_argument("--out", default="bench/results", help="folder for results.json, plot.png, table.md")
    p.add_argument("--report", default=None, help="also write the Markdown report here (make bench: "
                                                   "docs/benchmarks.md), its plot beside it")
    p.add_argument("--gpu-results", default="docs/benchmarks-gpu.json",
                   help="a GPU run's results.json, added to the report as its own section when the file exists")
    a = p.parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = test_reviews(a.data, a.reviews, seed=0)
    results: dict = {"device": a.device, "cpu_count": os.cpu_count(), "reviews": len(texts),
                     "duration_s": a.duration, "http": [], "ready_s": {}}
    from model import load_model

    model = load_model(device=a.device)
    results["meta"] = run_meta(model, a.device)
    print(f"in-process limit ({a.device}):", flush=True)
    results["in_process"] = measure_layouts(model, texts, a.batch_sizes, layouts(a.max_threads))
    best = best_in_process(results)

    def limit_check(when: str) -> None:
        # This machine's speed drifts over minutes: the best layout again, beside each server, shows how far it
        # moved and gives each server a limit measured in the same minutes.
        print(f"in-process limit again, {when}:", flush=True)
        row = measure_layouts(model, texts, [best["batch_size"]], [(best["callers"], best["threads"])])[0]
        results.setdefault("limit_checks", []).append({"when": when, **row})

    with tempfile.TemporaryDirectory() as tmp:
        single = write_bodies(Path(tmp) / "single.jsonl", texts, 1)
        multi = write_bodies(Path(tmp) / "batch32.jsonl", texts, 32)
        env = {"SENTIMENT_DEVICE": a.device, "SENTIMENT_LOG_LEVEL": "warning", **preload()}
        default = default_layout(a.device)
        service_layouts = a.service_layouts or [
            f"{p}x{w}" for p, w in dict.fromkeys([default, (1, a.max_threads), (a.max_threads, 1)])]
        results["default_service"] = "service-{}x{}".format(*default)
        servers = [(f"service-{layout}", [sys.executable, "-m", "app"], {
            "SENTIMENT_PROCESSES": layout.split("x")[0], "SENTIMENT_TORCH_WORKERS": layout.split("x")[1]})
            for layout in service_layouts]
        if not a.skip_naive:
            # One process, one per core, and one process with a thread per core: a lone request's fastest layout.
            for processes, threads in dict.fromkeys([(1, 1), (a.max_threads, 1), (1, a.max_threads)]):
                argv0 = [sys.executable, "-m", "bench.naive_server", "--workers", str(processes), "--threads",
                         str(threads)]
                servers.append((f"naive-{processes}x{threads}", argv0, {}))

        def start(argv0: list[str], layout_env: dict[str, str]) -> Server:
            port = free_port()
            return Server([*argv0, "--host", "127.0.0.1", "--port", str(port)], {**env, **layout_env}, port)

        for name, argv0, layout_env in servers:
            limit_check(f"before {name}")
            server = start(argv0, layout_env)
            results["ready_s"][name] = server.ready_s
            results.setdefault("allocator", {})[name] = server.allocator()
            print(f"{name}: ready in {server.ready_s:.1f} s, memory allocator {server.allocator()}", flush=True)
            try:
                results["http"] += load_levels(name, server, single, a.concurrency, a.duration, 1)
                if name.startswith("service"):
                    results["http"] += load_levels(name, server, multi, [16], a.duration, 32)
            finally:
                server.stop()
        lineup = [s for s in servers if s[0] == results["default_service"] or s[0].startswith("naive")]
        if a.interleaved_rounds and len(lineup) > 1 and lineup[0][0] == results["default_service"]:
            print("interleaved:", flush=True)
            up: dict[str, Server] = {}
            try:
                for name, argv0, layout_env in lineup:
                    up[name] = start(argv0, layout_env)
                results["interleaved"] = interleave(up, single, a.interleaved_concurrency, a.interleaved_rounds,
                                                    a.interleaved_duration)
            finally:
                for server in up.values():
                    server.stop()
    limit_check("after the servers")
    results["ratios"] = ratios(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (out / "table.md").write_text(table + "\n")
    try:
        plot(results, out / "plot.png")
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
    if a.report:
        gpu_path = Path(a.gpu_results)
        gpu = json.loads(gpu_path.read_text()) if a.device == "cpu" and gpu_path.is_file() else None
        Path(a.report).write_text(report(results, gpu))
        if (out / "plot.png").exists():
            shutil.copy(out / "plot.png", Path(a.report).with_name("benchmarks.png" if a.device == "cpu"
                                                                     else "benchmarks-gpu.png"))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
