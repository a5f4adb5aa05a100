"""Train the sentiment LSTM on IMDB and write a versioned artifact folder.

    python -m model.train --data ../shared/data/aclImdb_v1.tar.gz            # full training (make train)
    python -m model.train --data ... --device cuda                            # the same on a GPU
    python -m model.train --smoke --out /tmp/artifact                        # seconds, synthetic text

Stages (prepare, pretrain, ngram, supervised, teacher, distill, long, calibrate, report) save their results in
--checkpoint-dir; --resume continues a stopped run, --until ends after a stage. Validation is carved out of train
(seeded, stratified) and picks every weight and setting; the test split is read once, by the report stage.
"""

from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from model import data as imdb
from model.network import NetworkConfig
from model.training.config import STAGES, TrainConfig
from model.training.pipeline import train


def build_parser() -> argparse.ArgumentParser:
    d, n = TrainConfig(), NetworkConfig()
    p = argparse.ArgumentParser(prog="python -m model.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="aclImdb_v1.tar.gz or its extracted folder")
    p.add_argument("--download", metavar="DEST", help="download the official archive to DEST (checksum checked) "
                                                      "and train on it")
    p.add_argument("--out", default=d.out, help="artifact folder to write (default: the shipped one)")
    p.add_argument("--checkpoint-dir", default=d.checkpoint_dir, help="where each stage's results go")
    p.add_argument("--resume", action="store_true", help="continue the run in CHECKPOINT_DIR: finished stages "
                                                         "are loaded, an LSTM stage resumes after its last epoch")
    p.add_argument("--until", choices=STAGES, default=d.until, help="stop after this stage (continue with --resume)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for the split, init, batch order and synthetic text")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: torch default)")
    p.add_argument("--lm-epochs", type=int, default=d.lm_epochs,
                   help="epochs of language-model pre-training of the embedding and LSTMs on train + unlabelled "
                        "reviews, before the supervised stage (0: skip it)")
    p.add_argument("--lm-lr", type=float, default=d.lm_lr, help="peak AdamW learning rate of that pre-training")
    p.add_argument("--lm-negatives", type=int, default=d.lm_negatives,
                   help="vocabulary ids sampled per batch as the sampled softmax's negatives")
    p.add_argument("--lm-max-tokens", type=int, default=d.lm_max_tokens,
                   help="pre-training reads a random window of this many tokens of longer reviews")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs of the supervised stage (default {d.epochs}; "
                                                           f"6 with --smoke)")
    p.add_argument("--distill-epochs", type=int, default=None,
                   help=f"epochs of the distillation stage over labelled + unlabelled reviews, taught by the blend "
                        f"of the LSTM and the n-gram model (0: skip it; default {d.distill_epochs}; 1 with --smoke, "
                        f"which runs at most 1)")
    p.add_argument("--long-epochs", type=int, default=d.long_epochs,
                   help="epochs of the last LSTM stage, on the labelled reviews read in windows of --long-max-tokens "
                        "(0: skip it)")
    p.add_argument("--long-max-tokens", type=int, default=d.long_max_tokens,
                   help="the window of that stage: long reviews, cropped to --max-train-tokens before, read nearly "
                        "whole")
    p.add_argument("--long-lr-scale", type=float, default=d.long_lr_scale,
                   help="that stage's peak rate as a share of --lr")
    p.add_argument("--patience", type=int, default=d.patience, help="end an LSTM stage after this many epochs "
                                                                    "without a better validation accuracy")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="reviews per training step")
    p.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate (warm-up, cosine decay)")
    p.add_argument("--distill-lr-scale", type=float, default=d.distill_lr_scale,
                   help="the distillation stage's peak rate as a share of --lr")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--adversarial-eps", type=float, default=d.adversarial_eps,
                   help="size of the adversarial perturbation of each review's embeddings, in units of the "
                        "embeddings' RMS (0: no adversarial training, half the cost per step)")
    p.add_argument("--synthetic", type=int, default=d.synthetic_per_epoch,
                   help="synthetic negation/contrast sentences mixed into each LSTM epoch (0: none)")
    p.add_argument("--graded", type=int, default=d.graded_per_epoch,
                   help="graded-intensity sentences (soft targets) added to each distillation epoch")
    p.add_argument("--crops", type=int, default=d.crops,
                   help="sentences cut from unlabelled reviews, labelled by the teacher, for distillation (0: none)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="share of train held out")
    p.add_argument("--max-train-tokens", type=int, default=d.max_train_tokens,
                   help="training reads a random window of this many tokens of longer reviews (inference "
                        "always reads the whole review)")
    p.add_argument("--vocab-size", type=int, default=d.vocab_size, help="BPE vocabulary size")
    p.add_argument("--cased", action="store_true", help="keep letter case in the tokenizer")
    p.add_argument("--no-pretrain", action="store_true", help="random embeddings instead of PPMI-SVD vectors "
                                                              "learned on train+unsup")
    p.add_argument("--nb-epochs", type=int, default=d.nb_epochs, help="epochs of the n-gram model's fit")
    p.add_argument("--train-limit", type=int, default=0, help="use only the first N training reviews")
    p.add_argument("--unsup-limit", type=int, default=0, help="use only the first N unlabelled reviews")
    p.add_argument("--version", default=d.version, help="artifact version string")
    p.add_argument("--no-test", action="store_true", help="skip the test-split report")
    p.add_argument("--smoke", action="store_true", help="tiny model on synthetic text, seconds; for tests and CI")
    g = p.add_argument_group("network")
    g.add_argument("--embed-dim", type=int, default=n.embed_dim, help="token embedding size")
    g.add_argument("--hidden-dim", type=int, default=n.hidden_dim, help="LSTM hidden size per direction")
    g.add_argument("--layers", type=int, default=n.num_layers, help="stacked LSTM layers")
    g.add_argument("--unidirectional", action="store_true", help="forward LSTM only")
    g.add_argument("--pooling", choices=["last", "max_mean", "attention"], default=n.pooling,
                   help="how per-token outputs become one vector")
    g.add_argument("--dropout", type=float, default=n.dropout, help="dropout between layers and in the head")
    g.add_argument("--embed-dropout", type=float, default=n.embed_dropout, help="dropout on embeddings")
    g.add_argument("--nb-buckets", type=int, default=n.nb_buckets,
                   help=f"hash buckets of the NB-weighted n-gram model blended with the LSTM (0: the LSTM alone; "
                        f"default {n.nb_buckets}, 4096 with --smoke)")
    g.add_argument("--nb-order", type=int, default=n.nb_order, help="longest n-gram of that model")
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    a = build_parser().parse_args(argv)
    d = TrainConfig()
    data = a.data
    distill = a.distill_epochs if a.distill_epochs is not None else (1 if a.smoke else d.distill_epochs)
    if a.download:
        bar = tqdm(unit="B", unit_scale=True, desc="download")

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        data = str(imdb.download(a.download, progress=progress))
        bar.close()
    if a.smoke:
        net = NetworkConfig(embed_dim=16, hidden_dim=16, pooling=a.pooling, nb_buckets=a.nb_buckets and 4096,
                            nb_order=a.nb_order)
    else:
        net = NetworkConfig(embed_dim=a.embed_dim, hidden_dim=a.hidden_dim, num_layers=a.layers,
                            bidirectional=not a.unidirectional, pooling=a.pooling, dropout=a.dropout,
                            embed_dropout=a.embed_dropout, nb_buckets=a.nb_buckets, nb_order=a.nb_order)
    return TrainConfig(
        data=data, out=a.out, checkpoint_dir=a.checkpoint_dir, resume=a.resume, until=a.until, seed=a.seed,
        device=a.device, threads=a.threads, lm_epochs=min(a.lm_epochs, 1) if a.smoke else a.lm_epochs, lm_lr=a.lm_lr,
        lm_negatives=min(a.lm_negatives, 64) if a.smoke else a.lm_negatives, lm_max_tokens=a.lm_max_tokens,
        epochs=a.epochs or (6 if a.smoke else d.epochs),
        # Smoke runs keep at most one distillation epoch: with two, the tiny model separates its synthetic validation
        # split perfectly, the temperature collapses and every probability saturates (tests need graded ones).
        distill_epochs=(min(distill, 1) if a.smoke else distill), patience=a.patience,
        batch_size=16 if a.smoke else a.batch_size, lr=1e-2 if a.smoke else a.lr,
        distill_lr_scale=a.distill_lr_scale, long_epochs=a.long_epochs, long_max_tokens=a.long_max_tokens,
        long_lr_scale=a.long_lr_scale, weight_decay=a.weight_decay, adversarial_eps=a.adversarial_eps,
        synthetic_per_epoch=min(a.synthetic, 200) if a.smoke else a.synthetic,
        graded_per_epoch=min(a.graded, 100) if a.smoke else a.graded, crops=min(a.crops, 100) if a.smoke else a.crops,
        nb_epochs=a.nb_epochs, val_fraction=a.val_fraction, max_train_tokens=a.max_train_tokens,
        vocab_size=500 if a.smoke else a.vocab_size, lowercase=not a.cased, pretrain_embeddings=not a.no_pretrain,
        train_limit=a.train_limit, unsup_limit=a.unsup_limit, version=a.version, evaluate_test=not a.no_test,
        smoke=a.smoke, network=net)


def main(argv: list[str] | None = None) -> int:
    metrics = train(parse_args(argv))
    print(json.dumps({k: metrics.get(k) for k in ("validation", "test", "ablation", "probes")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
