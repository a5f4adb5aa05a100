"""The sentiment network: token embedding -> BiLSTM over right-padded batches -> pooling -> logit.

Batch invariance is the design constraint here: a review must get the same score alone or padded inside any
batch. Packed sequences guarantee that but make the CPU backward pass several times slower, so instead:
- batches are right-padded, so a forward LSTM never sees padding before a real token;
- the backward direction runs a second forward LSTM over each row's real tokens reversed in place (padding
  stays at the end), so it too never reads padding before a real token;
- every pooling step masks padded positions out.
Outputs at padded positions are garbage and are never read.

Inference on the CPU skips the padding's work as well (`forward_segments`): rows sorted longest first run through
the LSTMs in a few time segments, each segment over only the rows still inside their text, carrying each row's
state across segment boundaries and pooling as it goes. Each row reads exactly the steps it would read alone.

The LSTM's logit is the model. An NB-weighted uni/bi/trigram model (`model.ngram`, `nb_buckets`) may be blended
with it by two weights and a bias fitted on validation; until it is fitted the blend passes the LSTM's logit
through unchanged, so training and model selection see the LSTM alone.
"""

from __future__ import annotations

from bisect import bisect_right
from concurrent.futures import Executor
from concurrent.futures import wait as wait_for_futures
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
    """Reverse each row's first `lengths[b]` steps in place, leaving its padding where it is ([B, T] or [B, T, *]).

    It is its own inverse, so the same call maps the backward LSTM's outputs back to text order.
    """
    steps = torch.arange(x.size(1), device=x.device).unsqueeze(0)
    last = lengths.unsqueeze(1) - 1
    index = torch.where(steps <= last, last - steps, steps)
    if x.dim() > 2:
        index = index.view(*index.shape, *(1,) * (x.dim() - 2)).expand_as(x)
    return x.gather(1, index)


# What one more LSTM call per direction costs, in row-steps (one row through one time step): a segment boundary
# is worth it only where it saves more padded row-steps than that.
SEGMENT_CALL_COST = 100.0

# Segment boundaries fall on multiples of this many steps. oneDNN, which runs the LSTM on a CPU, compiles a
# primitive for each (rows, steps) shape and keeps a bounded number of them (app/__main__.py); a shape it no
# longer holds is compiled again, which costs more than running a few steps of padding. With boundaries on every
# length, nearly every lone text and every segment was a new shape; on multiples of 16 the shapes repeat.
SEGMENT_STEPS = 16


