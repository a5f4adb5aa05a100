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
@pytest.mark.parametrize("ngram_buckets", [0, 1024])
def test_padding_never_changes_a_result(pooling, bidirectional, ngram_buckets):
    torch.manual_seed(0)
    net = SentimentLSTM(NetworkConfig(vocab_size=50, embed_dim=8, hidden_dim=8, num_layers=2, pooling=pooling,
                                      bidirectional=bidirectional, ngram_buckets=ngram_buckets)).eval()
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
