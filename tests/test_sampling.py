"""Samplers (SPEC §4-5): uniform unobserved negatives, rank matrices, BD weights, CDF sampling, RD and CD laws."""

from __future__ import annotations

import math

import pytest
import torch

from ibd_lite.errors import ConfigError
from ibd_lite.sampling import (CdfSampler, UnobservedSampler, bd_weights, cd_probabilities, rank_matrix,
                               ranks_from_scores, rd_position_weights, rd_weights)

# ------------------------------------------------------------------------------------------ uniform negatives


def test_unobserved_sampler_never_returns_a_training_positive(synthetic_split):
    s = synthetic_split
    sampler = UnobservedSampler(s)
    g = torch.Generator().manual_seed(0)
    users = torch.arange(s.n_users).repeat_interleave(3)
    draws = sampler.sample(users, 50, generator=g)                     # [900, 50]
    assert draws.shape == (900, 50)
    assert draws.min() >= 0 and draws.max() < s.n_items
    observed = s.train_mask(users)
    assert not observed.gather(1, draws).any()


def test_unobserved_sampler_covers_every_unobserved_item(synthetic_split):
    s = synthetic_split
    sampler = UnobservedSampler(s)
    g = torch.Generator().manual_seed(1)
    for u in (0, int(torch.argmax(s.train_counts))):
        draws = sampler.sample(torch.tensor([u]), 6000, generator=g)[0]
        seen = set(draws.tolist())
        unobserved = set(range(s.n_items)) - set(s.train_indices[s.train_indptr[u]:s.train_indptr[u + 1]].tolist())
        assert seen == unobserved                                      # held-out items are unobserved too
        assert s.valid[u].item() in seen and s.test[u].item() in seen


def test_is_observed_matches_train_mask(synthetic_split):
    s = synthetic_split
    sampler = UnobservedSampler(s)
    users = torch.arange(40).repeat_interleave(s.n_items)
    items = torch.arange(s.n_items).repeat(40)
    assert torch.equal(sampler.is_observed(users, items).view(40, -1), s.train_mask(torch.arange(40)))


# ------------------------------------------------------------------------------------------ ranks


def test_ranks_from_scores_hand_case():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.3],
                           [5.0, 4.0, 3.0, 2.0, 1.0]])
    observed = torch.tensor([[False, True, False, False, False],
                             [True, False, False, True, False]])
    ranks = ranks_from_scores(scores, observed)
    assert ranks.dtype == torch.int32
    # row 0: 0.7 -> 1, 0.5 -> 2, 0.3 -> 3, 0.1 -> 4, the observed 0.9 after all of them
    assert ranks[0].tolist() == [4, 5, 2, 1, 3]
    # row 1: unobserved items 1, 2, 4 take ranks 1..3, observed 0 and 3 take 4 and 5 (in some order)
    assert ranks[1, [1, 2, 4]].tolist() == [1, 2, 3]
    assert sorted(ranks[1, [0, 3]].tolist()) == [4, 5]


def test_rank_matrix_is_a_permutation_with_observed_last(synthetic_split):
    s = synthetic_split
    table = torch.randn(s.n_users, s.n_items, generator=torch.Generator().manual_seed(0))
    ranks = rank_matrix(lambda users: table[users], s, batch_users=128)
    assert ranks.shape == (s.n_users, s.n_items)
    assert torch.equal(torch.sort(ranks, dim=1).values, torch.arange(1, s.n_items + 1, dtype=torch.int32).expand_as(ranks))
    observed = s.train_mask(torch.arange(s.n_users))
    n_unobs = s.n_items - s.train_counts
    worst_unobserved = ranks.masked_fill(observed, 0).max(1).values
    best_observed = ranks.masked_fill(~observed, 10 ** 6).min(1).values
    assert torch.equal(worst_unobserved.long(), n_unobs)
    assert torch.equal(best_observed.long(), n_unobs + 1)
    # rank 1 is the best-scored unobserved item
    top = table.masked_fill(observed, float("-inf")).argmax(1)
    assert (ranks.gather(1, top[:, None]) == 1).all()


# ------------------------------------------------------------------------------------------ BD weights

# item 0 = i: teacher rank 1, student rank 100; item 1 = j: teacher 100, student 1;
# item 2: an observed item with i's ranks; item 3: both models agree
RANK_T = torch.tensor([[1, 100, 1, 50]])
RANK_S = torch.tensor([[100, 1, 100, 50]])
UNOBS = torch.tensor([[True, True, False, True]])


