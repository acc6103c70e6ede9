"""Training engine and methods on the ci profile: learning beats chance, seeded runs repeat exactly,
BD's stop-gradient, and RD / CD / BD / iBD runs return what they should."""

from __future__ import annotations

import pytest
import torch

from ibd_lite.codec import decode
from ibd_lite import methods
from ibd_lite.config import make_config
from ibd_lite.metrics import evaluate
from ibd_lite.models import build_model
from ibd_lite.runner import run
from ibd_lite.sampling import UnobservedSampler
from ibd_lite.sparse import counts_to_indptr
from ibd_lite.train import KDPairs, Learner, train_epoch

# small distillation runs on the ci profile (synthetic data)
TINY = dict(profile="ci", model="cdae", device="cpu", pretrain_epochs=2, epochs=4, eval_every=2,
            refresh_every=1, rounds=2, rd_warmup=2)


def losses(history):
    return [(h["phase"], h["epoch"], h["loss"]) for h in history]


# ------------------------------------------------------------------------------------------ learning


def test_short_ci_run_beats_random_scorer(cache_dir, synthetic_split):
    res = run(profile="ci", model="cdae", method="teacher", device="cpu", pretrain_epochs=6, epochs=2,
              eval_every=2, progress=False)
    s = synthetic_split
    g = torch.Generator().manual_seed(0)
    table = torch.rand(s.n_users, s.n_items, generator=g)
    rand_valid = evaluate(lambda u: table[u], s, "valid")
    rand_test = evaluate(lambda u: table[u], s, "test")
    expected_h50 = (50 / (s.n_items - 1 - s.train_counts.double())).mean().item()   # random full ranking
    assert rand_test["H@50"] == pytest.approx(expected_h50, abs=0.06)
    m = res["models"]["teacher"]
    assert m["valid_best"]["N@50"] > rand_valid["N@50"] + 0.03
    assert m["test"]["H@50"] > max(rand_test["H@50"], expected_h50) + 0.1
    assert m["test"]["N@50"] > rand_test["N@50"]
    assert m["test"]["H@100"] >= m["test"]["H@50"] and m["test"]["N@100"] >= m["test"]["N@50"]
    # the CF loss goes down
    hist = res["history"]
    assert hist[-1]["loss"]["teacher"]["cf"] < hist[0]["loss"]["teacher"]["cf"]


def test_seeded_cpu_run_repeats_exactly():
    cfg = dict(TINY, method="ibd", seed=3)
    a = run(cfg, progress=False, cache=False)
    b = run(cfg, progress=False, cache=False)
    for role in ("teacher", "student"):
        assert a["models"][role]["test"] == b["models"][role]["test"]
        assert a["pretrain"][role]["valid_best"] == b["pretrain"][role]["valid_best"]
    assert losses(a["history"]) == losses(b["history"])
    assert [r["ts"]["total"] for r in a["rounds"]] == [r["ts"]["total"] for r in b["rounds"]]
    c = run(dict(cfg, seed=4), progress=False, cache=False)
    assert losses(c["history"]) != losses(a["history"])


# ------------------------------------------------------------------------------------------ BD stop-gradient


def kd_pairs_for(split, items_per_user: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.full((split.n_users,), items_per_user, dtype=torch.long)
    items = torch.randint(split.n_items, (int(counts.sum()),), generator=g)
    return counts_to_indptr(counts), items


@pytest.mark.parametrize("name", ["cdae", "neumf"])
def test_no_gradient_flows_into_the_giving_model(name, synthetic_split):
    s = synthetic_split
    torch.manual_seed(0)
    teacher = build_model(name, s, 16)
    student = build_model(name, s, 4)
    teacher.train()                                         # the giver's mode must be restored too
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert all(p.requires_grad for p in teacher.parameters())
    indptr, items = kd_pairs_for(s, 3)
    sl = Learner("student", student, lr=1e-2, weight_decay=0.0, patience=5)
    sl.kd = KDPairs(indptr, items, coef=0.5, giver=teacher, tau=2.0)
    s_before = [p.clone() for p in student.parameters()]
    totals = train_epoch([sl], s, UnobservedSampler(s), neg_per_pos=2, batch_size=128 if name == "cdae" else 2048)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in teacher.parameters())
    assert teacher.training
    assert totals["student"]["kd"] > 0 and totals["student"]["cf"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(s_before, student.parameters()))


