"""`SentimentModel`: the one inference path, used in-process and by the web service alike.

Per-text steps (encode) are kept apart from per-batch steps (predict_encoded) so a server can tokenise each
request as it arrives and pack batches by token count itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import torch

from model.artifact import DEFAULT_ARTIFACT, load_artifact
from model.network import COMPONENTS, plan_segments, right_pad
from model.tokenizer import UNK_ID


@dataclass(frozen=True)
class Encoded:
    """A tokenised text. The model reads every token: nothing is truncated, so `tokens` is what was read."""

    ids: tuple[int, ...]
    tokens: int

    @property
    def cost(self) -> int:
        """Time steps the LSTM will run for this text (at least one, even for a text with no tokens)."""
        return len(self.ids)


@dataclass(frozen=True)
class Prediction:
    positive: float
    tokens: int
    truncated: bool = False


# Characters per token of review text, measured with the shipped tokenizer on 2,000 IMDB test reviews: median 4.66,
# 95% of reviews above 4.2. Counting 4 overestimates nearly every text, so batches planned on estimates stay within
# their token budget.
CHARS_PER_TOKEN = 4


def estimate_cost(text: str) -> int:
    """About the time steps `Encoded.cost` will be for `text`, without tokenising it: lets a server plan batches
    first and tokenise each batch later, on the thread that runs it."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


# Cost of one padded LSTM pass ~ longest row x (STEP_OVERHEAD + rows), in row-steps: measured on the 2-core CPU
# build, one time step cost about as much for a lone row as for 4 more rows of a batch. (GPU batches are split
# by this; CPU batches run by time segments instead, see `SentimentModel.logits`.)
STEP_OVERHEAD = 4.0


def split_by_length(lengths: Sequence[int], step_overhead: float = STEP_OVERHEAD) -> list[range]:
    """Partition ascending `lengths` into consecutive groups minimising sum(longest x (overhead + rows)).

    Exact dynamic programme over the cut points: O(n^2) for a batch of n rows, microseconds for n <= 256.
    """
    n = len(lengths)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest cost of rows[:j]
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[j - 1]  # ascending: the last row of a group is its longest
        for i in range(j):
            cost = best[i] + longest * (step_overhead + j - i)
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups = []
    j = n
    while j > 0:
        groups.append(range(cut[j], j))
        j = cut[j]
    return groups[::-1]


# The defaults of every caller that batches: the server's settings, offline scoring, evaluation, explanations.
BATCH_SIZE = 64
MAX_BATCH_TOKENS = 32768


def batch_admits(count: int, longest: int, cost: int, batch_size: int, max_batch_tokens: int) -> bool:
    """The one rule for how big a forward pass gets: a batch of `count` rows whose longest costs `longest` takes
    a row of `cost` while it stays within `batch_size` rows and `max_batch_tokens` padded tokens (longest row x
    rows). An empty batch takes any row, so a row over the whole budget runs alone."""
    return count == 0 or (count < batch_size and max(longest, cost) * (count + 1) <= max_batch_tokens)


