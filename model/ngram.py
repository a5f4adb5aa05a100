"""The NB-weighted n-gram branch (NBSVM-style) that the network blends with the LSTM.

A logistic regression over which unigrams and hashed bigrams and trigrams a review contains (presence, not counts), each
feature scaled by its naive-Bayes log-count ratio on the training split (Wang & Manning 2012). On its own it is
about as good as the LSTM on validation, and it errs on different reviews, so a blend of the two beats either.
It is trained after the LSTM, on the same training split, and folded into one weight per bucket, so inference
is a lookup and a sum.

Every function takes right-padded id batches with real lengths and ignores padding, so, like the LSTM, it gives
a review the same logit alone or in any batch.
"""

from __future__ import annotations

import random

import torch
from torch import nn
from tqdm import tqdm

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

    The weights are a fitted lookup table (`fit_ngram_branch`), kept in half precision: 2M buckets in 4 MB, which
    keeps the artifact within its size budget. Rounding to half precision moves a weight by at most 1 part in 2,048.
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


def log_count_ratio(batches, buckets: int, alpha: float = 1.0) -> torch.Tensor:
    """Naive-Bayes log-count ratio per bucket, log(p/|p|) - log(q/|q|), from (grams, keep, labels) batches."""
    counts = torch.full((2, buckets), alpha, dtype=torch.float64)
    for grams, keep, labels in batches:
        for label in (0, 1):
            rows = keep & (labels == label).unsqueeze(1)
            counts[label] += torch.bincount(grams[rows], minlength=buckets).double()
    p, q = counts[1] / counts[1].sum(), counts[0] / counts[0].sum()
    return (p.log() - q.log()).float()


def fit_ngram_branch(branch: NgramBranch, make_batch, seqs: list[list[int]], labels: torch.Tensor, *,
                     epochs: int = 2, batch_size: int = 256, lr: float = 5e-3, l2: float = 1e-5, seed: int = 13,
                     progress: bool = True) -> None:
    """Fit the branch in place: Adam on the NB-scaled presence features, then fold the ratios into its table.

    `make_batch(list_of_id_lists) -> (ids, lengths)` pads like the rest of training; whole reviews are read.
    L2 acts only on the weights a batch touches (scaled to the whole set), so rare n-grams are not decayed to
    nothing by batches they are absent from.
    """
    rng = random.Random(seed)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    batches = []  # padded and hashed once, reused by the ratio and every epoch
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, lengths = make_batch([seqs[i] for i in idx])
        batches.append((*branch.features(ids, lengths), labels[idx].to(ids.device)))

    device = branch.weight.device
    ratio = log_count_ratio(batches, branch.buckets).to(device)
    weight = nn.Parameter(torch.zeros(branch.buckets, device=device))  # trained in full precision
    bias = nn.Parameter(torch.zeros((), device=device))
    optimiser = torch.optim.Adam([weight, bias], lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(epochs):
        rng.shuffle(batches)
        bar = tqdm(batches, desc=f"n-gram branch epoch {epoch + 1}/{epochs}", disable=not progress,
                   unit="batch", dynamic_ncols=True)
        for grams, keep, y in bar:
            loss = loss_fn(bag_logit(weight, bias, grams, keep, ratio), y.float())
            touched = grams[keep].unique()
            loss = loss + l2 * weight[touched].pow(2).sum() * len(y) / len(seqs)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
    with torch.no_grad():
        branch.weight.copy_(weight * ratio)
        branch.bias.copy_(bias)
