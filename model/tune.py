"""Random search over the training hyperparameters, scored on the validation split (never test).

    python -m model.tune --data ../shared/data/aclImdb_v1.tar.gz --trials 8 --epochs 2 --train-limit 8000

Each trial trains with `model.train` (test evaluation off) and the results table, best first, is printed and
written as Markdown and JSON to --out. The dataset, tokenizer and word vectors are computed once and shared.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

from model.network import NetworkConfig
from model.train import TrainConfig, train

SPACE = {
    "hidden_dim": [96, 128, 192],
    "dropout": [0.2, 0.4, 0.5],
    "embed_dropout": [0.1, 0.2, 0.3],
    "weight_decay": [0.0, 1e-2, 5e-2],
    "lr": [1e-3, 2e-3, 4e-3],
    "max_train_tokens": [256, 400, 600],
    "pooling": ["max_mean", "attention", "last"],
    "ngram_buckets": [0, 1 << 20],
}
NETWORK_KEYS = {"hidden_dim", "dropout", "embed_dropout", "pooling", "ngram_buckets"}


def sample_trials(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    seen: set[tuple] = set()
    trials = []
    while len(trials) < n and len(seen) < 10_000:
        trial = {k: rng.choice(v) for k, v in SPACE.items()}
        key = tuple(sorted(trial.items()))
        if key not in seen:
            seen.add(key)
            trials.append(trial)
    return trials


def table(rows: list[dict]) -> str:
    keys = list(SPACE)
    head = "| rank | val accuracy | val NLL | epochs | seconds | " + " | ".join(keys) + " |"
    sep = "|" + "---|" * (5 + len(keys))
    lines = [head, sep]
    for rank, r in enumerate(rows, 1):
        lines.append(f"| {rank} | {r['val_accuracy']:.4f} | {r['val_nll']:.4f} | {r['epochs']} | {r['seconds']:.0f} | "
                     + " | ".join(str(r['params'][k]) for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="aclImdb_v1.tar.gz or its extracted folder")
    p.add_argument("--trials", type=int, default=8, help="number of random configurations")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    p.add_argument("--train-limit", type=int, default=8000, help="training reviews per trial (0: all)")
    p.add_argument("--seed", type=int, default=13, help="seed of the search and of every trial")
    p.add_argument("--self-train", type=int, default=0, help="self-training rounds per trial (default 0: the search "
                                                             "compares the supervised stage)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", default="runs/tune", help="folder for trial artifacts and the results table")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    base = TrainConfig(data=a.data, seed=a.seed, device=a.device, epochs=a.epochs, patience=a.epochs,
                       train_limit=a.train_limit, evaluate_test=False, self_train_rounds=a.self_train)
    cache: dict = {}
    rows = []
    for i, params in enumerate(sample_trials(a.trials, a.seed), 1):
        print(f"trial {i}/{a.trials}: {params}", flush=True)
        net = NetworkConfig(**{k: v for k, v in params.items() if k in NETWORK_KEYS})
        cfg = replace(base, network=net, out=str(out / f"trial-{i}"), checkpoint_dir=str(out / f"trial-{i}-ckpt"),
                      lr=params["lr"], weight_decay=params["weight_decay"],
                      max_train_tokens=params["max_train_tokens"])
        started = time.time()
        metrics = train(cfg, cache)
        best = max(metrics["history"], key=lambda h: h["val_accuracy"])
        rows.append({"trial": i, "params": params, "val_accuracy": best["val_accuracy"], "val_nll": best["val_nll"],
                     "epochs": len(metrics["history"]), "seconds": time.time() - started})
        rows.sort(key=lambda r: -r["val_accuracy"])
        (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
        (out / "results.md").write_text(table(rows) + "\n")
    print(table(rows))
    print(f"written: {out / 'results.md'} {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