def plan_batches(costs: Sequence[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices of rows with these lengths grouped into batches of similar length, each within `batch_admits`."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(costs)), key=costs.__getitem__):
        # ascending order: the newcomer is the longest row
        if not batch_admits(len(current), costs[current[-1]] if current else 0, costs[i], batch_size,
                            max_batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def label_for(positive: float, labels: Sequence[str] = ("negative", "positive"),
              uncertain_below: float | None = None) -> str:
    """The label of P(positive): `labels[1]` at 0.5 and above, else `labels[0]`; "uncertain" when the top
    probability is below `uncertain_below` (when set)."""
    if uncertain_below is not None and max(positive, 1.0 - positive) < uncertain_below:
        return "uncertain"
    return labels[1] if positive >= 0.5 else labels[0]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`; asking for a GPU that is not there is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available on this machine "
                             f"(torch {torch.__version__}); use auto or cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return resolved


LSTM_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class DtypeError(ValueError):
    """An LSTM dtype that is unknown or cannot run on the chosen device."""


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU has bfloat16 arithmetic of its own (AVX512-BF16 or AMX) and torch has oneDNN to use it.
    Elsewhere oneDNN would emulate it, so `auto` keeps float32 there."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to tell
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_lstm_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` (bfloat16 on a CPU that computes in it natively, else float32), `float32` or `bfloat16` (CPU only).

    bfloat16 keeps float32's range with 8 bits of mantissa: the LSTM's weights and arithmetic lose precision, the
    pooling, head, n-gram model and calibration after it stay float32."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_computes_bfloat16() else torch.float32
    if name not in LSTM_DTYPES:
        raise DtypeError(f"unknown LSTM dtype {name!r}: use auto, float32 or bfloat16")
    if name == "bfloat16" and device.type != "cpu":
        raise DtypeError(f"bfloat16 LSTMs run on the CPU only, not on {device}: use auto or float32")
    return LSTM_DTYPES[name]


class SentimentModel:
    def __init__(self, path: str | Path = DEFAULT_ARTIFACT, device: str | torch.device = "auto",
                 lstm_dtype: str = "auto"):
        self.path = Path(path)
        self.device = resolve_device(device)
        dtype = resolve_lstm_dtype(lstm_dtype, self.device)
        self.config, self.metrics, self.network, self.tokenizer = load_artifact(self.path, self.device)
        if dtype != torch.float32:
            self.network.set_lstm_dtype(dtype)
        self.name: str = self.config["name"]
        self.version: str = self.config["version"]
        self.temperature: float = float(self.config["temperature"])
        self.labels: list[str] = list(self.config["labels"])
        # Each component's own calibration (weight, bias fitted on validation), so each can be scored alone.
        self.component_calibration: dict[str, dict] = dict(self.config.get("components", {}))

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Tokenise a batch with the tokenizer's (parallel, Rust) batch encoder."""
        # The fast variant skips the character offsets, which only explanations read (model.explain): the same ids.
        encodings = self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        # An LSTM needs at least one step; a text with no tokens reads one [UNK] and reports 0 tokens.
        return [Encoded(tuple(e.ids) or (UNK_ID,), len(e.ids)) for e in encodings]

    def collate(self, batch: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad to the longest row (padding never changes a result; see model.network)."""
        ids, lengths = right_pad([e.ids for e in batch])
        if self.device.type == "cuda":
            # Pinned host memory lets the copy overlap with whatever the GPU is still doing.
            return (ids.pin_memory().to(self.device, non_blocking=True),
                    lengths.pin_memory().to(self.device, non_blocking=True))
        return ids, lengths

    @torch.inference_mode()
    def logits(self, batch: Sequence[Encoded], beside: Executor | None = None) -> torch.Tensor:
        """Calibrated logits (temperature applied) for one batch, in input order, as a CPU float tensor.

        On the CPU the rows run longest first by time segments (`SentimentLSTM.forward_segments`), so a batch
        that mixes short and long texts costs about its real tokens, not its longest row times its rows, and with
        `beside` (an executor with a thread to spare) the two LSTM directions run at once. GPU batches run as one
        padded pass (`predict_encoded` splits them by length first).
        """
        if self.device.type != "cpu":
            ids, lengths = self.collate(batch)
            return (self.network(ids, lengths).float() / self.temperature).cpu()
        order = sorted(range(len(batch)), key=lambda i: -batch[i].cost)
        ids, lengths = self.collate([batch[i] for i in order])
        segments = plan_segments([batch[i].cost for i in order])
        logits = torch.empty(len(batch))
        logits[order] = self.network.forward_segments(ids, lengths, segments, beside).float()
        return logits / self.temperature

    @torch.inference_mode()
    def component_logits(self, batch: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        """Each component's calibrated logits for one batch: "lstm" (the sequence path alone) and, when the model
        has one, "ngram" (the n-gram model alone). The ablations score them one by one."""
        ids, lengths = self.collate(batch)
        logits = self.network.components(ids, lengths).float().cpu()
        out = {}
        for k, name in enumerate(COMPONENTS[:logits.size(1)]):
            cal = self.component_calibration.get(name, {"weight": 1.0, "bias": 0.0})
            out[name] = logits[:, k] * cal["weight"] + cal["bias"]
        return out

    def predict_components(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> dict[str, list[float]]:
        """Calibrated P(positive) per text from each component alone (see `component_logits`)."""
        encoded = self.encode(texts)
        probs: dict[str, list[float]] = {}
        for indices in self.plan_batches(encoded, batch_size):
            for name, logits in self.component_logits([encoded[i] for i in indices]).items():
                column = probs.setdefault(name, [0.0] * len(encoded))
                for i, p in zip(indices, torch.sigmoid(logits).tolist()):
                    column[i] = p
        return probs

    def predict_encoded(self, batch: Sequence[Encoded], beside: Executor | None = None) -> list[float]:
        """Calibrated P(positive) for one already-sized batch, in input order; `beside`: see `logits` (CPU only).

        A batch gathered from live requests mixes 20-token and 1,000-token reviews, and one padded pass over it
        would spend most of its time on padding. On the CPU `logits` skips it by time segments. On a GPU the rows
        are sorted by length and run as the few forward passes that cost least in padded LSTM steps
        (`split_by_length`). Padding never changes a result, so neither does either way.
        """
        if not batch:
            return []
        if self.device.type == "cpu":
            return torch.sigmoid(self.logits(batch, beside)).tolist()
        order = sorted(range(len(batch)), key=lambda i: batch[i].cost)
        probs = [0.0] * len(batch)
        for group in split_by_length([batch[i].cost for i in order]):
            rows = [order[k] for k in group]
            for i, p in zip(rows, torch.sigmoid(self.logits([batch[i] for i in rows])).tolist()):
                probs[i] = p
        return probs

    def plan_batches(self, encoded: Sequence[Encoded], batch_size: int = BATCH_SIZE,
                     max_batch_tokens: int = MAX_BATCH_TOKENS) -> list[list[int]]:
        """Indices grouped into batches, sorted by length so rows of a batch need little padding."""
        return plan_batches([e.cost for e in encoded], batch_size, max_batch_tokens)

    def predict(self, texts: Sequence[str], batch_size: int = BATCH_SIZE,
                max_batch_tokens: int = MAX_BATCH_TOKENS) -> list[Prediction]:
        encoded = self.encode(texts)
        probs = [0.0] * len(encoded)
        for indices in self.plan_batches(encoded, batch_size, max_batch_tokens):
            for i, p in zip(indices, self.predict_encoded([encoded[i] for i in indices])):
                probs[i] = p
        return [Prediction(p, e.tokens) for p, e in zip(probs, encoded)]

    def predict_proba(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> list[float]:
        """Calibrated P(positive) per text, batched internally."""
        return [p.positive for p in self.predict(texts, batch_size)]

    @property
    def lstm_dtype(self) -> str:
        """The LSTM's number format as `SENTIMENT_LSTM_DTYPE` spells it: `float32` or `bfloat16`."""
        return str(self.network.lstm_dtype).removeprefix("torch.")

    def card(self) -> dict:
        """Facts about the model for people: what it is, how it was trained, how well it does."""
        return {
            "name": self.name,
            "version": self.version,
            "labels": self.labels,
            "architecture": self.config["network"],
            "temperature": self.temperature,
            "device": str(self.device),
            "lstm_dtype": self.lstm_dtype,
            "metrics": self.metrics,
            "truncation": "none: the whole review is read",
        }


def load_model(path: str | Path = DEFAULT_ARTIFACT, device: str | torch.device = "auto",
               lstm_dtype: str = "auto") -> SentimentModel:
    """Load a verified artifact folder (the shipped one by default) onto `device`, its LSTMs in `lstm_dtype`
    (`resolve_lstm_dtype`)."""
    return SentimentModel(path, device, lstm_dtype)
