"""Fitting the NB-weighted n-gram model (`model.ngram.NgramBranch`) on the training split."""

from __future__ import annotations

import random

import torch
from torch import nn
from tqdm import tqdm

from model.ngram import NgramBranch, bag_logit


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
