"""Short pieces of unlabelled reviews, for the distillation stage.

The LSTM learns from whole reviews (hundreds of words) and reads a one-line text as out of its domain: idioms
such as "it had me laughing out loud" or a bare "so much fun" score either way, while the n-gram model, which
scores each phrase on its own, reads them well. Distilling the teacher's judgement of one or two sentences cut
from each unlabelled review gives the LSTM short inputs with labels, at little cost (they are short).
"""

from __future__ import annotations

import random
import re

_BREAK = re.compile(r"<br\s*/?>|(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _BREAK.split(text) if s and s.strip()]


def review_crops(texts: list[str], count: int, seed: int, min_words: int = 3, max_words: int = 40) -> list[str]:
    """One piece (one sentence, or two in a row) from each of `count` seeded reviews, `min_words`..`max_words`."""
    rng = random.Random(seed)
    picked = rng.sample(range(len(texts)), min(count, len(texts)))
    crops = []
    for i in picked:
        parts = sentences(texts[i])
        if not parts:
            continue
        start = rng.randrange(len(parts))
        piece = " ".join(parts[start:start + rng.choice((1, 1, 2))])
        words = piece.split()
        if len(words) < min_words:
            continue
        crops.append(" ".join(words[:max_words]))
    return crops
