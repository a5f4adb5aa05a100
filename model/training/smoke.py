"""A synthetic corpus for smoke runs (tests, CI): sentiment words in neutral filler, no dataset needed."""

from __future__ import annotations

import random

from model import data as imdb


def smoke_corpus(n: int, seed: int) -> tuple[list[imdb.Review], list[imdb.Review], list[imdb.Review]]:
    """Synthetic (train, validation, unlabelled) reviews, no dataset needed: sentiment words in neutral filler."""
    rng = random.Random(seed)
    good = "great wonderful superb brilliant loved moving excellent fun".split()
    bad = "awful boring terrible worst waste dull stupid bad".split()
    filler = "the movie film plot actor scene story it was and a of this i with".split()
    reviews = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(filler) for _ in range(rng.randint(5, 40))]
        for _ in range(rng.randint(1, 4)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(good if label else bad))
        reviews.append(imdb.Review(" ".join(words).capitalize() + ".<br /><br />", label, 8 if label else 2, "train"))
    train_set, val_set = imdb.stratified_split(reviews[: n * 4 // 5], 0.25, seed)
    unlabelled = [imdb.Review(r.text, -1, 0, "unsup") for r in reviews[n * 4 // 5:]]
    return train_set, val_set, unlabelled
