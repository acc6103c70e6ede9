"""Full-ranking metrics (SPEC §2): exact H@K / N@K on hand-worked rankings, ties, exclusions, K checks."""

from __future__ import annotations

import math

import pytest
import torch

from ibd_lite.data import split_sequences
from ibd_lite.errors import ConfigError
from ibd_lite.metrics import evaluate, metrics_from_ranks, target_ranks, topk_metrics


def no_exclude(b: int, n: int) -> torch.Tensor:
    return torch.zeros(b, n, dtype=torch.bool)


# ------------------------------------------------------------------------------------------ target_ranks


def test_target_at_rank_two_exact_metrics():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    targets = torch.tensor([2])
    ex = no_exclude(1, 5)
    assert target_ranks(scores, targets, ex).tolist() == [2]
    m = topk_metrics(scores, targets, ex, ks=(1, 2, 3, 5))
    assert m["H@1"] == 0.0 and m["N@1"] == 0.0
    assert m["H@2"] == 0.0 and m["N@2"] == 0.0
    assert m["H@3"] == 1.0
    assert m["N@3"] == pytest.approx(1 / math.log2(4)) and m["N@3"] == pytest.approx(0.5)
    assert m["H@5"] == 1.0 and m["N@5"] == pytest.approx(0.5)


def test_target_on_top_has_ndcg_one():
    scores = torch.tensor([[0.1, 3.0, 0.2]])
    m = topk_metrics(scores, torch.tensor([1]), no_exclude(1, 3), ks=(1, 3))
    assert m == {"H@1": 1.0, "N@1": 1.0, "H@3": 1.0, "N@3": 1.0}


def test_metrics_average_over_users():
    # ranks 0, 2 and 60 -> H@1 = 1/3, H@50 = 2/3, N@50 = (1 + 1/2 + 0) / 3
    m = metrics_from_ranks(torch.tensor([0, 2, 60]), ks=(1, 50, 100))
    assert m["H@1"] == pytest.approx(1 / 3)
    assert m["N@1"] == pytest.approx(1 / 3)
    assert m["H@50"] == pytest.approx(2 / 3)
    assert m["N@50"] == pytest.approx(1.5 / 3)
    assert m["H@100"] == pytest.approx(1.0)
    assert m["N@100"] == pytest.approx((1 + 0.5 + 1 / math.log2(62)) / 3)


def test_ties_count_against_the_target():
    # item 2 has the same score as the target (item 1): it ranks above it
    scores = torch.tensor([[1.0, 2.0, 2.0, 0.0]])
    assert target_ranks(scores, torch.tensor([1]), no_exclude(1, 4)).tolist() == [1]
    assert target_ranks(scores, torch.tensor([2]), no_exclude(1, 4)).tolist() == [1]


def test_constant_scorer_ranks_target_last_among_non_excluded():
    n = 10
    scores = torch.full((3, n), 0.25)
    ex = no_exclude(3, n)
    ex[1, [0, 5, 7]] = True      # three excluded items
    ex[2, :6] = True             # six excluded items (target 9 is not among them)
    ranks = target_ranks(scores, torch.tensor([4, 2, 9]), ex)
    assert ranks.tolist() == [n - 1, n - 3 - 1, n - 6 - 1]
    m = topk_metrics(scores, torch.tensor([4, 2, 9]), ex, ks=(3, 4, 10))
    assert m["H@3"] == 0.0          # ranks 9, 6, 3: none below 3
    assert m["H@4"] == pytest.approx(1 / 3)
    assert m["H@10"] == 1.0


def test_excluded_items_do_not_count():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    ex = no_exclude(1, 5)
    ex[0, [0, 2]] = True             # a training item and the other held-out item
    assert target_ranks(scores, torch.tensor([4]), ex).tolist() == [2]   # only items 1 and 3 remain above
    assert target_ranks(scores, torch.tensor([4]), no_exclude(1, 5)).tolist() == [4]


def test_nan_target_ranks_last():
    scores = torch.tensor([[0.5, float("nan"), 0.1, 0.2]])
    assert target_ranks(scores, torch.tensor([1]), no_exclude(1, 4)).tolist() == [3]


