"""Pieces of the training pipeline on random weights and synthetic text (no dataset needed)."""

import torch

from model.network import NetworkConfig, SentimentLSTM
from model.training.adversarial import train_step
from model.training.augment import synthetic_reviews
from model.training.batches import make_batch


def test_synthetic_sentences_are_seeded_balanced_and_flip_with_negation():
    texts, labels = synthetic_reviews(2000, seed=3)
    assert (texts, labels) == synthetic_reviews(2000, seed=3)
    assert texts != synthetic_reviews(2000, seed=4)[0]
    assert labels.count(1) == labels.count(0) == 1000
    negated = [(t, y) for t, y in zip(texts, labels) if " not " in f" {t.lower()} " and "," not in t]
    assert negated
    # a negated sentence carries the other polarity's word: "not bad" sentences are labelled positive
    assert any(y == 1 and " bad" in t.lower() for t, y in negated)
    assert any(y == 0 and " good" in t.lower() for t, y in negated)


def test_adversarial_step_adds_the_perturbed_loss_gradient():
    torch.manual_seed(0)
    net = SentimentLSTM(NetworkConfig(vocab_size=50, embed_dim=8, hidden_dim=8, nb_buckets=0,
                                      dropout=0.0, embed_dropout=0.0))
    ids, lengths = make_batch([[3, 4, 5], [6, 7, 8, 9, 10]], 0, None, torch.device("cpu"))
    targets = torch.tensor([1.0, 0.3])  # hard and soft targets alike

    def grads(eps):
        net.zero_grad(set_to_none=True)
        loss = train_step(net, ids, lengths, targets, eps)
        return loss, torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])

    clean_loss, clean = grads(0.0)
    adv_loss, adversarial = grads(4.0)
    assert clean_loss == adv_loss  # the reported loss is the clean one
    assert torch.isfinite(adversarial).all()
    # the perturbed batch's gradient is added on top: about twice the clean one, but not exactly
    assert 1.5 < adversarial.norm() / clean.norm() < 3.0
    assert not torch.allclose(adversarial, 2 * clean)


def test_make_batch_crops_long_reviews_only_in_training():
    import random

    rows = [list(range(2, 50)), [5, 6]]
    ids, lengths = make_batch(rows, 10, random.Random(0), torch.device("cpu"))
    assert lengths.tolist() == [10, 2]
    ids, lengths = make_batch(rows, 10, None, torch.device("cpu"))  # inference: whole reviews
    assert lengths.tolist() == [48, 2]


def test_graded_sentences_are_surer_the_stronger_their_wording():
    from model.training.augment import graded_reviews

    texts, targets = graded_reviews(4000, seed=5)
    assert (texts, targets) == graded_reviews(4000, seed=5)
    assert sum(t > 0.5 for t in targets) == sum(t < 0.5 for t in targets) == 2000

    def target(pattern: str) -> list[float]:
        return [y for t, y in zip(texts, targets) if pattern in t]

    assert min(target("absolutely superb")) > max(target("fairly decent")) > 0.5
    assert max(target("utterly atrocious")) < min(target("somewhat mediocre")) < 0.5


def test_crops_are_seeded_sentences_of_the_reviews_within_the_word_limits():
    from model.training.crops import review_crops, sentences

    reviews = ["One two three. Four five six seven!<br /><br />Eight nine ten eleven? Twelve.",
               "Short.", "A much longer sentence " + "word " * 60 + "ends here."]
    assert sentences(reviews[0]) == ["One two three.", "Four five six seven!", "Eight nine ten eleven?", "Twelve."]
    crops = review_crops(reviews * 50, 150, seed=1)
    assert crops == review_crops(reviews * 50, 150, seed=1)
    assert crops and all(3 <= len(c.split()) <= 40 for c in crops)
    assert all(c in " ".join(reviews).replace("<br /><br />", " ") or c.startswith("A much longer") for c in crops)


def test_language_model_never_sees_the_token_it_predicts_and_learns():
    from model.training.language_model import LMHeads, lm_loss, pretrain_lm

    torch.manual_seed(0)
    net = SentimentLSTM(NetworkConfig(vocab_size=50, embed_dim=8, hidden_dim=8, nb_buckets=0))
    net.eval()
    heads = LMHeads(net)
    ids, lengths = make_batch([[5, 6, 7, 8, 9], [5, 6, 7]], 0, None, torch.device("cpu"))
    q = torch.full((50,), 1 / 50)

    # The forward LSTM's states 0..3 predict tokens 1..4: none of them may depend on token 4.
    embedded = net.embedding(ids).detach().requires_grad_(True)
    forward_states = net.forward_lstms[0](embedded)[0]
    forward_states[0, :4].sum().backward()
    assert embedded.grad[0, 4].abs().sum() == 0

    # A repeating pattern is learnt: the loss falls well below its starting value.
    seqs = [[1 + (i + j) % 10 for j in range(20)] for i in range(64)]
    torch.manual_seed(0)
    start = lm_loss(net, heads, *make_batch(seqs[:8], 0, None, torch.device("cpu")), q, 16).item()
    losses = pretrain_lm(net, seqs, epochs=30, lr=2e-2, batch_size=16, max_tokens=20, negatives=16, clip=1.0,
                         seed=0, device=torch.device("cpu"), progress=False, log=lambda msg: None)
    assert losses[-1] < 0.5 * start