def test_bd_weights_paper_direction_exact():
    eps_t, eps_e = 1e-2, 1e-4
    w_ts, w_st = bd_weights(RANK_T, RANK_S, UNOBS, eps_t, eps_e, "paper")
    assert w_ts.shape == w_st.shape == (1, 4)
    assert w_ts[0, 0].item() == pytest.approx(math.tanh(eps_t * 99), rel=1e-6)     # student learns i
    assert w_ts[0, 1].item() == 0.0                                                  # not j
    assert w_st[0, 1].item() == pytest.approx(math.exp(eps_e * 99), rel=1e-6)      # teacher learns j
    assert w_st[0, 0].item() == pytest.approx(math.exp(-eps_e * 99), rel=1e-6)
    assert w_st[0, 1] > w_st[0, 0]
    assert w_ts[0, 3].item() == 0.0 and w_st[0, 3].item() == pytest.approx(1.0)   # agreement: exp(0)
    assert w_ts[0, 2].item() == 0.0 and w_st[0, 2].item() == 0.0                    # observed: never


def test_bd_weights_released_direction_flips_both():
    eps_t, eps_e = 1e-2, 1e-4
    w_ts, w_st = bd_weights(RANK_T, RANK_S, UNOBS, eps_t, eps_e, "released")
    assert w_ts[0, 0].item() == 0.0
    assert w_ts[0, 1].item() == pytest.approx(math.tanh(eps_t * 99), rel=1e-6)
    assert w_st[0, 0].item() == pytest.approx(math.exp(eps_e * 99), rel=1e-6)
    assert w_st[0, 1].item() == pytest.approx(math.exp(-eps_e * 99), rel=1e-6)
    assert w_st[0, 0] > w_st[0, 1]
    assert w_ts[0, 2].item() == 0.0 and w_st[0, 2].item() == 0.0


def test_bd_weights_large_exponent_stays_finite():
    w_ts, w_st = bd_weights(torch.tensor([[100000]]), torch.tensor([[1]]), torch.tensor([[True]]), 1.0, 1.0)
    assert torch.isfinite(w_st).all() and w_st.item() > 1e30
    assert w_ts.item() == 0.0


def test_bd_weights_unknown_direction():
    with pytest.raises(ConfigError, match="released"):
        bd_weights(RANK_T, RANK_S, UNOBS, 1e-2, 1e-4, "ascending")


# ------------------------------------------------------------------------------------------ CDF sampler


def test_cdf_sampler_counts_support_and_frequencies():
    weights = torch.tensor([[0.0, 1.0, 0.0, 3.0, 0.0],
                            [0.0, 0.0, 0.0, 0.0, 0.0],
                            [2.0, 0.0, 0.0, 0.0, 0.0],
                            [0.5, 0.5, 0.5, 0.5, 2.0]])
    sampler = CdfSampler(weights.clone())
    counts = torch.tensor([8000, 5, 7, 0])
    indptr, items = sampler.sample(counts, generator=torch.Generator().manual_seed(0))
    assert indptr.tolist() == [0, 8000, 8000, 8007, 8007]        # user 1: all-zero weights, no samples
    u0 = items[:8000]
    assert set(u0.tolist()) <= {1, 3}                            # never a zero-weight item
    freq3 = (u0 == 3).sum().item()
    sd = math.sqrt(8000 * 0.75 * 0.25)
    assert abs(freq3 - 6000) < 5 * sd
    assert items[8000:].tolist() == [0] * 7


def test_cdf_sampler_empirical_law_chi_square():
    g = torch.Generator().manual_seed(7)
    w = torch.tensor([[0.0, 1.0, 2.0, 0.0, 4.0, 8.0, 0.0, 1.0, 0.0]])
    n = 20000
    _, items = CdfSampler(w.clone()).sample(torch.tensor([n]), generator=g)
    obs = torch.bincount(items, minlength=9).double()
    assert obs[w[0] == 0].sum() == 0
    p = (w[0] / w.sum()).double()
    support = p > 0
    chi2 = (((obs - n * p) ** 2) / (n * p))[support].sum().item()
    assert chi2 < 25.0          # 4 degrees of freedom: P(chi2 > 25) < 1e-4


def test_cdf_sampler_trailing_zero_weights_never_drawn():
    w = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 3)
    _, items = CdfSampler(w).sample(torch.tensor([500, 500, 500]), generator=torch.Generator().manual_seed(0))
    assert items.unique().tolist() == [0]


