"""The refresh's fast paths (issue 8): radix ranks against argsort, the copy-free CDF search, the sort-free
unique, and the 16-bit quantised ranks' effect on BD's sampling law on real data (total variation < 1e-3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ibd_lite.bd import APPROX_EPS_MAX, DIRS, refresh
from ibd_lite.errors import ConfigError
from ibd_lite.sampling import bd_weights, ranks_from_scores, rows_searchsorted
from ibd_lite.sparse import unique_ids

TV_TOLERANCE = 1e-3


def test_radix_ranks_hand_case_ties_by_index_nan_and_signed_zero_last():
    scores = torch.tensor([[0.5, -1.0, 2.0, 0.5, float("nan"), -0.0, 0.0, 7.0]])
    observed = torch.tensor([[False, False, False, False, False, False, False, True]])
    # 2.0 > 0.5 (item 0, then item 3: equal scores by index) > 0.0 (items 5, 6: -0.0 == +0.0) > -1.0 > NaN > observed
    expected = torch.tensor([[2, 6, 1, 3, 7, 4, 5, 8]], dtype=torch.int32)
    for method in ("radix", "argsort"):
        assert torch.equal(ranks_from_scores(scores, observed, method=method), expected)


def test_radix_ranks_equal_stable_argsort_on_random_rows_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn((40, 3001), generator=g)
    scores[:, ::7] = scores[:, 1::7].clone()[:, : scores[:, ::7].shape[1]]   # many exact ties
    scores[3] = 1.5                                                          # a constant row
    observed = torch.rand((40, 3001), generator=g) < 0.05
    exact = ranks_from_scores(scores, observed, method="radix")
    assert torch.equal(exact, ranks_from_scores(scores, observed, method="argsort"))
    assert torch.equal(exact.sort(1).values, torch.arange(1, 3002, dtype=torch.int32).expand(40, -1))


def test_quantised_ranks_are_a_permutation_within_bin_error():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn((16, 5000), generator=g) * 3
    observed = torch.rand((16, 5000), generator=g) < 0.02
    exact = ranks_from_scores(scores, observed)
    approx = ranks_from_scores(scores, observed, exact=False)
    assert torch.equal(approx.sort(1).values, exact.sort(1).values)         # still a permutation of 1..n
    assert torch.equal(approx[observed].sort().values, exact[observed].sort().values)   # observed stay last
    err = (approx - exact)[~observed].abs()
    assert 0 < err.float().mean() < 1.0 and err.max() <= 20                  # off by a few positions at most


def test_unknown_rank_method_is_a_config_error():
    with pytest.raises(ConfigError, match="rank method"):
        ranks_from_scores(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool), method="bogo")


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1000])
def test_rows_searchsorted_matches_torch_searchsorted(n):
    g = torch.Generator().manual_seed(n)
    w = torch.rand((30, n), generator=g)
    w[w < 0.3] = 0                                                       # flat stretches in the CDF
    cdf = w.cumsum(1)
    rows = torch.randint(30, (5000,), generator=g)
    values = torch.rand(5000, generator=g) * cdf[rows, -1] * 1.1          # some beyond the total
    values[:50] = cdf[rows[:50], torch.randint(n, (50,), generator=g)]    # exact hits of stored values
    ref = torch.searchsorted(cdf[rows], values[:, None], right=True)[:, 0]
    assert torch.equal(rows_searchsorted(cdf, rows, values), ref)


def test_unique_ids_matches_torch_unique():
    g = torch.Generator().manual_seed(0)
    for n, m in ((1, 5), (50, 0), (50, 7), (5219, 30000)):
        ids = torch.randint(n, (m,), generator=g)
        uniq, inv = unique_ids(ids, n)
        ref_uniq, ref_inv = torch.unique(ids, return_inverse=True)
        assert torch.equal(uniq, ref_uniq) and torch.equal(inv, ref_inv)


def test_refresh_ranks_exactly_unless_every_eps_is_small(synthetic_split, monkeypatch):
    """The default picks quantised ranks only when max(ε) ≤ APPROX_EPS_MAX; exact=True/False override it."""
    import ibd_lite.bd as B

    calls = []
    real = B.ranks_from_scores
    monkeypatch.setattr(B, "ranks_from_scores", lambda s, o, exact: calls.append(exact) or real(s, o, exact=exact))
    from ibd_lite.models import build_model

    t, s = build_model("bprmf", synthetic_split, 8), build_model("bprmf", synthetic_split, 4)
    kw = dict(direction="paper", top_n=10, device="cpu", batch_users=1000)
    for eps_t, exact, want in ((1e-4, None, False), (1e-2, None, True), (1e-4, True, True), (1e-2, False, False)):
        calls.clear()
        refresh(t, s, synthetic_split, eps_t=eps_t, eps_e=1e-4, exact=exact, **kw)
        assert calls == [want, want]
    assert 1e-4 <= APPROX_EPS_MAX < 1e-2


# ---------------------------------------------------------------- the sampling law on real data

def _real_data_dir() -> Path | None:
    """$IBD_DATA_DIR, else ../shared/data beside the clone (as `make test` uses); None when neither exists."""
    env = os.environ.get("IBD_DATA_DIR")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    return beside if (beside / "citeulike-t").exists() else None


@pytest.fixture(scope="module")
def citeulike_scores():
    """Teacher (50) and student (5) CDAE trained 2 epochs on citeulike-t: scores of every 15th user."""
    root = _real_data_dir()
    if root is None or not (root / "citeulike-t").exists():
        pytest.skip("citeulike-t not found: set IBD_DATA_DIR or put the data in ../shared/data beside the clone")
    from ibd_lite.data import load_split
    from ibd_lite.models import build_model
    from ibd_lite.sampling import UnobservedSampler
    from ibd_lite.train import Learner, train_epoch

    split = load_split("citeulike-t", data_dir=root)
    sampler = UnobservedSampler(split)
    torch.manual_seed(0)
    out = []
    for dim in (50, 5):
        model = build_model("cdae", split, dim)
        learner = Learner("m", model, lr=1e-3, weight_decay=0.0, patience=1)
        for _ in range(2):
            train_epoch([learner], split, sampler, 5, 128)
        model.eval()
        users = torch.arange(0, split.n_users, 15)
        with torch.no_grad():
            out.append(model.score_all(users))
    return out[0], out[1], split.train_mask(users)


@pytest.mark.parametrize("eps", [1e-4, 1e-2])                 # CDAE's ε; NeuMF / BPR-MF's ε_t
@pytest.mark.parametrize("direction", ["paper", "released"])
def test_quantised_ranks_keep_bd_sampling_law_on_citeulike(citeulike_scores, eps, direction):
    """Per user, the T→S and S→T laws from 16-bit quantised ranks are within TV 1e-3 of the exact ones."""
    st, ss, observed = citeulike_scores
    exact = [ranks_from_scores(x, observed) for x in (st, ss)]
    approx = [ranks_from_scores(x, observed, exact=False) for x in (st, ss)]
    assert not torch.equal(exact[0], approx[0])                 # the approximation is really exercised
    w_exact = bd_weights(*exact, ~observed, eps, eps, direction)
    w_approx = bd_weights(*approx, ~observed, eps, eps, direction)
    for d, we, wa in zip(DIRS, w_exact, w_approx):
        pe, pa = we.double(), wa.double()
        has = pe.sum(1) > 0
        assert torch.equal(has, pa.sum(1) > 0), d              # the same users get no draws
        pe, pa = pe[has] / pe[has].sum(1, keepdim=True), pa[has] / pa[has].sum(1, keepdim=True)
        tv = 0.5 * (pe - pa).abs().sum(1)
        assert len(tv) > 300 and float(tv.max()) < TV_TOLERANCE, (d, float(tv.max()))
