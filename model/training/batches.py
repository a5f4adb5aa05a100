"""Training batches: similar-length reviews together, long reviews cropped to a random window."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from model.network import SentimentLSTM, right_pad
from model.predictor import plan_batches
from model.tokenizer import UNK_ID


def bucket_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length rows: sort within large random pools, so padding stays small."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def make_batch(seqs: Sequence[Sequence[int]], max_tokens: int, rng: random.Random | None,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and lengths; with `rng`, a review longer than `max_tokens` contributes a random window."""
    rows = []
    for ids in seqs:
        ids = ids or [UNK_ID]
        if max_tokens and len(ids) > max_tokens and rng is not None:
            start = rng.randrange(len(ids) - max_tokens + 1)
            ids = ids[start:start + max_tokens]
        rows.append(ids)
    ids, lengths = right_pad(rows)
    return ids.to(device), lengths.to(device)


@torch.inference_mode()
def _predict(forward, network: SentimentLSTM, seqs: Sequence[Sequence[int]], device: torch.device,
             batch_tokens: int) -> torch.Tensor:
    """`forward(ids, lengths)` over whole reviews (no cropping), batched by length, rows back in input order."""
    network.eval()
    parts, order = [], []
    for idx in plan_batches([max(1, len(s)) for s in seqs], 256, batch_tokens):
        parts.append(forward(*make_batch([seqs[i] for i in idx], 0, None, device)).float().cpu())
        order += idx
    if not parts:
        return torch.empty(0)
    out = torch.empty_like(torch.cat(parts))
    out[order] = torch.cat(parts)
    return out


def predict_components(network: SentimentLSTM, seqs: Sequence[Sequence[int]], device: torch.device,
                       batch_tokens: int = 65536) -> torch.Tensor:
    """Uncalibrated per-component logits [N, K] of whole reviews, in input order."""
    return _predict(network.components, network, seqs, device, batch_tokens)


def predict_logits(network: SentimentLSTM, seqs: Sequence[Sequence[int]], device: torch.device,
                   batch_tokens: int = 65536) -> torch.Tensor:
    """Uncalibrated logits [N] of the whole network (blend included), in input order."""
    return _predict(network, network, seqs, device, batch_tokens)
