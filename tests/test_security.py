"""Security promises: no pickle on the model's load path, the API key never in a log, error bodies without
internals. (Constant-time key comparison and CORS: tests/test_api_auth.py and tests/test_api_ops.py; the container:
tests/test_deploy_files.py.)"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import httpx
import pytest
import torch

import model
from model.artifact import ArtifactError


class _Payload:
    """Unpickling this calls `open(marker, "w")`: a stand-in for arbitrary code run by a malicious weights file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _resign(artifact: Path) -> None:
    """Recompute config.json's checksums, as an attacker who can write the whole folder would."""
    config = json.loads((artifact / "config.json").read_text())
    for name in config["sha256"]:
        config["sha256"][name] = hashlib.sha256((artifact / name).read_bytes()).hexdigest()
    (artifact / "config.json").write_text(json.dumps(config))


def evil_artifact(source: Path, target: Path, marker: Path) -> Path:
    """A copy of `source` whose weights.pt also pickles a `_Payload`, with checksums that match."""
    evil = shutil.copytree(source, target)
    state = torch.load(evil / "weights.pt", weights_only=True)
    torch.save({**state, "surprise": _Payload(marker)}, evil / "weights.pt")  # a valid torch file, pickled code
    _resign(evil)  # only weights_only=True now stands between the file and the payload
    return evil


def test_a_weights_file_carrying_a_pickle_payload_is_refused_and_never_run(smoke_artifact, tmp_path):
    marker = tmp_path / "payload-ran"
    evil = evil_artifact(smoke_artifact, tmp_path / "evil", marker)
    with pytest.raises(ArtifactError, match=r"weights.pt: it holds pickled objects besides tensors, which are never "
                                            r"loaded \(WeightsUnpickler error: Unsupported global: GLOBAL io.open"):
        model.load_model(evil, "cpu")
    assert not marker.exists()


def test_the_load_path_never_calls_pickle(smoke_artifact, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used on the load path")

    for name in ("load", "loads", "Unpickler", "_Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    loaded = model.load_model(smoke_artifact, "cpu")  # weights via torch's weights-only reader, the rest JSON
    assert loaded.predict_proba(["still works"])[0] >= 0
    json.loads((smoke_artifact / "tokenizer.json").read_text())
    json.loads((smoke_artifact / "config.json").read_text())


def test_tampered_files_are_caught_by_their_checksums_before_anything_is_read(smoke_artifact, tmp_path):
    for name in ("weights.pt", "tokenizer.json", "metrics.json"):
        copy = shutil.copytree(smoke_artifact, tmp_path / name)
        with open(copy / name, "r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 1]))
        with pytest.raises(ArtifactError, match=rf"checksum mismatch for .*{name}"):
            model.load_model(copy, "cpu")


KEY = "s3cret-KEY-that-must-never-be-logged-0123456789"


@pytest.mark.slow
def test_the_api_key_never_reaches_the_log(start_server):
    server = start_server(SENTIMENT_API_KEY=KEY, SENTIMENT_LOG_LEVEL="debug", SENTIMENT_LOG_JSON="true")
    server.wait_ready()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        good = {"authorization": f"Bearer {KEY}"}
        assert c.post("/predict", json={"text": "fine"}, headers=good).status_code == 200
        assert c.post("/predict", json={"text": ""}, headers=good).status_code == 422
        assert c.post("/predict", content=b"{", headers={**good, "content-type": "application/json"}).status_code == 400
        assert c.get("/model", headers=good).status_code == 200
        for wrong in (KEY[:-1], KEY + "x", KEY.upper()):
            r = c.post("/predict", json={"text": "fine"}, headers={"authorization": f"Bearer {wrong}"})
            assert r.status_code == 401 and KEY not in r.text and wrong not in r.text
    assert server.stop() == 0
    log = server.log()
    assert "app.access" in log  # the log was written, at debug level
    assert KEY not in log and KEY[:-1] not in log and KEY.upper() not in log