def plan_segments(lengths: Sequence[int], call_cost: float = SEGMENT_CALL_COST,
                  quantum: int = SEGMENT_STEPS) -> list[tuple[int, int, int]]:
    """The cheapest time segments for rows of these lengths sorted longest first, as (start, end, rows): steps
    [start, end) of the first `rows` rows, those still inside their text at `start`. Every boundary is a
    multiple of `quantum`, so the last segment may end past the longest row (padding, masked like any other).

    Cost: the row-steps run (padding inside a segment included) plus `call_cost` per segment. A boundary anywhere
    but at a row's length rounded up to `quantum` saves nothing, so this is an exact dynamic programme over those
    points: O(m^2) for m <= rows.
    """
    ascending = sorted(lengths)
    points = [0, *sorted({-(-n // quantum) * quantum for n in ascending})]
    rows_past = [len(ascending) - bisect_right(ascending, p) for p in points]  # rows longer than each point
    best = [0.0] + [float("inf")] * (len(points) - 1)
    cut = [0] * len(points)
    for j in range(1, len(points)):
        for i in range(j):
            cost = best[i] + rows_past[i] * (points[j] - points[i]) + call_cost
            if cost < best[j]:
                best[j], cut[j] = cost, i
    segments = []
    j = len(points) - 1
    while j > 0:
        segments.append((points[cut[j]], points[j], rows_past[cut[j]]))
        j = cut[j]
    return segments[::-1]


def recur(lstm: nn.LSTM, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
    """`lstm(x, state)` in the LSTM's own dtype, its output in `x`'s (the state stays in the LSTM's: it only ever
    goes back into the same LSTM). A no-op cast when both are float32."""
    out, state = lstm(x.to(lstm.weight_ih_l0.dtype), state)
    return out.to(x.dtype), state


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

    def set_lstm_dtype(self, dtype: torch.dtype) -> None:
        """Run the LSTMs' weights and arithmetic in `dtype` (inference: bfloat16 on CPUs that compute in it
        natively), everything else in float32. Each LSTM's input is cast to `dtype` and its output back to
        float32, so pooling, the head and the n-gram model see float32 either way."""
        for lstm in [*self.forward_lstms, *self.backward_lstms]:
            lstm.to(dtype)
        self.flatten_parameters()

    @property
    def lstm_dtype(self) -> torch.dtype:
        return self.forward_lstms[0].weight_ih_l0.dtype

    def sequence_features(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-token LSTM outputs [B, T, H*directions] from embeddings [B, T, E]; rows right-padded, lengths >= 1."""
        x = self.embed_dropout(embedded)
        for layer, forward_lstm in enumerate(self.forward_lstms):
            if layer:
                x = self.dropout(x)
            out, _ = recur(forward_lstm, x)
            if self.config.bidirectional:
                back, _ = recur(self.backward_lstms[layer], reverse_padded(x, lengths))
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
        return self._beside_ngram(self.lstm_logit(ids, lengths), ids, lengths)

    def _beside_ngram(self, lstm: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.config.nb_buckets:
            return lstm.unsqueeze(-1)
        return torch.stack([lstm, self.ngram(ids, lengths)], dim=-1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits [B] for right-padded token ids [B, T] with real lengths [B] (each >= 1)."""
        return self._blend(self.lstm_logit(ids, lengths), ids, lengths)

    def _blend(self, lstm: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.config.nb_buckets:
            return lstm
        return self.blend(self._beside_ngram(lstm, ids, lengths)).squeeze(-1)

    @property
    def segmentable(self) -> bool:
        """Whether `forward_segments` runs by segments: one LSTM layer pooled by max and mean."""
        return self.config.num_layers == 1 and self.config.pooling == "max_mean"

    def forward_segments(self, ids: torch.Tensor, lengths: torch.Tensor,
                         segments: Sequence[tuple[int, int, int]], beside: Executor | None = None) -> torch.Tensor:
        """`forward` in eval mode for rows sorted longest first, run by `plan_segments(lengths)`'s segments.

        The same logits, but no row runs past its own length (beyond the padding a segment keeps), and no
        [B, T, features] tensor is built: each direction is pooled segment by segment. Max and mean of the
        concatenated directions are those of each direction apart, and pooling ignores order, so the backward
        direction is pooled in its own (reversed) order. Networks that are not `segmentable`, and any network in
        training mode (dropout), run `forward`.

        `beside`: an executor with a thread to spare. The two directions never read each other, so the backward one
        then runs there while this thread runs the forward one: the same logits, sooner when a core is idle.
        """
        if not self.segmentable or self.training:
            return self.forward(ids, lengths)
        if segments[-1][1] > ids.size(1):  # the last segment is rounded up past the longest row
            ids = nn.functional.pad(ids, (0, segments[-1][1] - ids.size(1)))
        directions = [(self.forward_lstms[0], ids)]
        if self.config.bidirectional:
            directions.append((self.backward_lstms[0], reverse_padded(ids, lengths)))
        if beside is not None and len(directions) == 2:
            # Inference mode is per thread: entered again on the other one, as this one entered it.
            backward = beside.submit(_inference, self._pool_by_segments, *directions[1], lengths, segments)
            try:
                pooled = [self._pool_by_segments(*directions[0], lengths, segments), backward.result()]
            finally:
                wait_for_futures([backward])  # never return (or raise) while it still reads these tensors
        else:
            pooled = [self._pool_by_segments(lstm, read, lengths, segments) for lstm, read in directions]
        count = lengths.unsqueeze(1).to(pooled[0][1].dtype)
        features = torch.cat([m for m, _ in pooled] + [s / count for _, s in pooled], dim=-1)
        return self._blend(self.head(features).squeeze(-1), ids, lengths)

    def _pool_by_segments(self, lstm: nn.LSTM, ids: torch.Tensor, lengths: torch.Tensor,
                          segments: Sequence[tuple[int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Max and sum over each row's real steps of `lstm`'s outputs on right-padded `ids`, segment by segment."""
        shape = (ids.size(0), lstm.hidden_size)
        maxed = torch.full(shape, float("-inf"), device=ids.device)
        summed = torch.zeros(shape, device=ids.device)
        state = None
        for start, end, rows in segments:
            if state is not None:  # rows sorted longest first: those that go on are the first `rows`
                state = (state[0][:, :rows], state[1][:, :rows])
            out, state = recur(lstm, self.embedding(ids[:rows, start:end]), state)
            if int(lengths[rows - 1]) < end:  # some rows end inside this segment: leave their padding out
                steps = torch.arange(start, end, device=ids.device).unsqueeze(0)
                real = (steps < lengths[:rows].unsqueeze(1)).unsqueeze(-1)
                out_max, out_sum = out.masked_fill(~real, float("-inf")).amax(1), (out * real).sum(1)
            else:
                out_max, out_sum = out.amax(1), out.sum(1)
            maxed[:rows] = torch.maximum(maxed[:rows], out_max)
            summed[:rows] += out_sum
        return maxed, summed


def _inference(fn, *args):
    with torch.inference_mode():
        return fn(*args)
