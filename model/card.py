"""Write MODEL_CARD.md from an artifact's config.json, metrics.json and evaluation report.

    python -m model.card [--artifact DIR] [--out MODEL_CARD.md]

The card's numbers all come from files written by training and `model.evaluate`, so it cannot drift from them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from model.artifact import DEFAULT_ARTIFACT

# Probes of known weak spots, scored by the artifact itself each time the card is written.
PROBES = [
    ("negation", "Not bad at all.", "positive"),
    ("negation", "This is not what I would call a good film.", "negative"),
    ("idiom", "Two hours I will never get back.", "negative"),
    ("sarcasm", "What a masterpiece, I only fell asleep twice.", "negative"),
    ("very short", "ok", "neither"),
    ("mixed", "The actors were brilliant but the plot was a complete mess and I hated the ending.", "negative"),
    ("other domain", "Great product, fast shipping, works as described.", "positive"),
    ("other domain", "Terrible battery life, returned it.", "negative"),
]

FAILURE_NOTES = """\
- **Very short texts** are outside the training data (IMDB reviews run to hundreds of words) and can get
  confident, arbitrary probabilities (see "ok" above): do not trust scores of a few words.
- **Negation** is partly learned: "not bad" style phrases can still read as negative.
- **Idioms** without sentiment words ("never get back") are read literally; sarcasm is a known risk for the same
  reason, though the probe above came out right.
- **Other domains and languages**: trained only on English movie reviews; accuracy and calibration elsewhere are
  unmeasured.
