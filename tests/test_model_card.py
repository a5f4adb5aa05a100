"""The README's model summary and the model card come from the shipped artifact's own files."""

from pathlib import Path

from model.card import readme_with_summary, render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_model_summary_is_generated_from_the_shipped_artifact(shipped_artifact):
    readme = (ROOT / "README.md").read_text()
    assert readme_with_summary(readme, shipped_artifact) == readme, "run: python -m model.card --readme README.md"


def test_the_card_renders_for_any_artifact(smoke_artifact):
    card = render(smoke_artifact, ROOT)
    assert card.startswith("# Model card: imdb-lstm ")
    assert "## Known failure modes" in card and "sequence path reads no n-gram" in card