def test_both_bd_learners_update_and_kd_changes_the_student(synthetic_split):
    """Two learners giving to each other: both move, and the KD term changes the student's update."""
    s = synthetic_split
    sampler = UnobservedSampler(s)
    indptr, items = kd_pairs_for(s, 4)

    def one_epoch(coef):
        torch.manual_seed(0)
        teacher, student = build_model("bprmf", s, 16), build_model("bprmf", s, 4)
        tl = Learner("teacher", teacher, 1e-2, 0.0, 5)
        sl = Learner("student", student, 1e-2, 0.0, 5)
        sl.kd = KDPairs(indptr, items, coef=coef, giver=teacher, tau=5.0)
        tl.kd = KDPairs(indptr, items, coef=coef, giver=student, tau=5.0)
        t0 = [p.clone() for p in teacher.parameters()]
        torch.manual_seed(1)
        totals = train_epoch([tl, sl], s, sampler, neg_per_pos=1, batch_size=1024)
        assert any(not torch.equal(a, b) for a, b in zip(t0, teacher.parameters()))
        return totals, [p.detach().clone() for p in student.parameters()]

    tot_on, s_on = one_epoch(0.5)
    tot_off, s_off = one_epoch(0.0)
    assert tot_on["teacher"]["kd"] > 0 and tot_on["student"]["kd"] > 0
    assert any(not torch.allclose(a, b) for a, b in zip(s_on, s_off))


def test_learner_keeps_and_restores_best_weights(synthetic_split):
    model = build_model("bprmf", synthetic_split, 4)
    lr = Learner("m", model, 1e-3, 0.0, patience=2)
    assert lr.observe(1, {"N@50": 0.2, "H@50": 0.5})
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.p.weight.add_(1.0)
    assert not lr.observe(2, {"N@50": 0.1}) and not lr.stopped
    assert not lr.observe(3, {"N@50": 0.2}) and lr.stopped        # equal is not better
    assert (lr.best_epoch, lr.best_score) == (1, 0.2)
    lr.restore_best()
    for k, v in model.state_dict().items():
        assert torch.equal(v, best[k])


# ------------------------------------------------------------------------------------------ methods



def check_metrics(m: dict, ks=(50, 100)):
    for k in ks:
        assert 0.0 <= m[f"H@{k}"] <= 1.0 and 0.0 <= m[f"N@{k}"] <= m[f"H@{k}"]


@pytest.mark.parametrize("method", ["rd", "cd"])
def test_unidirectional_methods_report_student_and_teacher(method, module_cache):
    res = run(dict(TINY, method=method), progress=False)
    assert set(res["models"]) == {"student", "teacher"}
    for role in ("student", "teacher"):
        check_metrics(res["models"][role]["test"])
    assert res["models"]["student"]["dim"] == 4 and res["models"]["teacher"]["dim"] == 32
    assert len(res["history"]) == 4                            # `epochs` distillation epochs
    assert [h["epoch"] for h in res["history"]] == sorted({h["epoch"] for h in res["history"]})
    assert all(h["loss"]["student"]["kd"] > 0 for h in res["history"])
    if method == "rd":
        assert [h["rd_discrepancy"] for h in res["history"]] == [False, False, True, True]
    assert res["timing"]["distill_s"] > 0


def test_teacher_is_frozen_in_rd_and_cd(module_cache):
    """RD and CD report the frozen warm-up teacher: the same model BD starts from."""
    warm = run(dict(TINY, method="bd", epochs=1), progress=False)["warmup_test"]["teacher"]
    for method in ("rd", "cd"):
        res = run(dict(TINY, method=method), progress=False)
        assert res["models"]["teacher"]["test"] == warm


@pytest.mark.parametrize("method", ["rd", "cd"])
def test_frozen_teacher_reports_its_parameter_count(method, module_cache, synthetic_split):
    """The result's n_params of RD's / CD's teacher is its size, not 0 because its weights are frozen."""
    res = run(dict(TINY, method=method), progress=False)
    size = build_model("cdae", synthetic_split, 32).n_params()
    assert res["models"]["teacher"]["n_params"] == size
    assert res["models"]["student"]["n_params"] == build_model("cdae", synthetic_split, 4).n_params() < size


def test_cd_student_guide_ranks_without_dropout(module_cache, monkeypatch):
    """CD's student-guided ranking must come from the student's deterministic (eval-mode) scores."""
    from ibd_lite.models import CDAE

    modes = []
    real_top, real_score = methods.top_items, CDAE.score_all
    in_top = []

    def spy_top(ctx, model, k, *a, **kw):
        in_top.append(True)
        try:
            return real_top(ctx, model, k, *a, **kw)
        finally:
            in_top.pop()

    def spy_score(self, users):
        if in_top and self.dim == 4:          # the student scoring inside the guide ranking
            modes.append(self.training)
        return real_score(self, users)

    monkeypatch.setattr(methods, "top_items", spy_top)
    monkeypatch.setattr(CDAE, "score_all", spy_score)
    run(dict(TINY, method="cd", cd_guide="student"), progress=False)
    assert len(modes) >= 4                    # re-ranked every epoch (one call per user batch)
    assert not any(modes), f"guide ranked in training mode (CDAE dropout on): {modes}"


