"""Word vectors learned from the unlabelled text (train + unsup), to initialise the network's embedding.

PPMI + truncated SVD of a windowed co-occurrence matrix (Levy & Goldberg, 2014): comparable to word2vec for
initialisation and deterministic, with no extra dependency and a minute of CPU for IMDB's 75k reviews.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch


def cooccurrence(sequences: Iterable[Sequence[int]], vocab_size: int, contexts: int, window: int = 5) -> np.ndarray:
    """Counts [vocab_size, contexts] of (word, context word) pairs within `window`, weighted 1/distance.

    Context words are restricted to the `contexts` most frequent ids; with a BPE vocabulary ids are ordered
    roughly by merge order, which tracks frequency closely enough for a context vocabulary.
    """
    # One flat array with `window` separators (-1) between reviews, so no pair spans two reviews; then one
    # bincount per distance instead of a Python loop over pairs.
    gap = np.full(window, -1, dtype=np.int64)
    parts = []
    for seq in sequences:
        parts += [np.asarray(seq, dtype=np.int64), gap]
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    counts = np.zeros(vocab_size * contexts, dtype=np.float64)
    for d in range(1, window + 1):
        for word, ctx in ((ids[:-d], ids[d:]), (ids[d:], ids[:-d])):
            keep = (word >= 0) & (ctx >= 0) & (ctx < contexts)
            counts += np.bincount(word[keep] * contexts + ctx[keep], minlength=vocab_size * contexts) / d
    return counts.reshape(vocab_size, contexts)


def ppmi_svd(counts: np.ndarray, dim: int, seed: int = 0) -> torch.Tensor:
    """Embeddings [vocab, dim] from PPMI (context distribution smoothed by ^0.75) and a randomized SVD."""
    c = torch.from_numpy(counts).float()
    total = c.sum()
    word = c.sum(1, keepdim=True)
    ctx = c.sum(0, keepdim=True).pow(0.75)
    ctx = ctx / ctx.sum()
    with np.errstate(divide="ignore"):
        pmi = torch.log((c / total) / ((word / total).clamp_min(1e-12) * ctx.clamp_min(1e-12)))
    ppmi = torch.nan_to_num(pmi, nan=0.0, neginf=0.0).clamp_min(0.0)
    torch.manual_seed(seed)
    u, s, _ = torch.svd_lowrank(ppmi, q=dim + 16, niter=4)
    vectors = u[:, :dim] * s[:dim].sqrt()
    # Match the scale of nn.Embedding's N(0, 1) init per coordinate so optimiser settings carry over.
    return vectors / vectors.std().clamp_min(1e-8) * 0.5


def lm_pretrain(network, seqs: list[list[int]], *, epochs: int, batch_size: int, max_tokens: int, lr: float,
                negatives: int, seed: int, device: torch.device, progress: bool = True, log=print) -> list[float]:
    """Language-model pre-training of the network's own embedding and LSTM on unlabelled text.

    The forward LSTM predicts the next token and the backward LSTM the previous one, each scored against the
    (tied) input embedding with a sampled softmax over `negatives` tokens drawn from the unigram^0.75 table and
    shared by the batch: a full 30k-way softmax would cost far more than the LSTM itself on a CPU. Only
    one-layer networks are supported: above the first layer each direction has seen the other's context,
    which would leak the token to predict.
    """
    import random

    from torch import nn
    from tqdm import tqdm

    from model.network import reverse_padded

    if network.config.num_layers != 1:
        raise ValueError("language-model pre-training supports num_layers=1 only")
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    vocab = network.config.vocab_size
    counts = torch.zeros(vocab)
    for s in seqs:
        counts += torch.bincount(torch.tensor(s, dtype=torch.long), minlength=vocab).float() if s else 0
    table = counts.pow(0.75)
    table[:2] = 0  # never sample padding or [UNK] as a negative
    directions = 2 if network.config.bidirectional else 1
    heads = nn.ModuleList(nn.Linear(network.config.hidden_dim, network.config.embed_dim)
                          for _ in range(directions)).to(device)
    params = list(network.embedding.parameters()) + list(network.forward_lstms.parameters()) + \
        list(network.backward_lstms.parameters()) + list(heads.parameters())
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    usable = [s for s in seqs if len(s) >= 3]
    losses = []
    network.train()
    for epoch in range(epochs):
        order = list(range(len(usable)))
        rng.shuffle(order)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        bar = tqdm(batches, desc=f"LM pre-training {epoch + 1}/{epochs}", disable=not progress, unit="batch",
                   dynamic_ncols=True)
        running = 0.0
        for step, idx in enumerate(bar, 1):
            rows = []
            for i in idx:
                s = usable[i]
                if len(s) > max_tokens:
                    start = rng.randrange(len(s) - max_tokens + 1)
                    s = s[start:start + max_tokens]
                rows.append(s)
            lengths = torch.tensor([len(r) for r in rows])
            ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
            for r, s in enumerate(rows):
                ids[r, :len(s)] = torch.tensor(s)
            ids, lengths = ids.to(device), lengths.to(device)
            x = network.embed_dropout(network.embedding(ids))
            outputs = [network.forward_lstms[0](x)[0]]
            targets = [ids[:, 1:]]
            if directions == 2:
                back = network.backward_lstms[0](reverse_padded(x, lengths))[0]
                outputs.append(back)
                targets.append(reverse_padded(ids.unsqueeze(-1), lengths).squeeze(-1)[:, 1:])
            negs = torch.multinomial(table, negatives, replacement=True, generator=gen).to(device)
            neg_vectors = network.embedding(negs)  # [K, E]
            mask = torch.arange(ids.size(1) - 1, device=device).unsqueeze(0) < (lengths - 1).unsqueeze(1)
            loss = 0.0
            for out, target, head in zip(outputs, targets, heads):
                h = head(network.dropout(out[:, :-1][mask]))  # positions that have a next token
                t = target[mask]
                pos = (h * network.embedding(t)).sum(-1, keepdim=True)
                neg = h @ neg_vectors.T
                neg = neg.masked_fill(negs.unsqueeze(0) == t.unsqueeze(1), float("-inf"))  # a hit is no negative
                logits = torch.cat([pos, neg], dim=1)
                loss = loss + nn.functional.cross_entropy(logits, torch.zeros(len(t), dtype=torch.long,
                                                                              device=device))
            loss = loss / len(outputs)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            running += (loss.item() - running) / min(step, 50)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{running:.3f}")
        losses.append(running)
        log(f"LM pre-training epoch {epoch + 1}: sampled-softmax loss {running:.3f}")
    return losses
