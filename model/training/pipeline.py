"""The training pipeline as named stages, each saving its result in the checkpoint folder so a run can stop and
resume between stages (and between epochs of the LSTM stages):

    prepare     validation carved out of train; BPE tokenizer and PPMI-SVD word vectors from train + unlabelled
    pretrain    the embedding and the LSTMs trained as forward and backward language models on the same text
    ngram       the NB-weighted n-gram model, fitted on the training split
    supervised  the LSTM on the labelled reviews plus synthetic negation/contrast sentences, adversarial training
    teacher     the blend of that LSTM and the n-gram model labels the 50k unlabelled reviews, and sentences cut
                from them, with soft labels
    distill     the LSTM trains on, on labelled + soft-labelled + synthetic (negation, contrast, graded intensity)
                text: it learns what the blend knows
    long        one more epoch on the labelled reviews in longer windows, at a lower rate: the earlier stages crop
                long reviews to `max_train_tokens`, but serving reads them whole
    calibrate   blend weights, per-component calibration and temperature on validation; the artifact is written
    report      the test split, read once, and the behavioural probes

Validation (never test) picks the best LSTM epoch across both LSTM stages.
"""

from __future__ import annotations

import json
import math
import platform
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from model import data as imdb
from model.artifact import save_artifact
from model.calibration import brier_score, expected_calibration_error, fit_blend, fit_temperature
from model.network import COMPONENTS, NetworkConfig, SentimentLSTM
from model.predictor import resolve_device
from model.tokenizer import build_tokenizer, load_tokenizer
from model.training.adversarial import train_step
from model.training.augment import graded_reviews, synthetic_reviews
from model.training.batches import bucket_batches, make_batch, predict_components, predict_logits
from model.training.config import STAGES, TrainConfig
from model.training.crops import review_crops
from model.training.embeddings import pretrained_embeddings
from model.training.language_model import pretrain_lm
from model.training.ngram_fit import fit_ngram_branch
from model.training.smoke import smoke_corpus


@dataclass
class Run:
    """What the stages share: settings, data as token ids, the network, and the progress file's contents."""

    cfg: TrainConfig
    device: torch.device
    ckpt: Path
    log: object
    tokenizer: object = None
    network: SentimentLSTM | None = None
    train_ids: list = field(default_factory=list)
    train_y: torch.Tensor | None = None
    val_ids: list = field(default_factory=list)
    val_y: torch.Tensor | None = None
    unsup_ids: list = field(default_factory=list)
    crop_ids: list = field(default_factory=list)
    progress: dict = field(default_factory=dict)

    def save_progress(self) -> None:
        (self.ckpt / "progress.json").write_text(json.dumps(self.progress, indent=2) + "\n")

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]


