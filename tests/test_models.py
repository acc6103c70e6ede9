"""Base models (SPEC §3): shapes, score_all against pair_logits, sizes, dropout, losses, names."""

from __future__ import annotations

import math

import pytest
import torch

from ibd_lite.errors import ConfigError
from ibd_lite.models import BPRMF, CDAE, MODELS, NeuMF, bpr_loss, build_model, pointwise_bce, resolve_model

TEACHER_DIM, STUDENT_DIM = 32, 4


def spread_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Re-draw every parameter with a large spread so that ReLUs and sigmoids are far from their init regime."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("dim", [TEACHER_DIM, STUDENT_DIM])
@pytest.mark.parametrize("name", MODELS)
def test_score_all_shape_and_pair_logits_agree(name, dim, synthetic_split):
    s = synthetic_split
    torch.manual_seed(1)
    model = build_model(name, s, dim)
    spread_weights(model)
    model.eval()
    users = torch.tensor([0, 5, 17, 299, 42])
    with torch.no_grad():
        full = model.score_all(users)
        assert full.shape == (5, s.n_items)
        assert torch.isfinite(full).all()
        g = torch.Generator().manual_seed(2)
        pu = torch.randint(len(users), (400,), generator=g)
        pi = torch.randint(s.n_items, (400,), generator=g)
        pairs = model.pair_logits(users[pu], pi)
    assert pairs.shape == (400,)
    assert full.std() > 0.1                                        # a non-degenerate check
    torch.testing.assert_close(pairs, full[pu, pi], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tile,users_per_chunk", [(100, 3), (390, 1), (7, 37)])
def test_neumf_score_all_tiles_agree_with_pair_logits(synthetic_split, monkeypatch, tile, users_per_chunk):
    """score_all runs the MLP tower on (users × items) tiles with ragged edges; every tiling gives the
    scores of the plain per-pair forward pass."""
    from ibd_lite.models import neumf as M

    torch.manual_seed(0)
    model = NeuMF(synthetic_split.n_users, synthetic_split.n_items, 8)
    spread_weights(model, 5)
    model.eval()
    users = torch.arange(37)
    n = synthetic_split.n_items
    with torch.no_grad():
        ref = model.pair_logits(users.repeat_interleave(n), torch.arange(n).repeat(len(users))).view(len(users), n)
        monkeypatch.setattr(M, "_NEUMF_ITEM_TILE", {"cpu": tile})
        monkeypatch.setattr(M, "_NEUMF_CHUNK_FLOATS", {"cpu": tile * 8 * users_per_chunk})
        tiled = model.score_all(users)
    assert ref.std() > 0.1
    torch.testing.assert_close(tiled, ref, rtol=1e-5, atol=1e-5)


def test_neumf_score_all_is_bit_identical_for_any_thread_count(synthetic_split):
    """With k CPU threads, score_all splits the users over k Python threads of single-threaded ops: every
    user's scores are then exactly those of a one-thread run, and the thread count is restored after."""
    torch.manual_seed(0)
    model = NeuMF(synthetic_split.n_users, synthetic_split.n_items, 8)
    spread_weights(model, 5)
    model.eval()
    users = torch.arange(37)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            one = model.score_all(users)
            torch.set_num_threads(3)
            three = model.score_all(users)
            assert torch.get_num_threads() == 3
            alone = model.score_all(users[20:21])                   # a batch of one user takes no threads
    finally:
        torch.set_num_threads(threads)
    assert one.std() > 0.1
    assert torch.equal(one, three)
    torch.testing.assert_close(alone[0], one[20], rtol=1e-6, atol=1e-6)   # gemv vs gemm: a few ulps


@pytest.mark.parametrize("name", MODELS)
def test_student_is_smaller_than_teacher(name, synthetic_split):
    teacher = build_model(name, synthetic_split, TEACHER_DIM)
    student = build_model(name, synthetic_split, STUDENT_DIM)
    assert student.n_params() < teacher.n_params()
    assert (teacher.dim, student.dim) == (TEACHER_DIM, STUDENT_DIM)


def test_build_model_classes_and_aliases(synthetic_split):
    assert isinstance(build_model("cdae", synthetic_split, 4), CDAE)
    assert isinstance(build_model("NeuMF", synthetic_split, 4), NeuMF)
    for alias in ("bprmf", "bpr", "bpr-mf", "mf"):
        assert isinstance(build_model(alias, synthetic_split, 4), BPRMF)
        assert resolve_model(alias) == "bprmf"


def test_unknown_model_lists_valid_names(synthetic_split):
    with pytest.raises(ConfigError) as e:
        build_model("transformer", synthetic_split, 4)
    msg = str(e.value)
    assert "transformer" in msg
    for name in MODELS:
        assert name in msg


def test_cdae_dropout_only_in_train_mode(synthetic_split):
    torch.manual_seed(0)
    model = build_model("cdae", synthetic_split, 16)
    spread_weights(model, 3)
    users = torch.arange(20)
    items = torch.randint(synthetic_split.n_items, (20,))
    with torch.no_grad():
        model.eval()
        e1, e2 = model.score_all(users), model.score_all(users)
        p_eval = model.pair_logits(users, items)
        assert torch.equal(e1, e2)
        model.train()
        t1, t2 = model.score_all(users), model.score_all(users)
        p_train = model.pair_logits(users, items)
    assert not torch.equal(t1, t2)             # a new dropout mask each call
    assert not torch.equal(t1, e1)
    assert not torch.allclose(p_train, p_eval)


def test_cdae_dropout_zero_is_deterministic(synthetic_split):
    s = synthetic_split
    model = CDAE(s.n_users, s.n_items, 8, s.train_indptr, s.train_indices, dropout=0.0).train()
    users = torch.arange(10)
    with torch.no_grad():
        assert torch.equal(model.score_all(users), model.score_all(users))


def test_cdae_input_is_the_training_items(synthetic_split):
    """A user's code depends on its training items: W ỹ_u + V_u + b with ỹ_u the training row."""
    s = synthetic_split
    model = build_model("cdae", s, 6).eval()
    spread_weights(model, 9)
    u = 7
    items = s.train_indices[s.train_indptr[u]:s.train_indptr[u + 1]]
    with torch.no_grad():
        z = torch.sigmoid(model.enc.weight[items].sum(0) + model.user.weight[u] + model.enc_bias)
        expect = z @ model.dec.weight.T + model.dec_bias
        got = model.score_all(torch.tensor([u]))[0]
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)


