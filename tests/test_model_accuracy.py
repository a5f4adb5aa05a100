"""The shipped model on real IMDB test reviews (needs ../shared/data; skipped with a reason without it)."""

from pathlib import Path

import pytest

from model.artifact import DEFAULT_ARTIFACT

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "aclImdb_v1.tar.gz"

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(not DATA.is_file(), reason=f"IMDB archive not found at {DATA}"),
    pytest.mark.skipif(not (DEFAULT_ARTIFACT / "config.json").is_file(), reason="no shipped artifact"),
]


def test_shipped_model_scores_at_least_91_percent_on_a_2000_review_test_sample(tmp_path):
    from model.evaluate import evaluate_artifact

    report = evaluate_artifact(DEFAULT_ARTIFACT, DATA, device="cpu", out_dir=tmp_path, sample=2000, seed=0)
    metrics = report["test"]
    assert metrics["size"] == 2000
    assert metrics["accuracy"] >= 0.91, metrics
    assert metrics["ece"] <= 0.05, metrics
    assert sum(map(sum, metrics["confusion_matrix"])) == 2000
    assert (tmp_path / "report.json").is_file()
    assert set(report.get("plots", [])) <= {"reliability.png", "confusion.png"}


def test_cost_estimate_overcounts_the_tokens_of_nearly_every_real_review():
    """The server plans batches on `estimate_cost` before tokenising; the estimate must rarely undercount."""
    import itertools

    from model import data as imdb
    from model import estimate_cost, load_model

    loaded = load_model(DEFAULT_ARTIFACT, "cpu")
    texts = [r.text for r in itertools.islice(imdb.iter_reviews(DATA, ("test",)), 1000)]
    costs = [e.cost for e in loaded.encode(texts)]
    over = sum(estimate_cost(t) >= c for t, c in zip(texts, costs))
    assert over >= 0.95 * len(texts)
    assert sum(map(estimate_cost, texts)) <= 1.4 * sum(costs)  # and not by so much that batches run half-empty
