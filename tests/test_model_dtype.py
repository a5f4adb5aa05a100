"""The LSTM's number format (`lstm_dtype`): bfloat16 LSTMs beside float32 everything else, and what `auto` picks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import model
from model import predictor
from model.network import NetworkConfig, SentimentLSTM, plan_segments, right_pad


def probe_texts() -> list[str]:
    probes = json.loads((Path(model.__file__).parent / "probes.json").read_text())["probes"]
    return [t for p in probes for t in ([p["text"]] if "text" in p else [p["weaker"], p["stronger"]])]


def test_bfloat16_lstms_give_the_float32_probabilities_within_a_hundredth(shipped_artifact):
    # The probes' sentences and texts of a few hundred tokens made from them, alone and in batches of mixed
    # lengths: the shipped model in both formats.
    texts = probe_texts()
    texts += [" ".join(texts[i:i + 40]) for i in range(0, len(texts), 40)]  # a few hundred tokens each
    full = model.load_model(shipped_artifact, "cpu", lstm_dtype="float32")
    half = model.load_model(shipped_artifact, "cpu", lstm_dtype="bfloat16")
    assert (full.lstm_dtype, half.lstm_dtype) == ("float32", "bfloat16")
    assert (full.card()["lstm_dtype"], half.card()["lstm_dtype"]) == ("float32", "bfloat16")
    expected = full.predict_proba(texts)
    for batch_size in (1, 16):
        got = half.predict_proba(texts, batch_size)
        worst = max(abs(a - b) for a, b in zip(got, expected))
        assert worst < 0.01, (batch_size, worst)


def test_only_the_lstms_run_in_bfloat16():
    net = SentimentLSTM(NetworkConfig(vocab_size=50, embed_dim=8, hidden_dim=8, nb_buckets=256)).eval()
    net.set_lstm_dtype(torch.bfloat16)
    assert net.lstm_dtype == torch.bfloat16
    for name, p in net.named_parameters():
        assert p.dtype == (torch.bfloat16 if "lstms" in name else torch.float32), name
    ids, lengths = right_pad([torch.randint(2, 50, (n,)).tolist() for n in (40, 17, 3)])
    with torch.inference_mode():
        padded = net(ids, lengths)
        segmented = net.forward_segments(ids, lengths, plan_segments(lengths.tolist()))
    assert padded.dtype == segmented.dtype == torch.float32
    assert torch.allclose(padded, segmented, atol=1e-2)


def test_auto_picks_bfloat16_only_on_a_cpu_that_computes_in_it(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(predictor, "cpu_computes_bfloat16", lambda: True)
    assert predictor.resolve_lstm_dtype("auto", cpu) == torch.bfloat16
    assert predictor.resolve_lstm_dtype("auto", gpu) == torch.float32
    monkeypatch.setattr(predictor, "cpu_computes_bfloat16", lambda: False)
    assert predictor.resolve_lstm_dtype("auto", cpu) == torch.float32
    assert predictor.resolve_lstm_dtype("bfloat16", cpu) == torch.bfloat16  # asked for: emulated, but it runs
    assert predictor.resolve_lstm_dtype("float32", gpu) == torch.float32
    with pytest.raises(model.DtypeError, match="bfloat16 LSTMs run on the CPU only, not on cuda"):
        predictor.resolve_lstm_dtype("bfloat16", gpu)
    with pytest.raises(model.DtypeError, match="unknown LSTM dtype 'half': use auto, float32 or bfloat16"):
        predictor.resolve_lstm_dtype("half", cpu)


def test_a_bfloat16_score_is_recorded_beside_the_float32_one(smoke_artifact, tmp_path):
    import shutil

    from model.artifact import load_artifact
    from model.card import render
    from model.evaluate import record

    artifact = tmp_path / "artifact"
    shutil.copytree(smoke_artifact, artifact)

    def report(dtype: str, accuracy: float) -> dict:
        test = {"size": 100, "accuracy": accuracy, "f1": 0.9, "precision": 0.9, "recall": 0.9, "roc_auc": 0.95,
                "ece": 0.01, "brier": 0.06, "confusion_matrix": [[45, 5], [5, 45]]}
        return {"test": test, "ablation": {"full": {"accuracy": accuracy, "ece": 0.01, "probes": 0.8}},
                "probes": {}, "by_length": [], "throughput": {"device": "cpu", "lstm_dtype": dtype}}

    assert record(artifact, report("float32", 0.9)) == "float32"
    assert record(artifact, report("bfloat16", 0.8)) == "bfloat16"
    metrics = json.loads((artifact / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == 0.9  # the main figures stay those of the model as trained
    assert metrics["test_lstm_bfloat16"]["accuracy"] == 0.8
    load_artifact(artifact, torch.device("cpu"))  # the checksum in config.json follows metrics.json
    assert "With the LSTM in bfloat16 (`SENTIMENT_LSTM_DTYPE`; the figures above are float32, as trained): " \
           "accuracy 0.8000" in render(artifact, tmp_path)
