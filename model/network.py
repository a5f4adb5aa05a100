"""The sentiment network: token embedding -> BiLSTM over right-padded batches -> pooling -> logit.

Batch invariance is the design constraint here: a review must get the same score alone or padded inside any
batch. Packed sequences guarantee that but make the CPU backward pass several times slower, so instead:
- batches are right-padded, so a forward LSTM never sees padding before a real token;
- the backward direction runs a second forward LSTM over each row's real tokens reversed in place (padding
  stays at the end), so it too never reads padding before a real token;
- every pooling step masks padded positions out.
Outputs at padded positions are garbage and are never read.

The LSTM's logit is the model. An NB-weighted uni/bi/trigram model (`model.ngram`, `nb_buckets`) may be blended
with it by two weights and a bias fitted on validation; until it is fitted the blend passes the LSTM's logit
through unchanged, so training and model selection see the LSTM alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Sequence

import torch
from torch import nn

from model.ngram import NgramBranch

POOLINGS = ("last", "max_mean", "attention")
COMPONENTS = ("lstm", "ngram")


@dataclass
class NetworkConfig:
    vocab_size: int = 30000
    embed_dim: int = 128
    hidden_dim: int = 160
    num_layers: int = 1
    bidirectional: bool = True
    pooling: str = "max_mean"
    dropout: float = 0.4
    embed_dropout: float = 0.2
    nb_buckets: int = 1 << 23
    nb_order: int = 3

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkConfig":
        known = {f.name for f in fields(cls)}
        if data.get("ngram_buckets"):
            raise ValueError("this artifact has a wide n-gram branch (model 2.x), which this code no longer runs")
        return cls(**{k: v for k, v in data.items() if k in known})


def right_pad(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [B, T] right-padded with 0 to the longest row, and the real lengths [B] (each row non-empty)."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    ids = torch.zeros((len(rows), int(lengths.max())), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return ids, lengths


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first `lengths[b]` steps in place, leaving its padding where it is.

    It is its own inverse, so the same call maps the backward LSTM's outputs back to text order.
    """
    steps = torch.arange(x.size(1), device=x.device).unsqueeze(0)
    last = lengths.unsqueeze(1) - 1
    index = torch.where(steps <= last, last - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class SentimentLSTM(nn.Module):
    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=0)
        self.embed_dropout = nn.Dropout(c.embed_dropout)
        directions = 2 if c.bidirectional else 1
        self.forward_lstms = nn.ModuleList()
        self.backward_lstms = nn.ModuleList()
        size = c.embed_dim
        for _ in range(c.num_layers):
            self.forward_lstms.append(nn.LSTM(size, c.hidden_dim, batch_first=True))
            if c.bidirectional:
                self.backward_lstms.append(nn.LSTM(size, c.hidden_dim, batch_first=True))
            size = c.hidden_dim * directions
        self.dropout = nn.Dropout(c.dropout)
        if c.pooling == "attention":
            self.attention = nn.Sequential(nn.Linear(size, size), nn.Tanh(), nn.Linear(size, 1, bias=False))
        features = size * 2 if c.pooling == "max_mean" else size
        self.head = nn.Sequential(nn.Linear(features, c.hidden_dim), nn.ReLU(), nn.Dropout(c.dropout),
                                  nn.Linear(c.hidden_dim, 1))
        if c.nb_buckets:
            self.ngram = NgramBranch(c.vocab_size, c.nb_buckets, c.nb_order)
            self.blend = nn.Linear(2, 1)
            with torch.no_grad():  # identity on the LSTM's logit until the n-gram model is fitted
                self.blend.weight.copy_(torch.tensor([[1.0, 0.0]]))
                self.blend.bias.zero_()

    def flatten_parameters(self) -> None:
        """Re-pack LSTM weights into one contiguous block (cuDNN warns and slows down otherwise after loading)."""
        for lstm in [*self.forward_lstms, *self.backward_lstms]:
            lstm.flatten_parameters()

    def sequence_features(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-token LSTM outputs [B, T, H*directions] from embeddings [B, T, E]; rows right-padded, lengths >= 1."""
        x = self.embed_dropout(embedded)
        for layer, forward_lstm in enumerate(self.forward_lstms):
            if layer:
                x = self.dropout(x)
            out, _ = forward_lstm(x)
            if self.config.bidirectional:
                back, _ = self.backward_lstms[layer](reverse_padded(x, lengths))
                out = torch.cat([out, reverse_padded(back, lengths)], dim=-1)
            x = out
        return x

    def pool(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = torch.arange(x.size(1), device=x.device).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T]
        pooling = self.config.pooling
        if pooling == "last":
            last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, x.size(-1))
            at_last = x.gather(1, last).squeeze(1)
            if not self.config.bidirectional:
                return at_last
            half = self.config.hidden_dim
            # The backward direction has read the whole row by position 0.
            return torch.cat([at_last[:, :half], x[:, 0, half:]], dim=-1)
        if pooling == "attention":
            scores = self.attention(x).squeeze(-1).masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=1).unsqueeze(-1)
            return (weights * x).sum(1)
        m = mask.unsqueeze(-1)
        maxed = x.masked_fill(~m, float("-inf")).max(dim=1).values
        mean = (x * m).sum(1) / lengths.unsqueeze(1).to(x.dtype)
        return torch.cat([maxed, mean], dim=-1)

    def lstm_logit_of_embedded(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The sequence path's logit [B] from token embeddings: training perturbs them here (adversarial training)."""
        pooled = self.dropout(self.pool(self.sequence_features(embedded, lengths), lengths))
        return self.head(pooled).squeeze(-1)

    def lstm_logit(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The sequence path's logit [B]: embedding, BiLSTM, pooling and head, no n-gram feature of any kind."""
        return self.lstm_logit_of_embedded(self.embedding(ids), lengths)

    def components(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-component logits [B, len(COMPONENTS)] (only the LSTM's [B, 1] without an n-gram model): what the
        blend weighs, and what the ablations score one by one."""
        lstm = self.lstm_logit(ids, lengths)
        if not self.config.nb_buckets:
            return lstm.unsqueeze(-1)
        return torch.stack([lstm, self.ngram(ids, lengths)], dim=-1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits [B] for right-padded token ids [B, T] with real lengths [B] (each >= 1)."""
        if not self.config.nb_buckets:
            return self.lstm_logit(ids, lengths)
        return self.blend(self.components(ids, lengths)).squeeze(-1)
