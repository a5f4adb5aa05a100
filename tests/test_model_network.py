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


def brute_force_segments(lengths, call_cost, quantum):
    """Every choice of boundaries among the multiples of `quantum` up to the longest row rounded up, and its cost
    (row-steps + call_cost per segment)."""
    import itertools

    points = list(range(quantum, -(-max(lengths) // quantum) * quantum + 1, quantum))
    for k in range(len(points)):
        for inner in itertools.combinations(points[:-1], k):
            bounds = [0, *inner, points[-1]]
            yield sum(sum(n > a for n in lengths) * (b - a) + call_cost for a, b in zip(bounds, bounds[1:]))


def test_plan_segments_covers_each_row_to_its_length_and_is_optimal():
    import random

    from model.network import plan_segments

    rng = random.Random(0)
    for _ in range(60):
        quantum = rng.choice([1, 4, 16])
        lengths = sorted((rng.randint(1, 12 * quantum) for _ in range(rng.randint(1, 7))), reverse=True)
        call_cost = rng.choice([0.0, 10.0, 100.0, 1000.0])
        segments = plan_segments(lengths, call_cost, quantum)
        assert segments[0][0] == 0 and segments[-1][1] == -(-lengths[0] // quantum) * quantum
        assert all(end % quantum == 0 for _, end, _ in segments)  # shapes repeat: steps on multiples
        assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))  # contiguous, in order
        for start, end, rows in segments:  # exactly the rows still inside their text at `start`
            assert rows == sum(n > start for n in lengths)
        cost = sum(rows * (end - start) + call_cost for start, end, rows in segments)
        assert cost == pytest.approx(min(brute_force_segments(lengths, call_cost, quantum)))
    assert plan_segments([300] * 16, quantum=1) == [(0, 300, 16)]  # equal lengths: one pass
    assert plan_segments([300] * 16) == [(0, 304, 16)]  # to a multiple of SEGMENT_STEPS
    assert plan_segments([1000] + [50] * 60) == [(0, 64, 61), (64, 1008, 1)]  # an outlier runs on alone


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("nb_buckets", [0, 256])
def test_segments_give_the_padded_pass_logits(bidirectional, nb_buckets):
    from model.network import plan_segments, right_pad

    torch.manual_seed(0)
    net = SentimentLSTM(NetworkConfig(vocab_size=50, embed_dim=8, hidden_dim=8, num_layers=1, pooling="max_mean",
                                      bidirectional=bidirectional, nb_buckets=nb_buckets)).eval()
    if nb_buckets:
        with torch.no_grad():
            net.ngram.weight.normal_()
            net.blend.weight.fill_(0.7)
    rows = [torch.randint(2, 50, (n,)).tolist() for n in (40, 33, 33, 12, 7, 3, 1)]  # longest first
    ids, lengths = right_pad(rows)
    plans = [plan_segments(lengths.tolist()), plan_segments(lengths.tolist(), 0.0, 1),
             plan_segments(lengths.tolist(), 0.0, 4), [(0, 40, 7)],
             [(0, 1, 7), (1, 3, 6), (3, 20, 5), (20, 35, 3), (35, 40, 1)]]
    # planned (the last segment padded past the longest row), one per length, on multiples of 4, one, any
    with torch.inference_mode():
        padded = net(ids, lengths)
        for segments in plans:
            assert torch.allclose(net.forward_segments(ids, lengths, segments), padded, atol=1e-6), segments


def test_networks_that_cannot_run_by_segments_run_the_padded_pass():
    from model.network import right_pad

    torch.manual_seed(0)
    for config in (NetworkConfig(vocab_size=50, embed_dim=8, hidden_dim=8, num_layers=2, nb_buckets=0),
                   NetworkConfig(vocab_size=50, embed_dim=8, hidden_dim=8, pooling="attention", nb_buckets=0)):
        net = SentimentLSTM(config).eval()
        assert not net.segmentable
        ids, lengths = right_pad([[3, 4, 5], [6]])
        with torch.inference_mode():
            assert torch.equal(net.forward_segments(ids, lengths, [(0, 1, 2), (1, 3, 1)]), net(ids, lengths))


@pytest.mark.parametrize("nb_buckets", [0, 256])
def test_directions_on_two_threads_give_the_same_logits(nb_buckets):
    from concurrent.futures import ThreadPoolExecutor

    from model.network import plan_segments, right_pad

    torch.manual_seed(0)
    net = SentimentLSTM(NetworkConfig(vocab_size=50, embed_dim=8, hidden_dim=8, nb_buckets=nb_buckets)).eval()
    rows = [torch.randint(2, 50, (n,)).tolist() for n in (40, 33, 12, 1)]  # longest first
    ids, lengths = right_pad(rows)
    segments = plan_segments(lengths.tolist())
    with ThreadPoolExecutor(1) as helper, torch.inference_mode():
        alone = net.forward_segments(ids, lengths, segments)
        helped = net.forward_segments(ids, lengths, segments, beside=helper)
        lone = net.forward_segments(ids[3:, :1], lengths[3:], plan_segments([1]), beside=helper)
    assert torch.equal(helped, alone)
    assert torch.equal(lone, alone[3:])


def test_a_failing_direction_on_the_helper_fails_the_pass():
    from concurrent.futures import ThreadPoolExecutor

    from model.network import plan_segments, right_pad

    net = SentimentLSTM(NetworkConfig(vocab_size=50, embed_dim=8, hidden_dim=8, nb_buckets=0)).eval()
    ids, lengths = right_pad([[3, 4, 5], [6]])
    ids[1, 0] = 999  # out of the vocabulary: the embedding lookup raises, in whichever thread reads the row
    with ThreadPoolExecutor(1) as helper, torch.inference_mode(), pytest.raises(IndexError):
        net.forward_segments(ids, lengths, plan_segments([3, 1]), beside=helper)
