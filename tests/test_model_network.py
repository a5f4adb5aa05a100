"""The network's padding invariants, checked on random weights (no artifact or data needed)."""

import pytest
import torch

from model.network import NetworkConfig, SentimentLSTM, reverse_padded


def test_reverse_padded_reverses_real_steps_and_is_its_own_inverse():
    x = torch.arange(12, dtype=torch.float32).view(2, 6, 1)
    lengths = torch.tensor([4, 6])
    r = reverse_padded(x, lengths)
    assert r[0, :, 0].tolist() == [3, 2, 1, 0, 4, 5]  # padding (positions 4, 5) stays put
    assert r[1, :, 0].tolist() == [11, 10, 9, 8, 7, 6]
    assert torch.equal(reverse_padded(r, lengths), x)


@pytest.mark.parametrize("pooling", ["last", "max_mean", "attention"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("nb_buckets", [0, 256])
def test_padding_never_changes_a_result(pooling, bidirectional, nb_buckets):
    torch.manual_seed(0)
    net = SentimentLSTM(NetworkConfig(vocab_size=50, embed_dim=8, hidden_dim=8, num_layers=2, pooling=pooling,
                                      bidirectional=bidirectional, nb_buckets=nb_buckets)).eval()
    if nb_buckets:
        with torch.no_grad():  # a fitted-looking branch, so the blend really reads it
            net.ngram.weight.normal_()  # (a half-precision table, as shipped)
            net.blend.weight.fill_(0.7)
    rows = [torch.randint(2, 50, (n,)) for n in (1, 7, 3, 12)]
    with torch.inference_mode():
        alone = [float(net(r.unsqueeze(0), torch.tensor([len(r)]))) for r in rows]
        width = 20  # more padding than any row needs
        batch = torch.zeros(len(rows), width, dtype=torch.long)
        batch[:, :] = 0
        for i, r in enumerate(rows):
            batch[i, :len(r)] = r
            batch[i, len(r):] = torch.randint(2, 50, (width - len(r),))  # garbage, not just PAD, after the end
        together = net(batch, torch.tensor([len(r) for r in rows])).tolist()
    assert together == pytest.approx(alone, abs=1e-5)


def test_split_by_length_covers_every_row_once_and_is_optimal():
    import itertools
    import random

    from model.predictor import STEP_OVERHEAD, split_by_length

    def cost(lengths, groups):
        return sum(lengths[g[-1]] * (STEP_OVERHEAD + len(g)) for g in groups)

    rng = random.Random(0)
    for _ in range(50):
        lengths = sorted(rng.randint(1, 1000) for _ in range(rng.randint(1, 8)))
        groups = split_by_length(lengths)
        assert [i for g in groups for i in g] == list(range(len(lengths)))
        best = min(cost(lengths, [range(a, b) for a, b in zip((0, *cuts), (*cuts, len(lengths)))])
                   for k in range(len(lengths))
                   for cuts in itertools.combinations(range(1, len(lengths)), k))
        assert cost(lengths, groups) == pytest.approx(best)
    # similar lengths stay one pass; a 1,000-token outlier does not drag 60 short rows to its length
    assert len(split_by_length([100] * 64)) == 1
    assert [len(g) for g in split_by_length([50] * 60 + [1000])] == [60, 1]