def test_shape_mismatch_is_config_error():
    with pytest.raises(ConfigError):
        target_ranks(torch.zeros(2, 5), torch.tensor([0, 1]), no_exclude(2, 4))


@pytest.mark.parametrize("ks", [(6,), (50, 100), (0,), (-1,)])
def test_k_out_of_range_raises(ks):
    scores = torch.rand(2, 5)
    with pytest.raises(ConfigError, match="K="):
        topk_metrics(scores, torch.tensor([0, 1]), no_exclude(2, 5), ks=ks)


def test_k_equal_to_n_items_is_allowed():
    m = topk_metrics(torch.rand(2, 5), torch.tensor([0, 1]), no_exclude(2, 5), ks=(5,))
    assert m["H@5"] == 1.0


# ------------------------------------------------------------------------------------------ evaluate


def hand_split():
    # item ids 0..7 all kept and re-indexed to themselves
    return split_sequences("hand", ["u0", "u1", "u2"],
                           [[0, 1, 2, 3, 4], [7, 6, 5, 4, 3], [1, 3, 5, 7, 0, 2]])


def lower_index_first(users: torch.Tensor) -> torch.Tensor:
    """Score −i for every item i: item 0 is everyone's favourite."""
    return -torch.arange(8, dtype=torch.float32).expand(len(users), -1).clone()


def test_evaluate_hand_worked_split():
    s = hand_split()
    assert s.n_items == 8 and s.valid.tolist() == [3, 4, 0] and s.test.tolist() == [4, 3, 2]
    m, ranks = evaluate(lower_index_first, s, "valid", ks=(1, 3, 5), return_ranks=True)
    # u0: 0,1,2 are training items -> rank 0; u1: 0,1,2 above 4 (3 is the excluded test item) -> 3; u2: rank 0
    assert ranks.tolist() == [0, 3, 0]
    assert m["H@1"] == pytest.approx(2 / 3) and m["H@3"] == pytest.approx(2 / 3) and m["H@5"] == 1.0
    assert m["N@5"] == pytest.approx((1 + 1 / math.log2(5) + 1) / 3)
    _, ranks = evaluate(lower_index_first, s, "test", ks=(1,), return_ranks=True)
    # u0: 3 is the excluded validation item -> 0; u1: 0,1,2 -> 3; u2: 0 (valid) and 1 (train) excluded -> 0
    assert ranks.tolist() == [0, 3, 0]


def test_evaluate_rejects_bad_part_and_k():
    s = hand_split()
    with pytest.raises(ConfigError):
        evaluate(lower_index_first, s, "train", ks=(1,))
    with pytest.raises(ConfigError, match="K=9"):
        evaluate(lower_index_first, s, "valid", ks=(9,))


def test_evaluate_matches_topk_metrics_on_full_matrix():
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randperm(40, generator=g)[: 5 + u % 7].tolist() for u in range(23)]
    s = split_sequences("rand", list(range(23)), seqs)
    table = torch.randn(s.n_users, s.n_items, generator=g)
    table[:, :5] = 0.0                    # some ties too

    def scorer(users):
        return table[users]

    users = torch.arange(s.n_users)
    for part in ("valid", "test"):
        full = topk_metrics(table, getattr(s, part), s.exclude_mask(users, part), ks=(1, 5, 10))
        streamed = evaluate(scorer, s, part, ks=(1, 5, 10), batch_users=4)
        assert streamed == pytest.approx(full)
        assert 0 < full["H@10"] < 1          # a non-trivial case


def test_evaluate_accepts_a_model(synthetic_split):
    from ibd_lite.models import build_model

    torch.manual_seed(0)
    model = build_model("bprmf", synthetic_split, 4).eval()
    users = torch.arange(synthetic_split.n_users)
    with torch.no_grad():
        full = topk_metrics(model.score_all(users), synthetic_split.test,
                            synthetic_split.exclude_mask(users, "test"))
    assert evaluate(model, synthetic_split, "test", batch_users=64) == pytest.approx(full)
