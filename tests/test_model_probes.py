"""The behavioural probes: the data file, the scorer, the synthetic training sentences kept apart from them, and
the shipped model's pass-rate floors (set from its measured rates, model/artifacts/*/metrics.json)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.probes import load_probes, run_probes
from model.training.augment import graded_reviews, synthetic_reviews

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "aclImdb_v1.tar.gz"
CATEGORIES = {"negated_negative", "negated_positive", "contrast", "idiom", "short", "intensity"}


def test_the_probe_set_is_large_balanced_and_well_formed():
    probes = load_probes()
    assert len(probes) >= 150
    assert {p["category"] for p in probes} == CATEGORIES
    for p in probes:
        if p["category"] == "intensity":
            assert p["direction"] in ("positive", "negative") and p["weaker"] != p["stronger"]
        else:
            assert p["label"] in ("positive", "negative") and p["text"].strip()
    texts = [p["text"] for p in probes if "text" in p]
    assert len(texts) == len(set(texts))
    labels = [p["label"] for p in probes if "text" in p]
    assert abs(labels.count("positive") - labels.count("negative")) <= 10


def test_no_probe_is_a_sentence_that_training_generates():
    """The synthetic sentences teach negation, contrast and intensity; the probes must measure whether that
    generalises."""
    sentences = synthetic_reviews(50_000, seed=0)[0] + graded_reviews(20_000, seed=0)[0]
    generated = {t.lower().rstrip(".!") for t in sentences}
    probes = load_probes()
    texts = [p["text"] for p in probes if "text" in p] + [p[k] for p in probes if "weaker" in p
                                                           for k in ("weaker", "stronger")]
    assert not [t for t in texts if t.lower().rstrip(".!") in generated]


def test_run_probes_scores_every_category_and_lists_failures():
    def always_positive(texts):
        return [0.9] * len(texts)

    report = run_probes(always_positive)
    assert report["pass_rate"]["negated_negative"] == 1.0
    assert report["pass_rate"]["negated_positive"] == 0.0
    assert report["pass_rate"]["intensity"] == 0.0  # no difference between weaker and stronger
    assert set(report["pass_rate"]) == CATEGORIES
    assert len(report["failures"]) == sum(round((1 - r) * report["counts"][c]) for c, r in report["pass_rate"].items())


def test_evaluate_writes_the_report_interface_as_json(smoke_artifact, tmp_path):
    if not DATA.is_file():
        pytest.skip(f"IMDB archive not found at {DATA}")
    out = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "model.evaluate", "--artifact", str(smoke_artifact), "--data", str(DATA),
                    "--sample", "200", "--out", str(tmp_path / "plots"), "--json", str(out)], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    report = json.loads(out.read_text())
    assert report["version"] and report["test"]["size"] == 200
    assert {"accuracy", "ece"} <= set(report["test"])
    assert set(report["ablation"]) == {"full", "lstm_only", "ngram_only"}
    assert all(0 <= row["accuracy"] <= 1 for row in report["ablation"].values())
    assert set(report["probes"]) == CATEGORIES


# Floors for the shipped model, about two probes below what 3.4.0 measured (python -m model.evaluate; its rates:
# full model contrast 0.933, idiom 0.64, intensity 0.75, negated_negative 0.938, negated_positive 0.969, short 0.885;
# the LSTM alone negated_negative 0.938, negated_positive 0.969, contrast 0.933). A retrain that reads negation or
# contrast as a bag of words fails here.
FLOORS = {"negated_negative": 0.87, "negated_positive": 0.9, "contrast": 0.86, "idiom": 0.56, "short": 0.8,
          "intensity": 0.65}
LSTM_FLOORS = {"negated_negative": 0.87, "negated_positive": 0.9, "contrast": 0.86}


def test_the_shipped_model_reads_negation_contrast_and_intensity(shipped_artifact):
    from model.predictor import load_model

    loaded = load_model(shipped_artifact, "cpu")
    full = run_probes(loaded.predict_proba)["pass_rate"]
    lstm = run_probes(lambda texts: loaded.predict_components(texts)["lstm"])["pass_rate"]
    assert {c: r for c, r in full.items() if r < FLOORS[c]} == {}, full
    assert {c: r for c, r in lstm.items() if r < LSTM_FLOORS.get(c, 0.0)} == {}, lstm