def binary_metrics(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict:
    probs = torch.sigmoid(logits / temperature)
    return {"accuracy": float(((probs >= 0.5).long() == labels).double().mean()),
            "ece": expected_calibration_error(probs, labels), "brier": brier_score(probs, labels),
            "nll": float(nn.functional.binary_cross_entropy(probs.double(), labels.double()))}


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def load_data(run: Run) -> tuple[list[imdb.Review], list[imdb.Review], list[imdb.Review]]:
    cfg = run.cfg
    if cfg.smoke:
        train_set, val_set, unsup = smoke_corpus(500, cfg.seed)
    else:
        if not cfg.data:
            raise SystemExit("--data PATH is required (the aclImdb_v1.tar.gz archive or its folder), or --download")
        loaded = imdb.load_splits(cfg.data, ("train", "unsup"))
        train_set, val_set = imdb.stratified_split(loaded["train"], cfg.val_fraction, cfg.seed)
        unsup = loaded["unsup"]
    if cfg.train_limit:
        train_set = train_set[:cfg.train_limit]
    if cfg.unsup_limit:
        unsup = unsup[:cfg.unsup_limit]
    return train_set, val_set, unsup


def stage_prepare(run: Run) -> None:
    """Data, tokenizer and the network with its initial word vectors (or, on a resume, the saved tokenizer)."""
    cfg = run.cfg
    train_set, val_set, unsup = load_data(run)
    run.log(f"train {len(train_set)}  validation {len(val_set)}  unlabelled {len(unsup)}  device {run.device}")
    corpus = [r.text for r in train_set] + [r.text for r in unsup]  # never validation or test text
    tokenizer_path, vectors_path = run.ckpt / "tokenizer.json", run.ckpt / "embeddings.pt"
    if cfg.resume and tokenizer_path.is_file():
        run.tokenizer = load_tokenizer(str(tokenizer_path))  # the checkpoint's ids, exactly
    else:
        run.tokenizer = build_tokenizer(corpus, vocab_size=cfg.vocab_size, min_frequency=1 if cfg.smoke else 3,
                                        lowercase=cfg.lowercase)
        run.tokenizer.save(str(tokenizer_path))
    net_cfg = NetworkConfig(**{**cfg.network.to_dict(), "vocab_size": run.tokenizer.get_vocab_size()})
    run.network = SentimentLSTM(net_cfg)
    if cfg.pretrain_embeddings and not cfg.smoke:
        if cfg.resume and vectors_path.is_file():
            vectors = torch.load(vectors_path, weights_only=True)
        else:
            t0 = time.time()
            vectors = pretrained_embeddings(run.tokenizer, corpus, net_cfg.embed_dim, cfg.seed)
            torch.save(vectors, vectors_path)
            run.log(f"PPMI-SVD embeddings from {len(corpus)} reviews in {time.time() - t0:.0f}s")
        with torch.no_grad():
            run.network.embedding.weight.copy_(vectors)
    run.network.to(run.device)
    run.train_ids, run.val_ids = run.encode([r.text for r in train_set]), run.encode([r.text for r in val_set])
    run.train_y = torch.tensor([r.label for r in train_set])
    run.val_y = torch.tensor([r.label for r in val_set])
    run.unsup_ids = run.encode([r.text for r in unsup])
    run.crop_ids = run.encode(review_crops([r.text for r in unsup], cfg.crops, cfg.seed))


def stage_pretrain(run: Run) -> None:
    cfg, path = run.cfg, run.ckpt / "pretrain.pt"
    if not cfg.lm_epochs:
        return
    if cfg.resume and path.is_file():
        load_lstm_file(run.network, path, run.device)
        return
    t0 = time.time()
    losses = pretrain_lm(run.network, run.train_ids + run.unsup_ids, epochs=cfg.lm_epochs, lr=cfg.lm_lr,
                         batch_size=cfg.batch_size, max_tokens=cfg.lm_max_tokens, negatives=cfg.lm_negatives,
                         clip=cfg.clip, seed=cfg.seed, device=run.device, progress=cfg.progress, log=run.log)
    torch.save(lstm_only(run.network.state_dict()), path)
    run.progress["pretrain"] = {"losses": losses, "seconds": round(time.time() - t0, 1)}
    run.save_progress()


def stage_ngram(run: Run) -> None:
    path = run.ckpt / "ngram.pt"
    if not run.network.config.nb_buckets:
        return
    if run.cfg.resume and path.is_file():
        run.network.ngram.load_state_dict(torch.load(path, map_location=run.device, weights_only=True))
        return
    t0 = time.time()
    fit_ngram_branch(run.network.ngram, lambda seqs: make_batch(seqs, 0, None, run.device), run.train_ids,
                     run.train_y, epochs=run.cfg.nb_epochs, seed=run.cfg.seed, progress=run.cfg.progress)
    torch.save(run.network.ngram.state_dict(), path)
    val = binary_metrics(predict_components(run.network, run.val_ids, run.device)[:, 1], run.val_y)
    run.progress["ngram"] = {"val_accuracy": val["accuracy"], "seconds": round(time.time() - t0, 1)}
    run.save_progress()
    run.log(f"n-gram model in {time.time() - t0:.0f}s: validation accuracy {val['accuracy']:.4f}")


FITTED_APART = ("ngram.", "blend.")  # the n-gram model and the blend have stages of their own


def lstm_parameters(network: SentimentLSTM) -> list[nn.Parameter]:
    return [p for n, p in network.named_parameters() if not n.startswith(FITTED_APART)]


def lstm_only(state: dict) -> dict:
    """The LSTM's weights alone: its checkpoints must not carry (or overwrite) the n-gram model's."""
    return {k: v for k, v in state.items() if not k.startswith(FITTED_APART)}


def load_lstm_state(network: SentimentLSTM, state: dict, source: Path) -> None:
    missing, unexpected = network.load_state_dict(lstm_only(state), strict=False)
    if unexpected or [k for k in missing if not k.startswith(FITTED_APART)]:
        raise RuntimeError(f"{source} does not match the network: missing {missing}, unexpected {unexpected}")


def load_lstm_file(network: SentimentLSTM, path: Path, device: torch.device) -> None:
    load_lstm_state(network, torch.load(path, map_location=device, weights_only=True), path)


def synthetic_batch(run: Run, epoch: int) -> tuple[list[list[int]], torch.Tensor]:
    texts, labels = synthetic_reviews(run.cfg.synthetic_per_epoch, seed=run.cfg.seed * 1000 + epoch)
    return run.encode(texts), torch.tensor(labels, dtype=torch.float)


def labelled_and_synthetic(run: Run, seed_offset: int):
    """`examples` for `fit_lstm`: the labelled reviews plus each epoch's synthetic sentences (seeded per stage)."""
    def examples(epoch: int):
        synthetic, labels = synthetic_batch(run, seed_offset + epoch)
        return run.train_ids + synthetic, torch.cat([run.train_y.float(), labels])

    return examples


def fit_lstm(run: Run, stage: str, epochs: int, lr: float, examples, max_tokens: int | None = None) -> None:
    """Train the sequence path for up to `epochs` (early stopping on validation accuracy), checkpointing each epoch.
    A review longer than `max_tokens` (default `max_train_tokens`) is read as a random window of that many tokens.

    `examples(epoch) -> (id lists, float targets)` gives one epoch's training set. The best weights over all LSTM
    stages are kept in lstm-best.pt; a stage starts from them.
    """
    cfg, network, device = run.cfg, run.network, run.device
    max_tokens = max_tokens or cfg.max_train_tokens
    best_path, last_path = run.ckpt / "lstm-best.pt", run.ckpt / f"{stage}-last.pt"
    state = {"epoch": 0, "best_epoch": 0}
    rng = random.Random(f"{cfg.seed}-{stage}")
    reviews = len(examples(0)[0])
    params = lstm_parameters(network)
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(reviews / cfg.batch_size)
    total, warmup = steps_per_epoch * epochs, max(1, steps_per_epoch // 4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    if cfg.resume and last_path.is_file():
        saved = torch.load(last_path, map_location=device, weights_only=False)  # our own checkpoint
        load_lstm_state(network, saved["network"], last_path)
        optimiser.load_state_dict(saved["optimiser"])
        scheduler.load_state_dict(saved["scheduler"])
        rng.setstate(saved["batch_rng"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        run.log(f"{stage}: resumed after epoch {state['epoch']}")
    elif best_path.is_file():
        load_lstm_file(network, best_path, device)
    history = run.progress.setdefault("history", [])
    while state["epoch"] < epochs and state["epoch"] - state["best_epoch"] < cfg.patience:
        epoch = state["epoch"] + 1
        seqs, targets = examples(epoch)
        network.train()
        batches = bucket_batches([min(len(s), max_tokens) for s in seqs], cfg.batch_size, rng)
        bar = tqdm(batches, desc=f"{stage} epoch {epoch}/{epochs}", disable=not cfg.progress, unit="batch",
                   dynamic_ncols=True)
        running, t0 = 0.0, time.time()
        for step, idx in enumerate(bar, 1):
            ids, lengths = make_batch([seqs[i] for i in idx], max_tokens, rng, device)
            optimiser.zero_grad(set_to_none=True)
            loss = train_step(network, ids, lengths, targets[idx].to(device), cfg.adversarial_eps)
            nn.utils.clip_grad_norm_(params, cfg.clip)
            optimiser.step()
            scheduler.step()
            running += (loss - running) / min(step, 50)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{running:.4f}")
        val = binary_metrics(predict_components(network, run.val_ids, device)[:, 0], run.val_y)
        state["epoch"] = epoch
        history.append({"stage": stage, "epoch": epoch, "train_examples": len(seqs), "train_loss": running,
                        "seconds": round(time.time() - t0, 1), **{f"val_{k}": v for k, v in val.items()}})
        if val["accuracy"] > run.progress.get("best_accuracy", -1.0):
            run.progress.update(best_accuracy=val["accuracy"], best_epoch=f"{stage} {epoch}")
            state["best_epoch"] = epoch
            torch.save(lstm_only(network.state_dict()), best_path)
        run.save_progress()
        run.log(f"{stage} epoch {epoch}: train loss {running:.4f}  LSTM val accuracy {val['accuracy']:.4f}  "
                f"nll {val['nll']:.4f}  (best {run.progress['best_accuracy']:.4f}, {run.progress['best_epoch']})")
        torch.save({"network": lstm_only(network.state_dict()), "optimiser": optimiser.state_dict(),
                    "scheduler": scheduler.state_dict(), "batch_rng": rng.getstate(),
                    "torch_rng": torch.get_rng_state(), "state": state}, last_path)
    load_lstm_file(network, best_path, device)


def stage_supervised(run: Run) -> None:
    fit_lstm(run, "supervised", run.cfg.epochs, run.cfg.lr, labelled_and_synthetic(run, 0))


def stage_teacher(run: Run) -> None:
    """Soft labels for the unlabelled reviews from the blend of the LSTM and the n-gram model (fitted on
    validation). Without an n-gram model the LSTM labels them alone (self-distillation)."""
    path = run.ckpt / "teacher.pt"
    if not run.unsup_ids or not run.cfg.distill_epochs or (run.cfg.resume and path.is_file()):
        return
    t0 = time.time()
    val = predict_components(run.network, run.val_ids, run.device)
    weights, bias = fit_blend(val, run.val_y)

    def blend(components: torch.Tensor) -> torch.Tensor:
        return components.double() @ torch.tensor(weights, dtype=torch.float64) + bias

    def label(seqs: list[list[int]]) -> torch.Tensor:
        return torch.sigmoid(blend(predict_components(run.network, seqs, run.device))).float()

    probs, crop_probs = label(run.unsup_ids), label(run.crop_ids) if run.crop_ids else torch.zeros(0)
    accuracy = binary_metrics(blend(val).float(), run.val_y)["accuracy"]
    torch.save({"probs": probs, "crop_probs": crop_probs}, path)
    run.progress["teacher"] = {"weights": weights, "bias": bias, "val_accuracy": accuracy,
                               "seconds": round(time.time() - t0, 1)}
    run.save_progress()
    run.log(f"teacher (blend {weights}) validation accuracy {accuracy:.4f}; {len(probs)} soft labels "
            f"for reviews, {len(crop_probs)} for sentences cut from them")


def stage_distill(run: Run) -> None:
    if not run.unsup_ids or not run.cfg.distill_epochs:
        return
    teacher = torch.load(run.ckpt / "teacher.pt", weights_only=True)
    soft, crop_soft = teacher["probs"], teacher.get("crop_probs", torch.zeros(0))
    crops = run.crop_ids if len(crop_soft) == len(run.crop_ids) else []  # a teacher.pt from before crops: none
    crop_soft = crop_soft if crops else torch.zeros(0)

    def examples(epoch: int):
        synthetic, labels = synthetic_batch(run, 1000 + epoch)
        graded, targets = graded_reviews(run.cfg.graded_per_epoch, seed=run.cfg.seed * 1000 + 2000 + epoch)
        return (run.train_ids + run.unsup_ids + crops + synthetic + run.encode(graded),
                torch.cat([run.train_y.float(), soft, crop_soft, labels, torch.tensor(targets)]))

    fit_lstm(run, "distill", run.cfg.distill_epochs, run.cfg.lr * run.cfg.distill_lr_scale, examples)


def stage_long(run: Run) -> None:
    if not run.cfg.long_epochs:
        return
    fit_lstm(run, "long", run.cfg.long_epochs, run.cfg.lr * run.cfg.long_lr_scale, labelled_and_synthetic(run, 3000),
             max_tokens=run.cfg.long_max_tokens)


def stage_calibrate(run: Run, started: float) -> dict:
    """Blend weights, one calibration per component (for the ablations) and the temperature, all on validation;
    then the artifact."""
    cfg, network = run.cfg, run.network
    comps = predict_components(network, run.val_ids, run.device)
    calibration = {}
    for k, name in enumerate(COMPONENTS[:comps.size(1)]):
        (w,), b = fit_blend(comps[:, k:k + 1], run.val_y)
        calibration[name] = {"weight": w, "bias": b,
                             "val_accuracy": binary_metrics(comps[:, k] * w + b, run.val_y)["accuracy"]}
    if network.config.nb_buckets:
        weights, bias = fit_blend(comps, run.val_y)
        with torch.no_grad():
            network.blend.weight.copy_(torch.tensor([weights]))
            network.blend.bias.fill_(bias)
        run.log(f"blend weights {weights[0]:.3f} (LSTM), {weights[1]:.3f} (n-gram), bias {bias:.3f}")
    val_logits = predict_logits(network, run.val_ids, run.device)
    temperature = fit_temperature(val_logits, run.val_y)
    before, after = binary_metrics(val_logits, run.val_y), binary_metrics(val_logits, run.val_y, temperature)
    run.log(f"temperature {temperature:.3f}: validation accuracy {after['accuracy']:.4f}, ECE {before['ece']:.4f} "
            f"-> {after['ece']:.4f}")
    metrics = {
        "validation": {**after, "ece_before_calibration": before["ece"], "size": len(run.val_ids),
                       "components": {k: v["val_accuracy"] for k, v in calibration.items()}},
        "history": run.progress.get("history", []),
        "best_epoch": run.progress.get("best_epoch"),
        "stages": {k: run.progress[k] for k in ("pretrain", "ngram", "teacher") if k in run.progress},
        "training": {"seconds": round(time.time() - started + run.progress.get("seconds_before", 0.0), 1),
                     "device": str(run.device),
                     "hardware": f"{platform.machine()} {platform.processor() or ''}".strip(),
                     "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "seed": cfg.seed,
                     "train_reviews": len(run.train_ids), "unlabelled_reviews": len(run.unsup_ids),
                     "data": "synthetic smoke corpus" if cfg.smoke else "IMDB aclImdb_v1 (train + unsup splits)",
                     "data_sha256": imdb.sha256_file(cfg.data) if cfg.data and Path(cfg.data).is_file() else None,
                     "git_commit": git_commit(),
                     "config": {k: v for k, v in cfg.__dict__.items() if k not in ("network", "data", "out",
                                                                                  "checkpoint_dir")}},
    }
    network.cpu()
    save_artifact(cfg.out, network, run.tokenizer, name=cfg.name, version=cfg.version, temperature=temperature,
                  metrics=metrics, extra={"max_train_tokens": cfg.max_train_tokens,
                                          "components": {k: {"weight": v["weight"], "bias": v["bias"]}
                                                         for k, v in calibration.items()}})
    network.to(run.device)
    return metrics


def stage_report(run: Run) -> dict | None:
    """The test split, read once at the very end, plus the behavioural probes; stored in metrics.json."""
    from model.artifact import update_metrics
    from model.evaluate import evaluate_artifact

    if run.cfg.smoke or not run.cfg.evaluate_test:
        return None
    report = evaluate_artifact(run.cfg.out, run.cfg.data, device=str(run.device), out_dir=Path(run.cfg.out) / "report")
    update_metrics(run.cfg.out, {"test": report["test"], "ablation": report["ablation"], "probes": report["probes"],
                                 "test_by_length": report["by_length"], "test_throughput": report["throughput"]})
    return report


LSTM_AND_DATA_STAGES = {"prepare": stage_prepare, "pretrain": stage_pretrain, "ngram": stage_ngram,
                        "supervised": stage_supervised, "teacher": stage_teacher, "distill": stage_distill,
                        "long": stage_long}


def train(cfg: TrainConfig) -> dict:
    """Run the stages up to `cfg.until`, write the artifact; returns its metrics."""
    started = time.time()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ckpt = Path(cfg.checkpoint_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    run = Run(cfg, resolve_device(cfg.device), ckpt, (lambda msg: tqdm.write(msg)) if cfg.progress else
              (lambda msg: None))
    progress_path = ckpt / "progress.json"
    if cfg.resume and progress_path.is_file():
        run.progress = json.loads(progress_path.read_text())
    else:
        for old in ckpt.glob("*.pt"):  # a fresh run must not pick up another run's stages
            old.unlink()
    before = run.progress.get("seconds_before", 0.0)
    metrics: dict = {}
    try:
        for stage in STAGES[:STAGES.index(cfg.until) + 1]:
            t0 = time.time()
            if stage == "calibrate":
                metrics = stage_calibrate(run, started)
            elif stage == "report":
                report = stage_report(run)
                if report:
                    metrics.update(test=report["test"], ablation=report["ablation"], probes=report["probes"])
            else:
                LSTM_AND_DATA_STAGES[stage](run)
            run.log(f"stage {stage} done in {time.time() - t0:.0f}s")
    finally:
        run.progress["seconds_before"] = before + time.time() - started
        run.save_progress()
    run.log(f"finished in {time.time() - started:.0f}s ({run.progress['seconds_before']:.0f}s over all runs)")
    return metrics
