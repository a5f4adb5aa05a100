"""Language-model pre-training of the sequence path on train + unlabelled reviews (Dai & Le, 2015; ULMFiT).

Each direction's first LSTM layer learns to predict the next token of its own reading order: the forward LSTM
the next word, the backward LSTM (which reads every row reversed) the previous one. Neither ever sees the token
it predicts, so the bidirectional network can be pre-trained without leaking the answer. The LSTMs and the
embedding keep what they learned; the heads used only here are thrown away.

The output layer is tied to the input embedding (Press & Wolf, 2017) behind a small projection, and the softmax
over the vocabulary is sampled: each batch scores the true token against `negatives` ids drawn from the unigram
distribution to the 3/4 power, with the log-expected-count correction (Jean et al., 2015). A full softmax over
30k ids would cost ~30x more than the LSTM itself on a CPU.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch import nn
from tqdm import tqdm

from model.network import SentimentLSTM, reverse_padded
from model.training.batches import bucket_batches, make_batch

# Lighter than the classifier's dropout: one pass over ~18M tokens leaves a 128-unit LSTM under-fitted, not over.
LM_DROPOUT = 0.1


class LMHeads(nn.Module):
    """For each direction, hidden state -> embedding space; scored against the (tied) embedding matrix."""

    def __init__(self, network: SentimentLSTM):
        super().__init__()
        c = network.config
        self.directions = nn.ModuleList(nn.Linear(c.hidden_dim, c.embed_dim)
                                        for _ in range(2 if c.bidirectional else 1))
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))


def sampling_distribution(seqs: Sequence[Sequence[int]], vocab_size: int) -> torch.Tensor:
    ids = torch.as_tensor([i for s in seqs for i in s], dtype=torch.long)
    counts = torch.bincount(ids, minlength=vocab_size).double()
    counts[0] = 0  # padding is never a target
    q = counts.pow(0.75)
    return (q / q.sum()).float()


def lm_loss(network: SentimentLSTM, heads: LMHeads, ids: torch.Tensor, lengths: torch.Tensor,
            q: torch.Tensor, negatives: int) -> torch.Tensor:
    """Mean sampled-softmax loss over every predictable position of both directions."""
    x = network.embed_dropout(network.embedding(ids))
    reading = [(network.forward_lstms[0](x)[0], ids)]
    if network.config.bidirectional:
        reversed_ids = reverse_padded(ids, lengths)
        reading.append((network.backward_lstms[0](reverse_padded(x, lengths))[0], reversed_ids))
    sampled = torch.multinomial(q, negatives, replacement=True).to(ids.device)
    log_expected = torch.log(q.to(ids.device) * negatives + 1e-12)
    weight = network.embedding.weight
    # Position t predicts t + 1 of the same reading order; the last real token and padding predict nothing.
    valid = torch.arange(ids.size(1) - 1, device=ids.device).unsqueeze(0) < (lengths.unsqueeze(1) - 1)
    total = torch.zeros((), device=ids.device)
    for (states, order), project in zip(reading, heads.directions):
        hidden = project(nn.functional.dropout(states[:, :-1][valid], LM_DROPOUT, network.training))
        target = order[:, 1:][valid]
        true = (hidden * weight[target]).sum(-1) + heads.bias[target] - log_expected[target]
        noise = hidden @ weight[sampled].T + heads.bias[sampled] - log_expected[sampled]
        noise = noise.masked_fill(sampled.unsqueeze(0) == target.unsqueeze(1), float("-inf"))  # accidental hits
        logits = torch.cat([true.unsqueeze(1), noise], dim=1)
        total = total + nn.functional.cross_entropy(logits, torch.zeros_like(target))
    return total / len(reading)


def pretrain_lm(network: SentimentLSTM, seqs: list[list[int]], *, epochs: int, lr: float, batch_size: int,
                max_tokens: int, negatives: int, clip: float, seed: int, device: torch.device,
                progress: bool = True, log=print) -> list[float]:
    """Train the embedding and the first LSTM layer as language models; returns the mean loss of each epoch."""
    rng = random.Random(f"{seed}-lm")
    q = sampling_distribution(seqs, network.config.vocab_size)
    heads = LMHeads(network).to(device)
    params = [network.embedding.weight, *network.forward_lstms[0].parameters(),
              *(network.backward_lstms[0].parameters() if network.config.bidirectional else []),
              *heads.parameters()]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps = math.ceil(len(seqs) / batch_size) * epochs
    warmup = max(1, steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    losses = []
    network.train()
    usable = [s for s in seqs if len(s) > 1]  # one token predicts nothing
    for epoch in range(1, epochs + 1):
        batches = bucket_batches([min(len(s), max_tokens) for s in usable], batch_size, rng)
        bar = tqdm(batches, desc=f"language model epoch {epoch}/{epochs}", disable=not progress, unit="batch",
                   dynamic_ncols=True)
        running = 0.0
        for step, idx in enumerate(bar, 1):
            ids, lengths = make_batch([usable[i] for i in idx], max_tokens, rng, device)
            optimiser.zero_grad(set_to_none=True)
            loss = lm_loss(network, heads, ids, lengths, q, negatives)
            loss.backward()
            nn.utils.clip_grad_norm_(params, clip)
            optimiser.step()
            scheduler.step()
            running += (loss.item() - running) / min(step, 100)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{running:.3f}")
        losses.append(running)
        log(f"language model epoch {epoch}: sampled-softmax loss {running:.3f}")
    return losses