def test_neumf_architecture_sizes(synthetic_split):
    m = NeuMF(synthetic_split.n_users, synthetic_split.n_items, 20)
    assert (m.fc1.in_features, m.fc1.out_features) == (40, 20)
    assert (m.fc2.in_features, m.fc2.out_features) == (20, 10)
    assert (m.out.in_features, m.out.out_features) == (30, 1)


def test_cf_losses_hand_values():
    # pointwise BCE: −log σ(0) − log(1 − σ(0)) = 2 ln 2
    assert pointwise_bce(torch.tensor([0.0]), torch.tensor([[0.0]])).item() == pytest.approx(2 * math.log(2))
    # BPR: −log σ(1 − 1) − log σ(1 − 3) = ln 2 + ln(1 + e²)
    assert bpr_loss(torch.tensor([1.0]), torch.tensor([[1.0, 3.0]])).item() == pytest.approx(
        math.log(2) + math.log(1 + math.e ** 2))
    # a well-separated pair costs almost nothing
    assert pointwise_bce(torch.tensor([20.0]), torch.tensor([[-20.0]])).item() < 1e-8


def test_bprmf_uses_bpr_loss_and_others_pointwise(synthetic_split):
    pos, neg = torch.tensor([2.0]), torch.tensor([[1.0]])
    assert build_model("bprmf", synthetic_split, 4).cf_loss(pos, neg).item() == pytest.approx(bpr_loss(pos, neg).item())
    for name in ("cdae", "neumf"):
        assert build_model(name, synthetic_split, 4).cf_loss(pos, neg).item() == pytest.approx(
            pointwise_bce(pos, neg).item())
