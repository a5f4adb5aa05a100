"""Train the sentiment LSTM on IMDB and write a versioned artifact folder.

    python -m model.train --data ../shared/data/aclImdb_v1.tar.gz            # full training (make train)
    python -m model.train --smoke --out /tmp/artifact                        # seconds, synthetic text

Validation is carved out of train (seeded, stratified) and drives early stopping, model selection and the
temperature; the test split is read once, at the end, for the report stored in metrics.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from model import data as imdb
from model.artifact import DEFAULT_ARTIFACT, save_artifact
from model.calibration import brier_score, expected_calibration_error, fit_blend, fit_temperature
from model.network import NetworkConfig, SentimentLSTM
from model.ngram import fit_ngram_branch
from model.predictor import plan_batches, resolve_device
from model.pretrain import cooccurrence, lm_pretrain, ppmi_svd
from model.tokenizer import UNK_ID, build_tokenizer, load_tokenizer


@dataclass
class TrainConfig:
    data: str | None = None
    out: str = str(DEFAULT_ARTIFACT)
    checkpoint_dir: str = "runs/latest"
    resume: bool = False
    seed: int = 13
    device: str = "auto"
    threads: int = 0
    epochs: int = 4
    patience: int = 2
    stop_after: int = 0
    wide_lr_scale: float = 50.0
    self_train_rounds: int = 1
    self_train_epochs: int = 2
    self_train_threshold: float = 0.9
    self_train_lr_scale: float = 0.5
    nb_epochs: int = 2
    lm_epochs: int = 0
    lm_lr: float = 2e-3
    lm_negatives: int = 1024
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-2
    clip: float = 1.0
    val_fraction: float = 0.1
    max_train_tokens: int = 400
    vocab_size: int = 30000
    lowercase: bool = True
    pretrain_embeddings: bool = True
    train_limit: int = 0
    name: str = "imdb-lstm"
    version: str = "2.0.0"
    evaluate_test: bool = True
    smoke: bool = False
    progress: bool = True
    network: NetworkConfig = field(default_factory=NetworkConfig)


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def smoke_corpus(n: int, seed: int) -> tuple[list[imdb.Review], list[imdb.Review], list[imdb.Review]]:
    """Synthetic (train, validation, unlabelled) reviews, no dataset needed: sentiment words in neutral filler."""
    rng = random.Random(seed)
    good = "great wonderful superb brilliant loved moving excellent fun".split()
    bad = "awful boring terrible worst waste dull stupid bad".split()
    filler = "the movie film plot actor scene story it was and a of this i with".split()
    reviews = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(filler) for _ in range(rng.randint(5, 40))]
        for _ in range(rng.randint(1, 4)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(good if label else bad))
        reviews.append(imdb.Review(" ".join(words).capitalize() + ".<br /><br />", label, 8 if label else 2, "train"))
    train_set, val_set = imdb.stratified_split(reviews[: n * 4 // 5], 0.25, seed)
    unlabelled = [imdb.Review(r.text, -1, 0, "unsup") for r in reviews[n * 4 // 5:]]
    return train_set, val_set, unlabelled


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def bucket_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length rows: sort within large random pools, so padding stays small."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def make_batch(seqs: list[list[int]], max_tokens: int, rng: random.Random | None,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and lengths; during training a long review contributes a random window of it."""
    rows = []
    for ids in seqs:
        ids = ids or [UNK_ID]
        if max_tokens and len(ids) > max_tokens and rng is not None:
            start = rng.randrange(len(ids) - max_tokens + 1)
            ids = ids[start:start + max_tokens]
        rows.append(ids)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    batch = torch.zeros((len(rows), int(lengths.max())), dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return batch.to(device), lengths.to(device)


@torch.inference_mode()
def predict_logits(network: SentimentLSTM, seqs: list[list[int]], device: torch.device,
                   batch_tokens: int = 65536, blend_inputs: bool = False) -> torch.Tensor:
    """Uncalibrated logits of whole reviews (no cropping), in input order (or the blend's [N, 2] inputs)."""
    network.eval()
    out = torch.empty((len(seqs), 2) if blend_inputs else len(seqs))
    for idx in plan_batches([max(1, len(s)) for s in seqs], 256, batch_tokens):
        ids, lengths = make_batch([seqs[i] for i in idx], 0, None, device)
        out[idx] = (network.blend_inputs(ids, lengths) if blend_inputs else network(ids, lengths)).float().cpu()
    return out


def load_lstm_weights(network: SentimentLSTM, state: dict) -> None:
    """Load a checkpoint's weights, except the n-gram branch and blend: those are fitted after the LSTM stages, on
    every run (a resume of a finished run re-fits them, e.g. with other --nb-* settings)."""
    fitted_later = ("ngram.", "blend.")
    missing, unexpected = network.load_state_dict({k: v for k, v in state.items() if not k.startswith(fitted_later)},
                                                  strict=False)
    missing = [k for k in missing if not k.startswith(fitted_later)]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint does not match the network: missing {missing}, unexpected {unexpected}")


def binary_metrics(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict:
    probs = torch.sigmoid(logits / temperature)
    return {"accuracy": float(((probs >= 0.5).long() == labels).double().mean()),
            "ece": expected_calibration_error(probs, labels), "brier": brier_score(probs, labels),
            "nll": float(nn.functional.binary_cross_entropy(probs.double(), labels.double()))}


def pretrained_embeddings(tokenizer, texts: list[str], dim: int, seed: int) -> torch.Tensor:
    seqs = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    vocab = tokenizer.get_vocab_size()
    counts = cooccurrence(seqs, vocab, contexts=min(vocab, 10000), window=5)
    vectors = ppmi_svd(counts, dim, seed)
    vectors[0] = 0.0  # padding row
    return vectors


def make_optimiser(network: SentimentLSTM, cfg: TrainConfig, reviews: int, epochs: int, stage: int):
    """AdamW with warm-up and cosine decay. The wide n-gram weights get a much larger rate and no decay: each
    one is touched by few reviews and scaled down by the review length, so at the LSTM's rate it barely moves."""
    named = [(n, p) for n, p in network.named_parameters() if not n.startswith(("ngram.", "blend."))]  # fitted later
    wide = [p for n, p in named if n.startswith(("unigram_weights", "bigram_weights"))]
    rest = [p for n, p in named if not n.startswith(("unigram_weights", "bigram_weights"))]
    lr = cfg.lr * (cfg.self_train_lr_scale if stage else 1.0)
    groups = [{"params": rest, "lr": lr, "weight_decay": cfg.weight_decay}]
    if wide:
        groups.append({"params": wide, "lr": lr * cfg.wide_lr_scale, "weight_decay": 0.0})
    optimiser = torch.optim.AdamW(groups)
    steps_per_epoch = math.ceil(reviews / cfg.batch_size)
    total_steps = steps_per_epoch * epochs
    warmup = max(1, steps_per_epoch // 4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total_steps))))
    return optimiser, scheduler


def train_epoch(network, optimiser, scheduler, ids_list, labels, cfg: TrainConfig, rng: random.Random,
                device: torch.device, loss_fn, desc: str) -> float:
    network.train()
    batches = bucket_batches([min(len(s), cfg.max_train_tokens) for s in ids_list], cfg.batch_size, rng)
    bar = tqdm(batches, desc=desc, disable=not cfg.progress, unit="batch", dynamic_ncols=True)
    running = 0.0
    for step, idx in enumerate(bar, 1):
        ids, lengths = make_batch([ids_list[i] for i in idx], cfg.max_train_tokens, rng, device)
        y = labels[idx].float().to(device)
        branches = network.branch_logits(ids, lengths)
        loss = loss_fn(branches.sum(-1), y)
        if branches.size(-1) > 1:
            # Each branch must also classify on its own, so neither can coast on the other.
            loss = loss + sum(loss_fn(branches[:, k], y) for k in range(branches.size(-1))) / branches.size(-1)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(network.parameters(), cfg.clip)
        optimiser.step()
        scheduler.step()
        running += (loss.item() - running) / min(step, 50)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{running:.4f}")
    return running


def pseudo_labels(network, ckpt_dir: Path, stage: int, unsup, tokenizer, cfg: TrainConfig, device, log):
    """Self-training: the unlabelled reviews the current best model is confident about, with its labels.

    Saved per stage so a resumed run trains on exactly the same set. Classes are balanced by keeping the most
    confident reviews of the larger class, so the pseudo-labels cannot drift the prior.
    """
    path = ckpt_dir / f"pseudo-{stage}.pt"
    ids = [e.ids for e in tokenizer.encode_batch([r.text for r in unsup], add_special_tokens=False)]
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        index, labels = saved["index"], saved["labels"]
    else:
        t0 = time.time()
        probs = torch.sigmoid(predict_logits(network, ids, device))
        pos = torch.nonzero(probs >= cfg.self_train_threshold).squeeze(1)
        neg = torch.nonzero(probs <= 1 - cfg.self_train_threshold).squeeze(1)
        k = min(len(pos), len(neg))
        pos = pos[torch.argsort(probs[pos], descending=True)[:k]]
        neg = neg[torch.argsort(probs[neg])[:k]]
        index = torch.cat([pos, neg])
        labels = torch.cat([torch.ones(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)])
        torch.save({"index": index, "labels": labels}, path)
        log(f"self-training: {len(index)} of {len(unsup)} unlabelled reviews pseudo-labelled "
            f"(confidence >= {cfg.self_train_threshold}, balanced) in {time.time() - t0:.0f}s")
    return [ids[i] for i in index.tolist()], labels


def train(cfg: TrainConfig, cache: dict | None = None) -> dict:
    """Train, select the best epoch on validation, calibrate, write the artifact; returns the metrics.

    `cache` (a dict kept by the caller) memoises the dataset, tokenizer and word vectors across calls with the
    same data settings, so a hyperparameter search pays for them once.
    """
    cache = {} if cache is None else cache
    started = time.time()
    set_seed(cfg.seed)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    log = (lambda msg: tqdm.write(msg)) if cfg.progress else (lambda msg: None)

    unsup: list[imdb.Review] = []
    data_sha = None
    if cfg.smoke:
        train_set, val_set, unsup = smoke_corpus(500, cfg.seed)
    else:
        if not cfg.data:
            raise SystemExit("--data PATH is required (the aclImdb_v1.tar.gz archive or its folder), or --download")
        uses_unsup = cfg.pretrain_embeddings or cfg.self_train_rounds or cfg.lm_epochs
        splits = ("train", "unsup") if uses_unsup else ("train",)
        key = ("data", cfg.data, splits)
        if key not in cache:
            cache[key] = imdb.load_splits(cfg.data, splits)
        loaded = cache[key]
        train_set, val_set = imdb.stratified_split(loaded["train"], cfg.val_fraction, cfg.seed)
        unsup = loaded.get("unsup", [])
        if Path(cfg.data).is_file():
            data_sha = imdb.sha256_file(cfg.data)
    if cfg.train_limit:
        train_set = train_set[:cfg.train_limit]
    log(f"train {len(train_set)}  validation {len(val_set)}  unlabelled {len(unsup)}  device {device}")

    corpus = [r.text for r in train_set] + [r.text for r in unsup]  # never validation or test text
    ckpt_dir = Path(cfg.checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    resuming = cfg.resume and (ckpt_dir / "last.pt").is_file()
    key = ("tokenizer", cfg.data, cfg.seed, cfg.smoke, len(corpus), cfg.vocab_size, cfg.lowercase)
    if resuming and (ckpt_dir / "tokenizer.json").is_file():
        tokenizer = load_tokenizer(str(ckpt_dir / "tokenizer.json"))  # the checkpoint's ids, exactly
    else:
        if key not in cache:
            cache[key] = build_tokenizer(corpus, vocab_size=cfg.vocab_size, min_frequency=1 if cfg.smoke else 3,
                                         lowercase=cfg.lowercase)
        tokenizer = cache[key]
        tokenizer.save(str(ckpt_dir / "tokenizer.json"))
    net_cfg = NetworkConfig(**{**cfg.network.to_dict(), "vocab_size": tokenizer.get_vocab_size()})
    network = SentimentLSTM(net_cfg)
    if cfg.pretrain_embeddings and not cfg.smoke and not resuming:  # a resume loads trained weights anyway
        t0 = time.time()
        key = key + ("vectors", net_cfg.embed_dim)
        if key not in cache:
            cache[key] = pretrained_embeddings(tokenizer, corpus, net_cfg.embed_dim, cfg.seed)
        with torch.no_grad():
            network.embedding.weight.copy_(cache[key])
        log(f"PPMI-SVD embeddings from {len(corpus)} reviews in {time.time() - t0:.0f}s")
    network.to(device)

    def encode(reviews: list[imdb.Review]) -> tuple[list[list[int]], torch.Tensor]:
        enc = tokenizer.encode_batch([r.text for r in reviews], add_special_tokens=False)
        return [e.ids for e in enc], torch.tensor([r.label for r in reviews])

    train_ids, train_y = encode(train_set)
    val_ids, val_y = encode(val_set)
    if cfg.lm_epochs and unsup:
        lm_path = ckpt_dir / "lm.pt"  # pre-training is done once per run; a resume reuses it
        if cfg.resume and lm_path.is_file():
            load_lstm_weights(network, torch.load(lm_path, map_location=device, weights_only=True))
            log(f"language-model pre-training loaded from {lm_path}")
        else:
            t0 = time.time()
            lm_text = train_ids + [e.ids for e in tokenizer.encode_batch([r.text for r in unsup],
                                                                        add_special_tokens=False)]
            lm_pretrain(network, lm_text, epochs=cfg.lm_epochs, batch_size=cfg.batch_size,
                        max_tokens=cfg.max_train_tokens, lr=cfg.lm_lr, negatives=cfg.lm_negatives, seed=cfg.seed,
                        device=device, progress=cfg.progress, log=log)
            torch.save(network.state_dict(), lm_path)
            log(f"language-model pre-training on {len(lm_text)} reviews in {time.time() - t0:.0f}s")
    stage_epochs = [cfg.epochs] + [cfg.self_train_epochs] * (cfg.self_train_rounds if unsup else 0)
    state = {"epoch": 0, "best_accuracy": -1.0, "best_epoch": 0, "history": [], "stage": 0, "stage_start": 0}
    saved = None
    if cfg.resume and (ckpt_dir / "last.pt").is_file():
        saved = torch.load(ckpt_dir / "last.pt", map_location=device, weights_only=False)  # our own checkpoint
        load_lstm_weights(network, saved["network"])
        random.setstate(saved["python_rng"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        log(f"resumed from {ckpt_dir / 'last.pt'} after epoch {state['epoch']} (stage {state['stage'] + 1})")

    loss_fn = nn.BCEWithLogitsLoss()
    rng = random.Random(cfg.seed)  # batch order and crops; saved with each checkpoint so a resume is exact
    if "batch_rng" in state:
        rng.setstate(state.pop("batch_rng"))
    epochs_this_run = 0
    while state["stage"] < len(stage_epochs):
        stage = state["stage"]
        fit_ids, fit_y = train_ids, train_y
        if stage > 0:
            pseudo_ids, pseudo_y = pseudo_labels(network, ckpt_dir, stage, unsup, tokenizer, cfg, device, log)
            fit_ids, fit_y = train_ids + pseudo_ids, torch.cat([train_y, pseudo_y])
        optimiser, scheduler = make_optimiser(network, cfg, len(fit_ids), stage_epochs[stage], stage)

        def stage_running() -> bool:
            return (state["epoch"] - state["stage_start"] < stage_epochs[stage]
                    and state["epoch"] - max(state["best_epoch"], state["stage_start"]) < cfg.patience)

        if saved is not None and stage_running():
            # Mid-stage: the optimiser and schedule continue. (A checkpoint from a finished stage carries nothing
            # over: the next stage starts its own schedule.)
            optimiser.load_state_dict(saved["optimiser"])
            scheduler.load_state_dict(saved["scheduler"])
        saved = None
        while stage_running():
            if cfg.stop_after and epochs_this_run == cfg.stop_after:
                log(f"stopping after {epochs_this_run} epoch(s) as asked; continue with --resume")
                return {"history": state["history"], "stopped_early": True}
            epochs_this_run += 1
            epoch = state["epoch"] + 1
            running = train_epoch(network, optimiser, scheduler, fit_ids, fit_y, cfg, rng, device, loss_fn,
                                  desc=f"epoch {epoch} (stage {stage + 1}/{len(stage_epochs)})")
            val = binary_metrics(predict_logits(network, val_ids, device), val_y)
            state["epoch"] = epoch
            state["history"].append({"epoch": epoch, "stage": stage + 1, "train_reviews": len(fit_ids),
                                     "train_loss": running, **{f"val_{k}": v for k, v in val.items()}})
            if val["accuracy"] > state["best_accuracy"]:
                state["best_accuracy"], state["best_epoch"] = val["accuracy"], epoch
                torch.save(network.state_dict(), ckpt_dir / "best.pt")
            log(f"epoch {epoch}: train loss {running:.4f}  val accuracy {val['accuracy']:.4f}  val nll "
                f"{val['nll']:.4f}  (best {state['best_accuracy']:.4f} @ {state['best_epoch']})")
            elapsed = state.get("seconds_before_resume", 0.0) + time.time() - started
            torch.save({"network": network.state_dict(), "optimiser": optimiser.state_dict(),
                        "scheduler": scheduler.state_dict(), "python_rng": random.getstate(),
                        "torch_rng": torch.get_rng_state(),
                        "state": {**state, "batch_rng": rng.getstate(), "seconds_before_resume": elapsed}},
                       ckpt_dir / "last.pt")
        state["stage"] += 1
        state["stage_start"] = state["epoch"]
        if state["stage"] < len(stage_epochs):
            # The next stage starts from the best weights so far, not from the last (possibly over-fitted) ones.
            load_lstm_weights(network, torch.load(ckpt_dir / "best.pt", map_location=device, weights_only=True))

    load_lstm_weights(network, torch.load(ckpt_dir / "best.pt", map_location=device, weights_only=True))
    blend = None
    if net_cfg.nb_buckets:
        t0 = time.time()
        fit_ngram_branch(network.ngram, lambda seqs: make_batch(seqs, 0, None, device), train_ids, train_y,
                         epochs=cfg.nb_epochs, seed=cfg.seed, progress=cfg.progress)
        inputs = predict_logits(network, val_ids, device, blend_inputs=True)
        weights, bias = fit_blend(inputs, val_y)
        with torch.no_grad():
            network.blend.weight.copy_(torch.tensor([weights]))
            network.blend.bias.fill_(bias)
        alone = [binary_metrics(inputs[:, k], val_y)["accuracy"] for k in (0, 1)]
        blend = {"weights": weights, "bias": bias, "val_accuracy_lstm": alone[0], "val_accuracy_ngram": alone[1]}
        log(f"n-gram branch in {time.time() - t0:.0f}s: validation accuracy LSTM {alone[0]:.4f}, n-gram "
            f"{alone[1]:.4f}; blend weights {weights[0]:.3f}, {weights[1]:.3f}")
    val_logits = predict_logits(network, val_ids, device)
    temperature = fit_temperature(val_logits, val_y)
    before, after = binary_metrics(val_logits, val_y), binary_metrics(val_logits, val_y, temperature)
    log(f"temperature {temperature:.3f}: validation ECE {before['ece']:.4f} -> {after['ece']:.4f}")
    # Time spent by earlier runs of a resumed training counts too (their epochs are in the checkpoint).
    train_seconds = time.time() - started + state.get("seconds_before_resume", 0.0)
    metrics = {
        "validation": {**after, "ece_before_calibration": before["ece"], "size": len(val_ids)},
        "history": state["history"],
        "best_epoch": state["best_epoch"],
        "blend": blend,
        "training": {"seconds": round(train_seconds, 1), "device": str(device),
                     "hardware": f"{platform.machine()} {platform.processor() or ''}".strip(),
                     "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "seed": cfg.seed,
                     "train_reviews": len(train_ids), "unlabelled_reviews": len(unsup),
                     "data": "synthetic smoke corpus" if cfg.smoke else "IMDB aclImdb_v1 (train split)",
                     "data_sha256": data_sha, "git_commit": git_commit(),
                     "config": {k: v for k, v in cfg.__dict__.items() if k not in ("network", "data", "out",
                                                                                  "checkpoint_dir")}},
    }
    extra = {"max_train_tokens": cfg.max_train_tokens}
    network.cpu()
    save_artifact(cfg.out, network, tokenizer, name=cfg.name, version=cfg.version, temperature=temperature,
                  metrics=metrics, extra=extra)
    if cfg.evaluate_test and not cfg.smoke:
        from model.artifact import update_metrics
        from model.evaluate import evaluate_artifact
        report = evaluate_artifact(cfg.out, cfg.data, device=str(device), out_dir=Path(cfg.out) / "report")
        metrics["test"] = report["metrics"]
        update_metrics(cfg.out, {"test": report["metrics"], "test_by_length": report["by_length"],
                                 "test_throughput": report["throughput"]})
    log(f"artifact written to {cfg.out} in {time.time() - started:.0f}s")
    return metrics


def add_network_args(parser: argparse.ArgumentParser) -> None:
    d = NetworkConfig()
    g = parser.add_argument_group("network")
    g.add_argument("--embed-dim", type=int, default=d.embed_dim, help="token embedding size")
    g.add_argument("--hidden-dim", type=int, default=d.hidden_dim, help="LSTM hidden size per direction")
    g.add_argument("--layers", type=int, default=d.num_layers, help="stacked LSTM layers")
    g.add_argument("--unidirectional", action="store_true", help="forward LSTM only")
    g.add_argument("--pooling", choices=["last", "max_mean", "attention"], default=d.pooling,
                   help="how per-token outputs become one vector")
    g.add_argument("--dropout", type=float, default=d.dropout, help="dropout between layers and in the head")
    g.add_argument("--embed-dropout", type=float, default=d.embed_dropout, help="dropout on embeddings")
    g.add_argument("--ngram-buckets", type=int, default=None,
                   help=f"hash buckets of the wide unigram+bigram branch (0 disables it; default {d.ngram_buckets}, "
                        f"0 with --smoke)")
    g.add_argument("--nb-buckets", type=int, default=d.nb_buckets,
                   help=f"hash buckets of the NB-weighted n-gram model blended with the LSTM (0 disables it; "
                        f"default {d.nb_buckets}, 4096 with --smoke)")
    g.add_argument("--nb-order", type=int, default=d.nb_order, help="longest n-gram of that model")


def network_from_args(args: argparse.Namespace) -> NetworkConfig:
    return NetworkConfig(embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, num_layers=args.layers,
                         bidirectional=not args.unidirectional, pooling=args.pooling, dropout=args.dropout,
                         embed_dropout=args.embed_dropout, nb_buckets=args.nb_buckets, nb_order=args.nb_order,
                         ngram_buckets=NetworkConfig().ngram_buckets if args.ngram_buckets is None else args.ngram_buckets)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m model.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="aclImdb_v1.tar.gz or its extracted folder")
    p.add_argument("--download", metavar="DEST", help="download the official archive to DEST (checksum checked) "
                                                      "and train on it")
    p.add_argument("--out", default=d.out, help="artifact folder to write (default: the shipped one)")
    p.add_argument("--checkpoint-dir", default=d.checkpoint_dir, help="where per-epoch checkpoints go")
    p.add_argument("--resume", action="store_true", help="continue from CHECKPOINT_DIR/last.pt")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for the split, init and batch order")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: torch default)")
    p.add_argument("--epochs", type=int, default=None, help=f"maximum epochs (default {d.epochs}; 6 with --smoke)")
    p.add_argument("--stop-after", type=int, default=0, help="end this run after N epochs, keeping the checkpoint "
                                                             "(time-boxing; continue with --resume)")
    p.add_argument("--patience", type=int, default=d.patience, help="stop after this many epochs without a "
                                                                    "better validation accuracy")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="reviews per training step")
    p.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate (cosine decay)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="share of train held out")
    p.add_argument("--max-train-tokens", type=int, default=d.max_train_tokens,
                   help="training reads a random window of this many tokens of longer reviews (inference "
                        "always reads the whole review)")
    p.add_argument("--vocab-size", type=int, default=d.vocab_size, help="BPE vocabulary size")
    p.add_argument("--cased", action="store_true", help="keep letter case in the tokenizer")
    p.add_argument("--no-pretrain", action="store_true", help="random embeddings instead of PPMI-SVD vectors "
                                                              "learned on train+unsup")
    p.add_argument("--self-train", type=int, default=None, metavar="ROUNDS",
                   help="self-training rounds: after training, add the unlabelled reviews the model is confident "
                        f"about, with its labels, and train on (0: off; default {d.self_train_rounds}, 0 with --smoke)")
    p.add_argument("--self-train-epochs", type=int, default=d.self_train_epochs, help="epochs per self-training round")
    p.add_argument("--self-train-threshold", type=float, default=d.self_train_threshold,
                   help="minimum confidence for a pseudo-label")
    p.add_argument("--lm-epochs", type=int, default=0, help="epochs of language-model pre-training of the "
                                                            "embedding and LSTM on train+unlabelled text (0: off)")
    p.add_argument("--lm-negatives", type=int, default=d.lm_negatives, help="sampled-softmax negatives per batch "
                                                                             "in language-model pre-training")
    p.add_argument("--nb-epochs", type=int, default=d.nb_epochs, help="epochs of the n-gram branch's fit")
    p.add_argument("--wide-lr-scale", type=float, default=d.wide_lr_scale,
                   help="learning-rate multiplier of the n-gram branch")
    p.add_argument("--train-limit", type=int, default=0, help="use only the first N training reviews")
    p.add_argument("--version", default=d.version, help="artifact version string")
    p.add_argument("--no-test", action="store_true", help="skip the final test-split report")
    p.add_argument("--smoke", action="store_true", help="tiny model on synthetic text, seconds; for tests and CI")
    add_network_args(p)
    a = p.parse_args(argv)
    data = a.data
    if a.download:
        bar = tqdm(unit="B", unit_scale=True, desc="download")

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        data = str(imdb.download(a.download, progress=progress))
        bar.close()
    net = network_from_args(a)
    if a.smoke:
        net = NetworkConfig(embed_dim=16, hidden_dim=16, pooling=a.pooling, ngram_buckets=a.ngram_buckets and 4096 or 0,
                            nb_buckets=a.nb_buckets and 4096, nb_order=a.nb_order)
    return TrainConfig(
        data=data, out=a.out, checkpoint_dir=a.checkpoint_dir, resume=a.resume, seed=a.seed, device=a.device,
        threads=a.threads, epochs=a.epochs or (6 if a.smoke else d.epochs), patience=a.patience,
        stop_after=a.stop_after,
        batch_size=16 if a.smoke else a.batch_size,
        lr=1e-2 if a.smoke else a.lr, weight_decay=a.weight_decay, val_fraction=a.val_fraction,
        max_train_tokens=a.max_train_tokens, vocab_size=500 if a.smoke else a.vocab_size, lowercase=not a.cased,
        pretrain_embeddings=not a.no_pretrain, train_limit=a.train_limit, self_train_rounds=(0 if a.smoke else d.self_train_rounds) if a.self_train is None else a.self_train,
        self_train_epochs=a.self_train_epochs, self_train_threshold=a.self_train_threshold,
        wide_lr_scale=a.wide_lr_scale, nb_epochs=a.nb_epochs, lm_epochs=a.lm_epochs, lm_negatives=a.lm_negatives, version=a.version,
        evaluate_test=not a.no_test, smoke=a.smoke, network=net)


def main(argv: list[str] | None = None) -> int:
    metrics = train(parse_args(argv))
    if metrics.get("stopped_early"):
        return 0
    print(json.dumps({"validation": metrics["validation"], "test": metrics.get("test")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
