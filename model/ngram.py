"""The NB-weighted n-gram branch (NBSVM-style) that the network blends with the LSTM.

A logistic regression over which unigrams and hashed bigrams and trigrams a review contains (presence, not counts), each
feature scaled by its naive-Bayes log-count ratio on the training split (Wang & Manning 2012). On its own it is
about as good as the LSTM on validation, and it errs on different reviews, so a blend of the two beats either.
It is fitted on the training split (`model.training.ngram_fit`) and folded into one weight per bucket, so
inference is a lookup and a sum.

Every function takes right-padded id batches with real lengths and ignores padding, so, like the LSTM, it gives
a review the same logit alone or in any batch.
"""

from __future__ import annotations

import torch
from torch import nn

_PRIME = 1_000_003
_MODULUS = (1 << 31) - 1  # keeps the rolling hash (x _PRIME) far inside int64


def present_ngrams(ids: torch.Tensor, lengths: torch.Tensor, vocab_size: int, buckets: int, order: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket ids [B, L] of the 1..`order`-grams each row contains, and a mask keeping each one once.

    Unigrams keep their token id (ids < vocab_size never collide with each other); longer n-grams hash into the
    buckets above the vocabulary. Padding and repeats are masked out, so a row's features depend on its real
    tokens only.
    """
    steps = torch.arange(ids.size(1), device=ids.device).unsqueeze(0)
    real = steps < lengths.unsqueeze(1)
    parts, masks = [ids], [real]
    hashed = ids
    for n in range(2, order + 1):
        # Rolling hash of the n tokens ending at each position; `n` is mixed in so orders do not share a code.
        hashed = (hashed[:, :-1] * _PRIME + ids[:, n - 1:] + n) % _MODULUS
        parts.append(vocab_size + hashed % (buckets - vocab_size))
        masks.append(real[:, n - 1:])
    grams = torch.cat(parts, dim=1)
    valid = torch.cat(masks, dim=1)
    grams = torch.where(valid, grams, torch.full_like(grams, buckets))  # padding sorts last, as one sentinel
    grams = grams.sort(dim=1).values
    first = torch.ones_like(grams, dtype=torch.bool)
    first[:, 1:] = grams[:, 1:] != grams[:, :-1]
    keep = first & (grams < buckets)
    return grams.clamp(max=buckets - 1), keep


class NgramBranch(nn.Module):
    """logit = bias + sum of the weights of the n-gram buckets a review contains.

    The weights are a fitted lookup table (`model.training.ngram_fit`), kept in half precision (8M buckets in 16 MB)
    to keep the artifact small; rounding moves a weight by at most 1 part in 2,048. Fewer buckets collide more:
    2M scored below 8M on validation.
    """

    def __init__(self, vocab_size: int, buckets: int, order: int = 3):
        super().__init__()
        if buckets <= vocab_size:
            raise ValueError(f"n-gram buckets ({buckets}) must exceed the vocabulary ({vocab_size})")
        self.vocab_size, self.buckets, self.order = vocab_size, buckets, order
        self.register_buffer("weight", torch.zeros(buckets, dtype=torch.float16))
        self.register_buffer("bias", torch.zeros(()))

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return present_ngrams(ids, lengths, self.vocab_size, self.buckets, self.order)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return bag_logit(self.weight, self.bias, *self.features(ids, lengths))


def bag_logit(weight: torch.Tensor, bias: torch.Tensor, grams: torch.Tensor, keep: torch.Tensor,
              scale: torch.Tensor | None = None) -> torch.Tensor:
    """bias + the sum of (scaled) weights of the kept buckets of each row (`present_ngrams`' output)."""
    w = weight[grams].float()
    if scale is not None:
        w = w * scale[grams]
    return (w * keep.float()).sum(1) + bias