def test_cdf_sampler_many_users_blocks():
    """Blocks of users with different counts: every user gets exactly its count, from its own support."""
    n_users, n_items = 600, 30
    g = torch.Generator().manual_seed(3)
    w = torch.zeros(n_users, n_items)
    own = torch.arange(n_users) % n_items
    w[torch.arange(n_users), own] = 1.0                          # each user has a single allowed item
    counts = torch.randint(0, 9, (n_users,), generator=g)
    indptr, items = CdfSampler(w).sample(counts, generator=g, block=64)
    assert torch.equal(indptr[1:] - indptr[:-1], counts)
    users = torch.repeat_interleave(torch.arange(n_users), counts)
    assert torch.equal(items, own[users])


def test_cdf_sampler_is_cdf_input():
    cdf = torch.tensor([[0.0, 1.0, 1.0, 4.0]])
    _, items = CdfSampler(cdf, is_cdf=True).sample(torch.tensor([300]), generator=torch.Generator().manual_seed(0))
    assert set(items.tolist()) == {1, 3}


# ------------------------------------------------------------------------------------------ RD and CD laws


def test_rd_position_weights_exact():
    w = rd_position_weights(3, lam=1.0)
    e = [math.exp(-1), math.exp(-2), math.exp(-3)]
    assert w.tolist() == pytest.approx([x / sum(e) for x in e], rel=1e-6)
    w2 = rd_position_weights(4, lam=2.0)
    e2 = [math.exp(-r / 2) for r in range(1, 5)]
    assert w2.tolist() == pytest.approx([x / sum(e2) for x in e2], rel=1e-6)
    assert w2.sum().item() == pytest.approx(1.0)


def test_rd_weights_hand_values():
    wa = [math.exp(-r) for r in (1, 2, 3)]
    # student ranks 3, 2, 10 of the teacher's items 1, 2, 3: discrepancies 2, 0, 7
    wb = [math.tanh(0.1 * 2), 0.0, math.tanh(0.1 * 7)]
    w = rd_weights(torch.tensor([[3, 2, 10]]), lam=1.0, mu=0.1)
    raw = [a * b for a, b in zip(wa, wb)]
    assert w[0].tolist() == pytest.approx([x / sum(raw) for x in raw], rel=1e-5)
    # only one discrepant item: all weight on it
    assert rd_weights(torch.tensor([[1, 5, 3]]))[0].tolist() == pytest.approx([0.0, 1.0, 0.0])


def test_rd_weights_fallbacks():
    wa = rd_position_weights(3).tolist()
    # the student already agrees everywhere: w^b = 0 -> position weights
    assert rd_weights(torch.tensor([[1, 2, 3]]))[0].tolist() == pytest.approx(wa)
    # equal discrepancy everywhere: w ∝ w^a
    assert rd_weights(torch.tensor([[11, 12, 13]]))[0].tolist() == pytest.approx(wa, rel=1e-5)
    # discrepancy off (first epochs)
    assert rd_weights(torch.tensor([[3, 2, 10]]), use_discrepancy=False)[0].tolist() == pytest.approx(wa)
    rows = rd_weights(torch.randint(1, 50, (20, 10), generator=torch.Generator().manual_seed(0)))
    assert rows.sum(1).tolist() == pytest.approx([1.0] * 20, rel=1e-5)


def test_cd_probabilities_exact():
    p = cd_probabilities(torch.tensor([[1, 2, 3]]), mu=1.0)
    e = [math.exp(-1), math.exp(-2), math.exp(-3)]
    assert p[0].tolist() == pytest.approx([x / sum(e) for x in e], rel=1e-6)
    p10 = cd_probabilities(torch.tensor([[1, 11, 21], [5, 5, 5]]), mu=10.0)
    e10 = [1.0, math.exp(-1), math.exp(-2)]
    assert p10[0].tolist() == pytest.approx([x / sum(e10) for x in e10], rel=1e-6)
    assert p10[1].tolist() == pytest.approx([1 / 3] * 3)


def test_ranks_of_items_match_full_rank_matrix(synthetic_split):
    """RD's student ranks of the teacher's items equal the full rank matrix read at those items."""
    from ibd_lite.config import make_config
    from ibd_lite.methods import Context, new_model, ranks_of_items, top_items
    from ibd_lite.sampling import UnobservedSampler, rank_matrix

    cfg = make_config(profile="ci", method="rd")
    ctx = Context(cfg, synthetic_split, torch.device("cpu"), UnobservedSampler(synthetic_split), progress=False)
    teacher, student = new_model(ctx, "teacher"), new_model(ctx, "student")
    top = top_items(ctx, teacher, 10)
    got = ranks_of_items(ctx, student, top)
    student.eval()
    full = rank_matrix(student.score_all, synthetic_split)
    assert torch.equal(got, full.gather(1, top).long())
