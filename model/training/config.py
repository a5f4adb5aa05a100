"""Every training setting, in one dataclass; `model.training.cli` turns each into a flag."""

from __future__ import annotations

from dataclasses import dataclass, field

from model.artifact import DEFAULT_ARTIFACT
from model.network import NetworkConfig

STAGES = ("prepare", "pretrain", "ngram", "supervised", "teacher", "distill", "long", "calibrate", "report")


@dataclass
class TrainConfig:
    data: str | None = None
    out: str = str(DEFAULT_ARTIFACT)
    checkpoint_dir: str = "runs/latest"
    resume: bool = False
    until: str = STAGES[-1]
    seed: int = 13
    device: str = "auto"
    threads: int = 0
    lm_epochs: int = 2
    lm_lr: float = 2e-3
    lm_negatives: int = 512
    lm_max_tokens: int = 128
    epochs: int = 4
    distill_epochs: int = 0
    patience: int = 2
    batch_size: int = 64
    lr: float = 2e-3
    distill_lr_scale: float = 0.5
    long_epochs: int = 1
    long_max_tokens: int = 800
    long_lr_scale: float = 0.25
    weight_decay: float = 1e-2
    clip: float = 1.0
    adversarial_eps: float = 4.0
    synthetic_per_epoch: int = 4000
    graded_per_epoch: int = 2000
    crops: int = 25000
    nb_epochs: int = 2
    val_fraction: float = 0.1
    max_train_tokens: int = 400
    vocab_size: int = 30000
    lowercase: bool = True
    pretrain_embeddings: bool = True
    train_limit: int = 0
    unsup_limit: int = 0
    name: str = "imdb-lstm"
    version: str = "3.4.0"
    evaluate_test: bool = True
    smoke: bool = False
    progress: bool = True
    network: NetworkConfig = field(default_factory=NetworkConfig)