@pytest.mark.parametrize("method, model", [("bd", "cdae"), ("ibd", "cdae"), ("ibd", "neumf"), ("bd", "bprmf")])
def test_bidirectional_methods_report_both_models(method, model, module_cache):
    res = run(dict(TINY, method=method, model=model), progress=False)
    assert set(res["models"]) == {"teacher", "student"}
    for role in ("teacher", "student"):
        check_metrics(res["models"][role]["test"])
        check_metrics(res["warmup_test"][role])
    for h in res["history"]:
        assert h["loss"]["teacher"]["kd"] > 0 and h["loss"]["student"]["kd"] > 0
        if "valid" in h:
            assert set(h["test"]) == {"teacher", "student"} == set(h["valid"])
    assert sum("valid" in h for h in res["history"]) == 2        # eval_every = 2 over 4 epochs
    assert ("rounds" in res) == (method == "ibd")


def test_ibd_round_log(module_cache, synthetic_split):
    res = run(dict(TINY, method="ibd"), progress=False)
    rounds = res["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]          # P = 1, M = 2, 4 epochs: then plain BD
    n_u = (5 * synthetic_split.train_counts).tolist()
    for r in rounds:
        assert 0.0 <= r["overlap@N"] <= 1.0
        for d in ("ts", "st"):
            tot = r[d]["total"]
            per = {k: decode(v).tolist() for k, v in r[d]["per_user"].items()}
            assert all(x <= n for x, n in zip(per["sampled"], n_u))
            assert tot["sampled"] == sum(per["sampled"])
            if r["round"] == 0:
                continue
            assert tot["corrected"] <= tot["checked"]
            assert all(c <= k for c, k in zip(per["corrected"], per["checked"]))
            assert tot["corrected"] + tot["noise"] == tot["checked"]
            assert tot["carried"] + tot["retired"] <= tot["noise"]
            assert tot["carried"] > 0                          # random-ish small models disagree a lot
    assert rounds[1]["st"]["total"]["sampled"] == sum(n_u)    # S→T weights are positive everywhere


def test_ibd_no_carry_variant_carries_nothing(module_cache):
    res = run(dict(TINY, method="ibd", ibd_variant="no-carry"), progress=False)
    later = [r for r in res["rounds"] if r["round"] > 0]
    assert later
    for r in later:
        for d in ("ts", "st"):
            assert r[d]["total"]["carried"] == 0
            assert r[d]["total"]["retired"] == 0
            assert r[d]["total"]["checked"] > 0


def test_bd_direction_option_changes_the_run(module_cache):
    a = run(dict(TINY, method="bd", epochs=2), progress=False)
    b = run(dict(TINY, method="bd", epochs=2, bd_direction="released"), progress=False)
    assert a["config"]["bd_direction"] == "paper" and b["config"]["bd_direction"] == "released"
    assert losses(a["history"]) != losses(b["history"])


# ------------------------------------------------------------------------------------------ RD helpers


def test_ranks_of_items_exact(synthetic_split):
    s = synthetic_split
    cfg = make_config(profile="ci", method="rd", device="cpu")
    ctx = methods.Context(cfg, s, torch.device("cpu"), UnobservedSampler(s), progress=False)
    g = torch.Generator().manual_seed(0)
    table = torch.randn(s.n_users, s.n_items, generator=g)

    class Fixed(torch.nn.Module):
        def score_all(self, users):
            return table[users]

    items = methods.top_items(ctx, Fixed(), 5)
    ranks = methods.ranks_of_items(ctx, Fixed(), items)
    # an item's own top-5 position is its rank among unobserved items
    assert ranks.tolist() == [[1, 2, 3, 4, 5]] * s.n_users
    observed = s.train_mask(torch.arange(s.n_users))
    assert not observed.gather(1, items).any()
    some = torch.randint(s.n_items, (s.n_users, 3), generator=g)
    masked = table.masked_fill(observed, float("-inf"))
    expect = (masked[:, None, :] > masked.gather(1, some)[:, :, None]).sum(-1) + 1
    assert torch.equal(methods.ranks_of_items(ctx, Fixed(), some, batch_users=50), expect)
