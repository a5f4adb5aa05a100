"""Occlusion explanations: offsets point at the words, and they are faithful (removing the top words matters)."""

import random

from model import load_model
from model.explain import explain


def test_offsets_point_into_the_original_text(smoke_artifact):
    model = load_model(smoke_artifact, device="cpu")
    text = "The film was GREAT.<br /><br />But the plot? Boring… 🎬"
    result = explain(model, text)
    assert result.total_words == result.explained_words == len(result.words) > 5
    for w in result.words:
        assert text[w.start:w.end] == w.word
    assert abs(result.positive - model.predict_proba([text])[0]) < 1e-5


def test_max_words_bounds_the_work_and_says_so(smoke_artifact):
    model = load_model(smoke_artifact, device="cpu")
    result = explain(model, "good " * 50, max_words=10)
    assert result.explained_words == 10 and result.total_words == 50 and len(result.words) == 10


def test_removing_top_words_moves_the_score_more_than_removing_random_words(smoke_artifact):
    model = load_model(smoke_artifact, device="cpu")
    rng = random.Random(0)
    filler = "the movie film plot actor scene story it was and a of this i with".split()
    sentiment = "great wonderful superb brilliant awful boring terrible worst".split()
    top_moves, random_moves = [], []
    for _ in range(20):
        words = [rng.choice(filler) for _ in range(30)]
        for _ in range(3):
            words.insert(rng.randrange(len(words)), rng.choice(sentiment))
        text = " ".join(words)
        result = explain(model, text)
        sign = 1 if result.positive >= 0.5 else -1  # the predicted direction
        k = 3
        ranked = sorted(range(len(result.words)), key=lambda i: -sign * result.words[i].weight)[:k]
        chosen = rng.sample(range(len(result.words)), k)

        def without(indices):
            kept = " ".join(w.word for i, w in enumerate(result.words) if i not in set(indices))
            return model.predict_proba([kept])[0]

        top_moves.append(sign * (result.positive - without(ranked)))
        random_moves.append(sign * (result.positive - without(chosen)))
    assert sum(top_moves) / len(top_moves) > 2 * max(1e-3, sum(random_moves) / len(random_moves))
    assert sum(m > 0 for m in top_moves) >= 18
