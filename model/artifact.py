"""The model artifact: one folder per version holding everything inference needs, and nothing else.

    config.json     architecture args, labels, temperature, version, sha256 of every other file
    weights.pt      the network's state_dict (tensors only; loaded with weights_only=True, never unpickled code)
    tokenizer.json  the HF tokenizer
    metrics.json    validation/test metrics, data checksum, training time and hardware, git commit

Loading verifies every checksum before anything is deserialised, so a truncated or tampered file is a clear
error instead of a half-working model.
"""

from __future__ import annotations

import hashlib
import json
import pickle  # only for its exception type: nothing here unpickles
from pathlib import Path

import torch

from model.network import NetworkConfig, SentimentLSTM
from model.tokenizer import load_tokenizer

FORMAT_VERSION = 1
WEIGHTS, TOKENIZER, METRICS, CONFIG = "weights.pt", "tokenizer.json", "metrics.json", "config.json"
CHECKED_FILES = (WEIGHTS, TOKENIZER, METRICS)
DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "imdb-lstm-v3"


class ArtifactError(RuntimeError):
    """The artifact folder is missing, incomplete, corrupt or from an incompatible format."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_artifact(directory: str | Path, network: SentimentLSTM, tokenizer, *, name: str, version: str,
                  temperature: float, metrics: dict, extra: dict | None = None) -> Path:
    """Write a complete artifact folder; files are written first and config.json (with their hashes) last."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    torch.save(state, directory / WEIGHTS)
    tokenizer.save(str(directory / TOKENIZER))
    (directory / METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    config = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "labels": ["negative", "positive"],
        "network": network.config.to_dict(),
        "temperature": temperature,
        **(extra or {}),
        "sha256": {f: _sha256(directory / f) for f in CHECKED_FILES},
    }
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def update_metrics(directory: str | Path, updates: dict) -> None:
    """Merge `updates` into metrics.json and refresh its checksum in config.json (e.g. the final test report)."""
    directory = Path(directory)
    config = read_config(directory)
    verify_checksums(directory, config)
    metrics = json.loads((directory / METRICS).read_text())
    metrics.update(updates)
    (directory / METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    config["sha256"][METRICS] = _sha256(directory / METRICS)
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_config(directory: str | Path) -> dict:
    directory = Path(directory)
    path = directory / CONFIG
    if not directory.is_dir():
        raise ArtifactError(f"model artifact folder not found: {directory}")
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: not a model artifact folder")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc})") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format_version {config.get('format_version')!r} is not supported "
                            f"(this code reads {FORMAT_VERSION})")
    return config


def verify_checksums(directory: str | Path, config: dict) -> None:
    directory = Path(directory)
    expected = config.get("sha256", {})
    for name in CHECKED_FILES:
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing from the model artifact")
        if name not in expected:
            raise ArtifactError(f"{directory / CONFIG} has no sha256 for {name}")
        actual = _sha256(path)
        if actual != expected[name]:
            raise ArtifactError(f"checksum mismatch for {path}: expected sha256 {expected[name][:12]}…, got "
                                f"{actual[:12]}… (the file is truncated, corrupted or was changed)")


def load_network(directory: str | Path, config: dict, device: torch.device) -> SentimentLSTM:
    network = SentimentLSTM(NetworkConfig.from_dict(config["network"]))
    path = Path(directory) / WEIGHTS
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except pickle.UnpicklingError as exc:  # weights_only refused something that is not a tensor: never run
        reason = next((line.strip() for line in str(exc).splitlines() if "WeightsUnpickler error" in line), "")
        raise ArtifactError(f"cannot load weights from {path}: it holds pickled objects besides tensors, which are "
                            f"never loaded ({reason or 'weights_only=True refused it'})") from None
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to the caller
        message = " ".join(str(exc).split())  # one line: torch's messages span several
        raise ArtifactError(f"cannot load weights from {path}: {message}") from None
    network.to(device).eval()
    network.flatten_parameters()
    return network


def load_artifact(directory: str | Path, device: torch.device):
    """(config, metrics, network, tokenizer) from a verified artifact folder."""
    directory = Path(directory)
    config = read_config(directory)
    verify_checksums(directory, config)
    metrics = json.loads((directory / METRICS).read_text())
    try:
        tokenizer = load_tokenizer(str(directory / TOKENIZER))
    except Exception as exc:  # noqa: BLE001
        raise ArtifactError(f"cannot load {directory / TOKENIZER}: {exc}") from None
    if tokenizer.get_vocab_size() != config["network"]["vocab_size"]:
        raise ArtifactError(f"{directory}: tokenizer has {tokenizer.get_vocab_size()} tokens but the network "
                            f"expects {config['network']['vocab_size']}")
    return config, metrics, load_network(directory, config, device), tokenizer