- **Mixed reviews** get one score for the whole text; `explain: true` shows which words pulled each way."""


def render(artifact: Path, root: Path) -> str:
    config = json.loads((artifact / "config.json").read_text())
    metrics = json.loads((artifact / "metrics.json").read_text())
    report_path = artifact / "report" / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    net = config["network"]
    val = metrics["validation"]
    training = metrics["training"]
    test = metrics.get("test")
    rel = lambda p: os.path.relpath(p, root)  # noqa: E731
    blend = metrics.get("blend")
    lines = [f"# Model card: {config['name']} {config['version']}", "",
             "Binary sentiment (positive / negative) of English movie reviews, returned as a calibrated "
             "probability. Served by this repository's HTTP service; `GET /model` returns the same facts.", "",
             "## Intended use", "",
             "Scoring the sentiment of English movie reviews and similar opinionated English text, where a "
             "probability with known calibration is more useful than a label. Not for decisions about people, "
             "not for other languages, and not a content-moderation tool.", "",
             "## Model", "",
             f"- Tokenizer: BPE, {net['vocab_size']} tokens, trained on the IMDB train + unlabelled text; `<br />` "
             "removed, NFKC, lower-cased.",
             f"- Network: embedding {net['embed_dim']}-d (initialised with PPMI-SVD word vectors learned on the "
             f"train + unlabelled reviews) → {net['num_layers']}-layer "
             f"{'bidirectional ' if net['bidirectional'] else ''}LSTM, {net['hidden_dim']} units per direction → "
             f"{net['pooling'].replace('_', '+')} pooling → MLP → logit"
             + (f"; plus a linear branch over {net['ngram_buckets']} hashed unigram+bigram buckets" if net.get(
                 "ngram_buckets") else "") + ".",
             *([f"- Blended with an NB-weighted logistic regression over which unigrams and hashed "
                f"{'bi- and trigrams' if net.get('nb_order', 2) >= 3 else 'bigrams'} ({net['nb_buckets']} "
                "half-precision buckets) a review contains (NBSVM-style, fitted on the training split after the "
                f"LSTM): logit = {blend['weights'][0]:.3f} × LSTM + {blend['weights'][1]:.3f} × n-gram "
                f"{blend['bias']:+.3f}, fitted on validation, where the LSTM alone scored "
                f"{blend['val_accuracy_lstm']:.4f} and the n-gram model alone {blend['val_accuracy_ngram']:.4f}."]
               if net.get("nb_buckets") and blend else []),
             "- Reads the whole review (no truncation); padding provably does not change a result.",
             f"- Calibration: temperature {config['temperature']:.3f} fitted on the validation split.", "",
             "## Training data and procedure", "",
             f"- IMDB Large Movie Review Dataset (Maas et al., 2011): {training['train_reviews']} training reviews, "
             f"{val['size']} held out for validation (stratified, seed {training['seed']}), "
             f"{training['unlabelled_reviews']} unlabelled reviews for the word vectors, tokenizer and "
             "self-training. Nothing was fitted or selected on the test split; it gives the numbers below.",
             f"- {len(metrics['history'])} epochs of AdamW with early stopping on validation accuracy (best epoch "
             f"{metrics['best_epoch']}); {training['seconds'] / 60:.0f} min on {training['device']} "
             f"({training['hardware']}), torch {training['torch']}"
             + (f". {training['note'].rstrip('.')}." if training.get("note") else ".")
             + " The history, per epoch, is in `metrics.json`.",
             f"- Reproduce: `make train` (seeded); code at commit `{training.get('git_commit') or 'unknown'}`.", "",
             "## Results", "",
             f"Validation ({val['size']} reviews): accuracy {val['accuracy']:.4f}, ECE {val['ece']:.4f} "
             f"(before calibration {val['ece_before_calibration']:.4f}), Brier {val['brier']:.4f}.", ""]
    if test:
        (tn, fp), (fn, tp) = test["confusion_matrix"]
        lines += [f"Test split ({test['size']} reviews, through `load_model().predict_proba`):", "",
                  "| accuracy | F1 | precision | recall | ROC-AUC | ECE | Brier |", "|---|---|---|---|---|---|---|",
                  f"| {test['accuracy']:.4f} | {test['f1']:.4f} | {test['precision']:.4f} | {test['recall']:.4f} | "
                  f"{test['roc_auc']:.4f} | {test['ece']:.4f} | {test['brier']:.4f} |", "",
                  "Confusion matrix (rows: true label; columns: predicted):", "",
                  "| | predicted negative | predicted positive |", "|---|---|---|",
                  f"| negative | {tn} | {fp} |", f"| positive | {fn} | {tp} |", ""]
    if report:
        lines += ["Accuracy by review length (tokens):", "", "| tokens | reviews | accuracy |", "|---|---|---|"]
        lines += [f"| {r['tokens']} | {r['count']} | {r['accuracy']:.4f} |" for r in report["by_length"] if r["count"]]
        lines.append("")
        for png, title in (("reliability.png", "Reliability diagram"), ("confusion.png", "Confusion matrix")):
            if (artifact / "report" / png).is_file():
                lines += [f"![{title}]({rel(artifact / 'report' / png)})", ""]
    lines += ["## Known failure modes", "", "Probes scored by this artifact when the card was written:", "",
              "| kind | text | expected | P(positive) |", "|---|---|---|---|"]
    from model.predictor import load_model

    model = load_model(artifact, device="cpu")
    probs = model.predict_proba([text for _, text, _ in PROBES])
    lines += [f"| {kind} | {text} | {expected} | {p:.3f} |" for (kind, text, expected), p in zip(PROBES, probs)]
    lines += ["", FAILURE_NOTES, "",
              "Baselines measured on the same test split: a Keras Embedding(10000,128) → LSTM(128) model ≈ 86%, "
              "TF-IDF + logistic regression ≈ 91%.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.card", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", default=str(DEFAULT_ARTIFACT), help="artifact folder")
    p.add_argument("--out", default=None, help="output file (default: MODEL_CARD.md at the repo root)")
    a = p.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    out = Path(a.out) if a.out else root / "MODEL_CARD.md"
    out.write_text(render(Path(a.artifact).resolve(), out.resolve().parent))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
