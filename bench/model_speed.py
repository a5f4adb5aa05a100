"""In-process throughput of a model artifact in its best layout, optionally against a baseline model built from
another source tree (an older version whose code differs), measured in the same run, interleaved.

    python -m bench.model_speed --data ../shared/data/aclImdb_v1.tar.gz \\
        [--baseline-tree /tmp/v2 --baseline-artifact /tmp/v2/model/artifacts/imdb-lstm-v2] [--out docs/model-speed.md]

Layouts: C parallel callers x T torch threads (C x T <= cores), each caller running `predict_proba` on its share of
the reviews at batch size B. Each measurement runs in a fresh process (`--measure`), so neither model warms the
other's caches; the artifacts alternate round by round, so drift on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layouts(cores: int) -> list[tuple[int, int]]:
    """(parallel callers, torch threads each) pairs that fit the cores: the layouts a server can run the model in."""
    return [(c, t) for c in (1, 2, 4) for t in (1, 2, 4) if c * t <= cores]


def measure_layouts(model, texts: list[str], batch_sizes: list[int], pairs: list[tuple[int, int]]) -> list[dict]:
    """`predict_proba` over `texts` in each layout and batch size: C callers side by side, each on its share of the
    texts with T torch threads (on a GPU, callers share the device). Rows: callers, threads, batch_size,
    reviews_per_s, ms per batch.

    predict_proba sorts its texts by length before batching, so these batches carry almost no padding: a limit
    that live traffic (random lengths) cannot quite reach."""
    import torch

    rows = []
    for callers, threads in pairs:
        torch.set_num_threads(threads)
        shards = [texts[i::callers] for i in range(callers)]
        model.predict_proba(texts[:64])  # warm-up
        for bs in batch_sizes:
            sample = shards if bs > 1 else [shard[: max(50, len(shard) // 4)] for shard in shards]
            workers = [threading.Thread(target=_caller, args=(model, shard, bs, threads)) for shard in sample]
            started = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            seconds = time.perf_counter() - started
            count = sum(len(shard) for shard in sample)
            rows.append({"callers": callers, "threads": threads, "batch_size": bs,
                         "reviews_per_s": round(count / seconds, 1),
                         "latency_ms": round(1000 * seconds / count * bs * callers, 2)})
            print(f"  in-process {callers} caller(s) x {threads} thread(s), batch {bs:4d}: "
                  f"{rows[-1]['reviews_per_s']:8.1f} reviews/s", file=sys.stderr, flush=True)
    return rows


def _caller(model, texts: list[str], batch_size: int, threads: int) -> None:
    import torch

    # Each thread has its own OpenMP thread count (a new thread starts at one per core, not at what the main thread
    # set), as on the server's torch pool (app/torch_pool.py): without this, two callers ran two threads each on two
    # cores and the single-caller layouts ran at less than half their speed.
    torch.set_num_threads(threads)
    model.predict_proba(texts, batch_size)


def measure(artifact: str, data: str, reviews: int, batch_sizes: list[int], pairs: list[tuple[int, int]]) -> dict:
    from model import data as imdb
    from model import load_model

    texts = [r.text for r in imdb.iter_reviews(data, ("test",))]
    random.Random(0).shuffle(texts)
    texts = texts[:reviews]
    model = load_model(artifact, device="cpu")
    rows = measure_layouts(model, texts, batch_sizes, pairs)
    return {"version": model.version, "artifact": artifact, "rows": rows,
            "best": max(rows, key=lambda r: r["reviews_per_s"])}


def run_measure(artifact: str, tree: Path, a: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", "--artifact", str(Path(artifact).resolve()),
           "--data", str(Path(a.data).resolve()),
           "--reviews", str(a.reviews), "--batch-sizes", *map(str, a.batch_sizes)]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.model_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="aclImdb_v1.tar.gz or its extracted folder (test reviews)")
    p.add_argument("--artifact", default=None, help="artifact to measure (default: the shipped one)")
    p.add_argument("--baseline-tree", default=None, help="source tree whose `model` package loads the baseline")
    p.add_argument("--baseline-artifact", default=None, help="baseline artifact folder")
    p.add_argument("--reviews", type=int, default=2000, help="test reviews per measurement")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128], help="batch sizes tried")
    p.add_argument("--rounds", type=int, default=2, help="measurements per artifact, interleaved")
    p.add_argument("--out", default=None, help="write a markdown report here")
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    cores = os.cpu_count() or 1
    if a.measure:
        print(json.dumps(measure(a.artifact, a.data, a.reviews, a.batch_sizes, layouts(cores))))
        return 0
    from model.artifact import DEFAULT_ARTIFACT

    subjects = [("model", str(a.artifact or DEFAULT_ARTIFACT), ROOT)]
    if a.baseline_tree:
        subjects.insert(0, ("baseline", a.baseline_artifact, Path(a.baseline_tree).resolve()))
    results: dict[str, list[dict]] = {name: [] for name, _, _ in subjects}
    for round_ in range(a.rounds):
        for name, artifact, tree in subjects:
            r = run_measure(artifact, tree, a)
            results[name].append(r)
            print(f"round {round_ + 1} {name} {r['version']}: best {r['best']}", flush=True)
    best = {name: max((r["best"] for r in runs), key=lambda b: b["reviews_per_s"]) for name, runs in results.items()}
    versions = {name: runs[0]["version"] for name, runs in results.items()}
    lines = ["# In-process model throughput", "",
             f"`python -m bench.model_speed` on {cores} cores, {a.reviews} IMDB test reviews per measurement, "
             f"{a.rounds} interleaved rounds; each row is the best round.", "",
             "| model | callers × torch threads | batch | reviews/s |", "|---|---|---:|---:|"]
    for name, runs in results.items():
        by_layout: dict[tuple, float] = {}
        for r in runs:
            for row in r["rows"]:
                key = (row["callers"], row["threads"], row["batch_size"])
                by_layout[key] = max(by_layout.get(key, 0.0), row["reviews_per_s"])
        lines += [f"| {versions[name]} | {c} × {t} | {bs} | {v:.1f} |" for (c, t, bs), v in by_layout.items()]
    if "baseline" in best:
        ratio = best["model"]["reviews_per_s"] / best["baseline"]["reviews_per_s"]
        lines += ["", (f"Best layouts: {versions['model']} {best['model']['reviews_per_s']:.1f} reviews/s, "
                       f"{versions['baseline']} {best['baseline']['reviews_per_s']:.1f}: **{ratio:.0%}**.")]
        print(f"ratio {ratio:.3f}")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
