"""Word-level explanations by occlusion: how much each word moves P(positive) when it is removed.

Occlusion rather than integrated gradients because it answers the question users ask ("what if this word were
not there?") exactly, so the explanation is faithful by construction; gradients of an LSTM saturate and can
credit words whose removal changes nothing. The cost is one extra row per word, all run as batched forward
passes, with `max_words` bounding the work for very long reviews (the words beyond it get no weight and the
result says so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from model.predictor import MAX_BATCH_TOKENS, Encoded, SentimentModel, estimate_cost
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


@dataclass(frozen=True)
class Occlusion:
    """An explanation's work, planned: the text with each explained word removed in turn, as forward-pass chunks
    of at most `batch_tokens` padded tokens. A server runs the chunks one by one, so other batches can run between
    them; `cost` (padded tokens over all chunks) is what admission weighs."""

    text: str
    spans: list[tuple[int, int, list[int]]]  # the explained words: character span and token positions
    total_words: int
    chunks: list[list[Encoded]]  # row 0 of chunk 0 is the whole text

    @property
    def cost(self) -> int:
        return sum(map(chunk_cost, self.chunks))

    def result(self, logits: list[torch.Tensor]) -> Explanation:
        """The explanation from each chunk's logits (`model.logits(chunk)`), in chunk order."""
        probs = torch.sigmoid(torch.cat(logits)).tolist()
        base = probs[0]
        words = [WordWeight(self.text[s:e], s, e, base - p) for (s, e, _), p in zip(self.spans, probs[1:])]
        return Explanation(base, words, len(self.spans), self.total_words)


def chunk_cost(chunk: list[Encoded]) -> int:
    """Padded tokens of one forward pass over `chunk`: its longest row times its rows."""
    return len(chunk) * max(e.cost for e in chunk)


_WORDS = re.compile(r"\w+|[^\w\s]+")


def explain_cost(text: str, max_words: int) -> int:
    """About `Occlusion.cost` for `text`, without tokenising it (for admission on the event loop): one row of the
    text's length per explained word, plus the whole text."""
    # Every whitespace-separated chunk holds at least one word, so a text of `max_words` chunks or more is counted
    # at C speed: finding every word with the regex took most of a busy event loop's time on the longest reviews.
    if len(text.split(maxsplit=max_words)) >= max_words:
        words = max_words
    else:
        words = min(len(_WORDS.findall(text)), max_words)
    return (words + 1) * estimate_cost(text)


def plan(model: SentimentModel, text: str, max_words: int = 512, batch_tokens: int = MAX_BATCH_TOKENS) -> Occlusion:
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
    # No row is longer than the whole text, so `step` rows stay within the token budget.
    step = max(1, batch_tokens // max(1, len(ids)))
    return Occlusion(text, explained, len(spans), [rows[i:i + step] for i in range(0, len(rows), step)])


def explain(model: SentimentModel, text: str, max_words: int = 512,
            batch_tokens: int = MAX_BATCH_TOKENS) -> Explanation:
    work = plan(model, text, max_words, batch_tokens)
    return work.result([model.logits(chunk) for chunk in work.chunks])
