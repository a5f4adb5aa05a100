"""Score an artifact on the IMDB test split through `load_model().predict_proba` (the path the service uses).

    python -m model.evaluate --data ../shared/data/aclImdb_v1.tar.gz [--artifact DIR] [--json FILE]
        [--lstm-dtype float32|bfloat16|auto] [--record]

Prints and writes (to --out, default ARTIFACT/report) accuracy, precision/recall/F1, ROC-AUC, ECE, Brier, the
confusion matrix, accuracy by review length, the ablation (each component of the model scored alone), the
behavioural probes' pass rate per category (`model/probes.json`), and a reliability diagram and confusion-matrix
PNG. --json writes the same report as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from model import data as imdb
from model.calibration import brier_score, expected_calibration_error, reliability_bins
from model.predictor import load_model
from model.probes import run_probes

LENGTH_BUCKETS = ((0, 100), (100, 200), (200, 400), (400, 800), (800, None))


def roc_auc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic (ties get average ranks)."""
    probs = probs.double()
    order = torch.argsort(probs)
    ranks = torch.empty_like(probs)
    ranks[order] = torch.arange(1, len(probs) + 1, dtype=torch.float64)
    unique, inverse = torch.unique(probs, return_inverse=True)
    sums = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (sums / counts)[inverse]
    pos = labels.bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    pred = (probs >= 0.5).long()
    labels = labels.long()
    tp = int(((pred == 1) & (labels == 1)).sum())
    tn = int(((pred == 0) & (labels == 0)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "size": len(labels),
        "accuracy": (tp + tn) / len(labels),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "roc_auc": roc_auc(probs, labels),
        "ece": expected_calibration_error(probs, labels),
        "brier": brier_score(probs, labels),
        # rows: true label, columns: predicted label, in label order [negative, positive]
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def by_length(probs: torch.Tensor, labels: torch.Tensor, tokens: list[int]) -> list[dict]:
    rows = []
    t = torch.tensor(tokens)
    for low, high in LENGTH_BUCKETS:
        sel = (t >= low) & (t < high) if high is not None else t >= low
        n = int(sel.sum())
        acc = float(((probs[sel] >= 0.5).long() == labels[sel]).double().mean()) if n else None
        rows.append({"tokens": f"{low}-{high - 1}" if high else f"{low}+", "count": n, "accuracy": acc})
    return rows


def save_plots(report: dict, out_dir: Path) -> list[str]:
    """Reliability diagram and confusion matrix as PNGs (needs the `train` extra's matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: skipping PNG plots (pip install '.[train]')", file=sys.stderr)
        return []
    m = report["test"]
    bins = [b for b in report["reliability"] if b["count"]]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot([b["mean_predicted"] for b in bins], [b["fraction_positive"] for b in bins], "o-", label="model")
    ax.set(xlabel="predicted P(positive)", ylabel="observed fraction positive",
           title=f"Reliability (test, ECE {m['ece']:.3f})", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out_dir / "reliability.png")
    plt.close(fig)
    cm = m["confusion_matrix"]
    fig, ax = plt.subplots(figsize=(4, 3.6), dpi=120)
    ax.imshow(cm, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{cm[i][j]}", ha="center", va="center", fontsize=13,
                    color="white" if cm[i][j] > max(map(max, cm)) / 2 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["negative", "positive"], yticklabels=["negative", "positive"],
           xlabel="predicted", ylabel="true", title=f"Confusion matrix (accuracy {m['accuracy']:.4f})")
    fig.tight_layout()
    fig.savefig(out_dir / "confusion.png")
    plt.close(fig)
    return ["reliability.png", "confusion.png"]


def evaluate_artifact(artifact: str | Path, data: str | Path, device: str = "auto", out_dir: str | Path | None = None,
                      sample: int = 0, seed: int = 0, batch_size: int = 64, lstm_dtype: str = "float32") -> dict:
    model = load_model(artifact, device=device, lstm_dtype=lstm_dtype)
    reviews = imdb.load_splits(data, ("test",))["test"]
    if sample and sample < len(reviews):
        _, reviews = imdb.stratified_split(reviews, sample / len(reviews), seed)
    texts = [r.text for r in reviews]
    labels = torch.tensor([r.label for r in reviews])
    started = time.perf_counter()
    predictions = model.predict(texts, batch_size=batch_size)
    seconds = time.perf_counter() - started
    probs = torch.tensor([p.positive for p in predictions], dtype=torch.float64)
    components = {name: torch.tensor(p, dtype=torch.float64)
                  for name, p in model.predict_components(texts, batch_size=batch_size).items()}
    ablation = {"full": probs, **{f"{name}_only": p for name, p in components.items()}}
    probes = run_probes(model.predict_proba)
    probes_by_component = {f"{name}_only": run_probes(lambda t, n=name: model.predict_components(t)[n])
                           for name in components}
    report = {
        "version": model.version,
        "artifact": {"name": model.name, "version": model.version},
        "split": "test" if not sample else f"test (stratified sample of {len(reviews)}, seed {seed})",
        "test": classification_metrics(probs, labels),
        "ablation": {name: {"accuracy": classification_metrics(p, labels)["accuracy"],
                            "ece": expected_calibration_error(p, labels),
                            "probes": (probes if name == "full" else probes_by_component[name])["overall"]}
                     for name, p in ablation.items()},
        "probes": probes["pass_rate"],
        "probe_report": {"full": probes, **probes_by_component},
        "by_length": by_length(probs, labels, [p.tokens for p in predictions]),
        "reliability": reliability_bins(probs, labels),
        "throughput": {"reviews": len(texts), "seconds": round(seconds, 2),
                       "reviews_per_second": round(len(texts) / seconds, 1), "device": str(model.device),
                       "lstm_dtype": model.lstm_dtype, "threads": torch.get_num_threads(),
                       "batch_size": batch_size},
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        report["plots"] = save_plots(report, out_dir)
        (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def record(artifact: str | Path, report: dict) -> str:
    """Store a full test-split report in the artifact's metrics.json; returns the LSTM dtype it was scored in."""
    from model.artifact import update_metrics

    dtype = report["throughput"]["lstm_dtype"]
    if dtype == "float32":  # the model as trained: the card's main figures
        update_metrics(artifact, {"test": report["test"], "ablation": report["ablation"], "probes": report["probes"],
                                  "test_by_length": report["by_length"], "test_throughput": report["throughput"]})
    else:  # beside them: what the same weights score with the LSTM in another format (accuracy, not speed)
        summary = {k: report["test"][k] for k in ("size", "accuracy", "f1", "roc_auc", "ece", "brier")}
        update_metrics(artifact, {f"test_lstm_{dtype}": {**summary, "ablation": report["ablation"],
                                                         "device": report["throughput"]["device"]}})
    return dtype


def format_report(report: dict) -> str:
    m = report["test"]
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    t = report["throughput"]
    lines = [f"{report['artifact']['name']} {report['artifact']['version']} on {report['split']} "
             f"({m['size']} reviews), {t['device']}, LSTM in {t['lstm_dtype']}",
             f"  accuracy  {m['accuracy']:.4f}    F1 {m['f1']:.4f}    precision {m['precision']:.4f}    "
             f"recall {m['recall']:.4f}",
             f"  ROC-AUC   {m['roc_auc']:.4f}    ECE {m['ece']:.4f}    Brier {m['brier']:.4f}",
             "  confusion (rows true, cols predicted; neg, pos):",
             f"    neg {tn:6d} {fp:6d}", f"    pos {fn:6d} {tp:6d}", "  accuracy by review length (tokens):"]
    for row in report["by_length"]:
        acc = f"{row['accuracy']:.4f}" if row["accuracy"] is not None else "  -   "
        lines.append(f"    {row['tokens']:>9}  n={row['count']:6d}  {acc}")
    lines.append("  ablation (each component alone, its own calibration):")
    for name, row in report["ablation"].items():
        lines.append(f"    {name:>11}  accuracy {row['accuracy']:.4f}  ECE {row['ece']:.4f}  probes {row['probes']:.3f}")
    lines.append("  behavioural probes, pass rate by category (full | " +
                 " | ".join(k for k in report["probe_report"] if k != "full") + "):")
    for category, rate in report["probes"].items():
        others = " | ".join(f"{r['pass_rate'][category]:.3f}" for k, r in report["probe_report"].items()
                            if k != "full")
        n = report["probe_report"]["full"]["counts"][category]
        lines.append(f"    {category:>17}  n={n:3d}  {rate:.3f} | {others}")
    t = report["throughput"]
    lines.append(f"  {t['reviews_per_second']} reviews/s on {t['device']} ({t['threads']} threads, batch {t['batch_size']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", default=None, help="artifact folder (default: the shipped model)")
    p.add_argument("--data", required=True, help="aclImdb_v1.tar.gz or its extracted folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--lstm-dtype", default="float32", help="float32 (the model as trained: the card's main "
                   "figures), bfloat16, or auto (what the server picks on this machine)")
    p.add_argument("--out", default=None, help="report folder (default: ARTIFACT/report)")
    p.add_argument("--sample", type=int, default=0, help="score a stratified sample of N test reviews")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the whole report to FILE as JSON")
    p.add_argument("--record", action="store_true", help="store the test metrics in the artifact's metrics.json "
                   "(full test split only; its checksum is updated): the main figures with --lstm-dtype float32, "
                   "a summary beside them with another dtype")
    a = p.parse_args(argv)
    from model.artifact import DEFAULT_ARTIFACT

    artifact = Path(a.artifact) if a.artifact else DEFAULT_ARTIFACT
    out = Path(a.out) if a.out else artifact / "report"
    report = evaluate_artifact(artifact, a.data, a.device, out, a.sample, a.seed, lstm_dtype=a.lstm_dtype)
    print(format_report(report))
    if a.record:
        if a.sample:
            p.error("--record stores full test-split metrics only: drop --sample")
        dtype = record(artifact, report)
        print(f"recorded test metrics (LSTM in {dtype}) in {artifact / 'metrics.json'}")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"written: {a.json}")
    print(f"written: {out / 'report.json'} {' '.join(str(out / f) for f in report.get('plots', []))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
