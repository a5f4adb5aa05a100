"""The NB-weighted n-gram branch: features, padding invariance, and that fitting learns from real signal."""

import random

import pytest
import torch

from model.ngram import NgramBranch, present_ngrams
from model.training.batches import make_batch
from model.training.ngram_fit import fit_ngram_branch, log_count_ratio

VOCAB, BUCKETS = 20, 200


def features(ids: list[int]) -> list[int]:
    grams, keep = present_ngrams(torch.tensor([ids]), torch.tensor([len(ids)]), VOCAB, BUCKETS, 2)
    return sorted(grams[keep].tolist())


def test_each_present_ngram_counts_once_and_padding_is_ignored():
    ids = [5, 6, 5, 6, 7]
    got = features(ids)
    assert len(got) == len(set(got))  # presence, not counts
    assert [g for g in got if g < VOCAB] == [5, 6, 7]  # unigrams keep their token ids
    assert len([g for g in got if g >= VOCAB]) == 3  # bigrams (5,6), (6,5), (6,7)
    padded = torch.tensor([ids + [9, 9, 9], [1] * 8])
    grams, keep = present_ngrams(padded, torch.tensor([5, 8]), VOCAB, BUCKETS, 2)
    assert sorted(grams[0][keep[0]].tolist()) == got
    grams, keep = present_ngrams(padded, torch.tensor([5, 8]), VOCAB, BUCKETS, 3)
    assert keep[0].sum() == 3 + 3 + 3  # and trigrams (5,6,5), (6,5,6), (5,6,7)
    assert keep[1].sum() == 3  # [1] * 8: one unigram, one bigram, one trigram


def test_buckets_must_exceed_the_vocabulary():
    with pytest.raises(ValueError, match="must exceed the vocabulary"):
        NgramBranch(VOCAB, VOCAB)


def test_fitting_learns_the_words_that_carry_the_label():
    rng = random.Random(0)
    good, bad, filler = 3, 4, list(range(5, VOCAB))
    seqs, labels = [], []
    for i in range(400):
        label = i % 2
        seq = [rng.choice(filler) for _ in range(rng.randint(3, 30))]
        seq.insert(rng.randrange(len(seq) + 1), good if label else bad)
        seqs.append(seq)
        labels.append(label)
    labels = torch.tensor(labels)
    branch = NgramBranch(VOCAB, BUCKETS)

    def batch(rows):
        return make_batch(rows, 0, None, torch.device("cpu"))

    ratio = log_count_ratio([(*present_ngrams(*batch(seqs), VOCAB, BUCKETS, 3), labels)], BUCKETS)
    assert ratio[good] > 1 > -1 > ratio[bad]
    fit_ngram_branch(branch, batch, seqs, labels, epochs=3, batch_size=32, lr=0.05, progress=False)
    with torch.no_grad():
        logits = branch(*batch(seqs))
        alone = torch.stack([branch(*batch([s])) for s in seqs[:20]]).squeeze(-1)
    assert ((logits > 0).long() == labels).float().mean() > 0.95
    assert torch.allclose(alone, logits[:20], atol=1e-5)  # same logit alone as in a padded batch
    assert branch.weight[good] > 0 > branch.weight[bad]
    assert branch.weight.dtype == torch.float16  # the stored table is half precision
