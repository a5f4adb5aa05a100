"""Smoke training end to end, the artifact folder's contract, and the Python API on top of it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import ArtifactError, load_model, resolve_device
from model.artifact import CHECKED_FILES, DEFAULT_ARTIFACT
from model.tokenizer import UNK_ID, build_tokenizer, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_training_writes_a_complete_loadable_artifact(smoke_artifact):
    names = {p.name for p in smoke_artifact.iterdir()}
    assert {"config.json", "weights.pt", "tokenizer.json", "metrics.json"} <= names
    config = json.loads((smoke_artifact / "config.json").read_text())
    assert set(config["sha256"]) == set(CHECKED_FILES)
    assert config["temperature"] > 0
    metrics = json.loads((smoke_artifact / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] >= 0.8  # the synthetic task is easy; the model must learn it
    assert "data_sha256" in metrics["training"] and "git_commit" in metrics["training"]
    # weights are plain tensors: loadable with weights_only=True, no pickled classes
    state = torch.load(smoke_artifact / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    # no path into the training data leaks into the artifact
    for name in names - {"weights.pt"}:
        path = smoke_artifact / name
        if path.is_file():
            assert "aclImdb" not in path.read_text(errors="ignore")


def test_predict_proba_is_calibrated_probabilities_and_learned_the_task(smoke_artifact):
    model = load_model(smoke_artifact, device="cpu")
    probs = model.predict_proba(["great wonderful superb film", "awful boring worst waste"])
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert probs[0] > 0.5 > probs[1]
    assert model.predict_proba([]) == []


def test_every_text_is_read_whole_and_reported(smoke_artifact):
    model = load_model(smoke_artifact, device="cpu")
    long_text = "great film " * 3000
    preds = model.predict(["", "   ", long_text, "good 🎬 שלום e\u0301\x00"])
    assert preds[0].tokens == 0 and preds[1].tokens == 0
    assert preds[2].tokens == len(model.tokenizer.encode(long_text, add_special_tokens=False).ids) >= 6000
    assert not any(p.truncated for p in preds)


def test_encode_reads_the_same_ids_as_the_tokenizer(smoke_artifact):
    model = load_model(smoke_artifact, device="cpu")
    texts = ["A great film!<br /><br />Loved it.", "", "naïve café 🎬 ＡＢＣ", "e\u0301\x00 not bad at all " * 50]
    for text, encoded in zip(texts, model.encode(texts)):
        ids = model.tokenizer.encode(text, add_special_tokens=False).ids
        assert encoded.tokens == len(ids)
        assert encoded.ids == (tuple(ids) or (UNK_ID,))  # an empty text reads one [UNK]


def test_batch_invariance(smoke_artifact):
    model = load_model(smoke_artifact, device="cpu")
    texts = ["great", "the movie was awful and the plot was dull " * 20, "fun", "it was a film", "superb " * 300]
    alone = [model.predict_proba([t])[0] for t in texts]
    together = model.predict_proba(texts)
    small_batches = model.predict_proba(texts, batch_size=2)
    reordered = model.predict_proba(texts[::-1])[::-1]
    assert together == pytest.approx(alone, abs=1e-5)
    assert small_batches == pytest.approx(alone, abs=1e-5)
    assert reordered == pytest.approx(alone, abs=1e-5)


def test_tokenizer_round_trip(tmp_path):
    texts = ["A great film!<br /><br />Loved it.", "Terrible... just TERRIBLE<br/>acting", "naïve café 🎬"]
    tok = build_tokenizer(texts * 20, vocab_size=300, min_frequency=1)
    tok.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(str(tmp_path / "tokenizer.json"))
    for text in texts:
        a, b = tok.encode(text), loaded.encode(text)
        assert a.ids == b.ids
        assert "<" not in "".join(b.tokens) and "br" not in b.tokens  # <br /> tags are gone
        assert all(t == t.lower() for t in b.tokens)
        for token_text, (start, end) in zip(b.tokens, b.offsets):  # offsets point into the original text
            assert text[start:end].lower().startswith(token_text.lower()[:1])


def test_checksum_mismatch_is_a_clear_error(smoke_artifact, tmp_path):
    bad = shutil.copytree(smoke_artifact, tmp_path / "bad")
    blob = bytearray((bad / "weights.pt").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (bad / "weights.pt").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="checksum mismatch for .*weights.pt"):
        load_model(bad, device="cpu")


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    (lambda d: (d / "config.json").write_text("{"), "not valid JSON"),
    (lambda d: (d / "config.json").unlink(), "config.json is missing"),
    (lambda d: (d / "weights.pt").write_bytes((d / "weights.pt").read_bytes()[:100]), "checksum mismatch"),
])
def test_broken_artifacts_are_refused(smoke_artifact, tmp_path, damage, message):
    bad = shutil.copytree(smoke_artifact, tmp_path / "bad")
    damage(bad)
    with pytest.raises(ArtifactError, match=message):
        load_model(bad, device="cpu")


def test_missing_folder_and_bad_devices(tmp_path, smoke_artifact):
    with pytest.raises(ArtifactError, match="not found"):
        load_model(tmp_path / "nothing-here", device="cpu")
    with pytest.raises(ValueError, match="unknown device|unsupported device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_model(smoke_artifact, device="cuda")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_resume_continues_exactly(tmp_path):
    def run(*extra):
        subprocess.run([sys.executable, "-m", "model.train", "--smoke", "--epochs", "3", *extra], cwd=ROOT,
                       check=True, capture_output=True, timeout=120)
    run("--out", str(tmp_path / "a"), "--checkpoint-dir", str(tmp_path / "ca"))
    run("--out", str(tmp_path / "b"), "--checkpoint-dir", str(tmp_path / "cb"), "--until", "supervised")
    assert not (tmp_path / "b").exists()
    run("--out", str(tmp_path / "b"), "--checkpoint-dir", str(tmp_path / "cb"), "--resume")
    assert (tmp_path / "a" / "weights.pt").read_bytes() == (tmp_path / "b" / "weights.pt").read_bytes()


def test_without_distillation_no_teacher_labels_are_computed(tmp_path):
    subprocess.run([sys.executable, "-m", "model.train", "--smoke", "--distill-epochs", "0", "--out",
                    str(tmp_path / "a"), "--checkpoint-dir", str(tmp_path / "ca")], cwd=ROOT, check=True,
                   capture_output=True, timeout=120)
    assert (tmp_path / "a" / "weights.pt").is_file()
    assert not (tmp_path / "ca" / "teacher.pt").exists()  # soft labels nobody would train on


def test_shipped_artifact_is_small_and_verified():
    if not (DEFAULT_ARTIFACT / "config.json").is_file():
        pytest.skip(f"no shipped artifact at {DEFAULT_ARTIFACT}")
    model_dir = DEFAULT_ARTIFACT.parents[1]
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert size <= 60 * 1024 * 1024  # the budget for everything under model/, code and artifact
    model = load_model(device="cpu")
    assert model.metrics["test"]["size"] == 25000  # the final report covers the whole test split
    assert model.metrics["test"]["accuracy"] >= 0.925
    assert model.metrics["test"]["ece"] <= 0.02
    assert model.metrics["ablation"]["lstm_only"]["accuracy"] >= 0.92  # the sequence path alone carries it


def test_the_load_path_imports_nothing_of_the_web_or_training_tools():
    code = ("import sys, model; m = model.load_model; "
            "print(sorted({n.split('.')[0] for n in sys.modules} & {'fastapi', 'starlette', 'pydantic', 'uvicorn', "
            "'matplotlib', 'app', 'model.training'} | {n for n in sys.modules if n.startswith('model.training')}))")
    # (torch itself imports tqdm, so tqdm is not on the list)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
