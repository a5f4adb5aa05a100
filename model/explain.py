"""Word-level explanations by occlusion: how much each word moves P(positive) when it is removed.

Occlusion rather than integrated gradients because it answers the question users ask ("what if this word were
not there?") exactly, so the explanation is faithful by construction; gradients of an LSTM saturate and can
credit words whose removal changes nothing. The cost is one extra row per word, all run as batched forward
passes, with `max_words` bounding the work for very long reviews (the words beyond it get no weight and the
result says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.predictor import MAX_BATCH_TOKENS, Encoded, SentimentModel
from model.tokenizer import UNK_ID


@dataclass(frozen=True)
class WordWeight:
    word: str
    start: int  # character offsets into the original text
    end: int
    weight: float  # P(positive) with the word minus without it: > 0 pushed towards positive


@dataclass(frozen=True)
class Explanation:
    positive: float
    words: list[WordWeight]  # every explained word, in text order
    explained_words: int
    total_words: int


def explain(model: SentimentModel, text: str, max_words: int = 512,
            batch_tokens: int = MAX_BATCH_TOKENS) -> Explanation:
    encoding = model.tokenizer.encode(text, add_special_tokens=False)
    ids = list(encoding.ids)
    # Group sub-word tokens into the words the pre-tokenizer saw, keeping each word's character span.
    spans: list[tuple[int, int, list[int]]] = []
    for index, word_id in enumerate(encoding.word_ids):
        start, end = encoding.offsets[index]
        if spans and word_id is not None and encoding.word_ids[spans[-1][2][0]] == word_id:
            spans[-1] = (spans[-1][0], end, spans[-1][2] + [index])
        else:
            spans.append((start, end, [index]))
    full = Encoded(tuple(ids) or (UNK_ID,), len(ids))
    explained = spans[:max_words]
    rows = [full]
    for _, _, positions in explained:
        drop = set(positions)
        kept = tuple(t for i, t in enumerate(ids) if i not in drop)
        rows.append(Encoded(kept or (UNK_ID,), len(kept)))
    logits = []
    step = max(1, batch_tokens // max(1, len(ids)))
    for i in range(0, len(rows), step):
        logits.append(model.logits(rows[i:i + step]))
    probs = torch.sigmoid(torch.cat(logits)).tolist() if logits else []
    base = probs[0]
    words = [WordWeight(text[s:e], s, e, base - p) for (s, e, _), p in zip(explained, probs[1:])]
    return Explanation(base, words, len(explained), len(spans))
