"""BD refreshes and iBD's feedback re-distillation (SPEC §5-6): hand-built feedback checks, round sets,
the retirement rule over several rounds, and the epoch schedule of a BD / iBD run."""

from __future__ import annotations

import pytest
import torch

from ibd_lite.codec import decode

from ibd_lite.bd import RoundSet, build_round_set, feedback, refresh
from ibd_lite.config import make_config
from ibd_lite.methods import BDState, Context, make_learner
from ibd_lite.models import build_model
from ibd_lite.sampling import CdfSampler, UnobservedSampler, ranks_from_scores

N_ITEMS = 8


def t(x):
    return torch.tensor(x, dtype=torch.long)


# ------------------------------------------------------------------------------------------ feedback


def hand_prev() -> RoundSet:
    # pairs (0,2) twice, (0,5), (1,4), (1,2); the duplicate must be checked once
    return RoundSet(users=t([0, 0, 0, 1, 1]), items=t([2, 5, 2, 4, 2]), streak=t([0, 1, 0, 3, 0]))


def test_feedback_hand_case():
    prev = hand_prev()
    giver = t([3, 2, 3, 1, 10])       # rank of each pair in the giving model (aligned with prev)
    receiver = t([3, 10, 3, 7, 4])    # ... and in the receiving model
    fb = feedback(prev, giver, receiver, retire_after=3, n_items=N_ITEMS)
    # distinct pairs, sorted by user then item: (0,2), (0,5), (1,2), (1,4)
    assert fb["users"].tolist() == [0, 0, 1, 1]
    assert fb["items"].tolist() == [2, 5, 2, 4]
    assert fb["corrected"].tolist() == [True, False, True, False]   # (0,2): a tie counts as corrected
    assert fb["noise"].tolist() == [False, True, False, True]
    assert fb["streak"].tolist() == [0, 1, 0, 3]
    assert fb["retired"].tolist() == [False, False, False, True]    # streak already == retire_after
    assert fb["carry"].tolist() == [False, True, False, False]
    assert fb["first"].tolist() == [0, 1, 4, 3]                     # position of first occurrence in prev
    # a longer patience keeps (1,4) in play
    fb5 = feedback(prev, giver, receiver, retire_after=5, n_items=N_ITEMS)
    assert fb5["retired"].tolist() == [False] * 4
    assert fb5["carry"].tolist() == [False, True, False, True]


def test_feedback_both_directions():
    """T→S: the student receives (corrected iff rank_S ≤ rank_T); S→T mirrored."""
    prev = RoundSet(users=t([0, 0, 0]), items=t([1, 3, 6]), streak=t([0, 0, 0]))
    rank_t = t([2, 9, 4])
    rank_s = t([10, 1, 4])
    ts = feedback(prev, rank_t, rank_s, 3, N_ITEMS)           # giver teacher, receiver student
    st = feedback(prev, rank_s, rank_t, 3, N_ITEMS)           # giver student, receiver teacher
    assert ts["corrected"].tolist() == [False, True, True]
    assert st["corrected"].tolist() == [True, False, True]
    assert ts["carry"].tolist() == [True, False, False]
    assert st["carry"].tolist() == [False, True, False]


def test_feedback_duplicate_keeps_longest_streak():
    # item 3 was carried (streak 2) and also drawn fresh (streak 0) last round: one check, streak 2
    prev = RoundSet(users=t([0, 0, 0]), items=t([3, 5, 3]), streak=t([2, 0, 0]))
    fb = feedback(prev, t([1, 1, 1]), t([9, 9, 9]), 3, N_ITEMS)
    assert fb["items"].tolist() == [3, 5]
    assert fb["streak"].tolist() == [2, 0]
    assert fb["noise"].sum().item() == 2 and len(fb["items"]) == 2


# ------------------------------------------------------------------------------------------ round sets


def sampler_on(items_per_user: list[int | None], n_items: int = 10) -> CdfSampler:
    """A sampler that always draws one given item per user (None: a user with all-zero weights)."""
    w = torch.zeros(len(items_per_user), n_items)
    for u, i in enumerate(items_per_user):
        if i is not None:
            w[u, i] = 1.0
    return CdfSampler(w)


def test_build_round_set_carried_first_capped_and_topped_up():
    carried_users = t([0, 0, 0, 1, 2])
    carried_items = t([4, 5, 6, 7, 3])
    carried_streak = t([0, 1, 2, 0, 1])
    order = t([2, 0, 1, 5, 9])              # last round's positions: user 0's order is 5, 6, 4
    n_u = t([2, 3, 2, 1])
    rs, kept = build_round_set(carried_users, carried_items, carried_streak, order, n_u,
                               sampler_on([9, 8, None, 1]))
    assert kept.tolist() == [2, 1, 1, 0]     # never more than n_u carried
    assert rs.users.tolist() == [0, 0, 1, 1, 1, 2, 3]
    assert rs.items.tolist() == [5, 6, 7, 8, 8, 3, 1]
    assert rs.streak.tolist() == [2, 3, 1, 0, 0, 2, 0]   # carried +1, fresh 0
    # totals per user: n_u where the sampler has weight; user 2 (no weight) keeps only its carried item
    assert torch.bincount(rs.users, minlength=4).tolist() == [2, 3, 1, 1]
    assert rs.indptr(4).tolist() == [0, 2, 5, 6, 7]


def test_build_round_set_without_carry_is_all_fresh():
    empty = t([])
    rs, kept = build_round_set(empty, empty, empty, empty, t([3, 0, 2]), sampler_on([4, 5, 6]))
    assert kept.tolist() == [0, 0, 0]
    assert rs.users.tolist() == [0, 0, 0, 2, 2]
    assert rs.items.tolist() == [4, 4, 4, 6, 6]
    assert rs.streak.tolist() == [0] * 5


@pytest.mark.parametrize("retire_after", [1, 3])
def test_uncorrected_item_is_redistilled_exactly_A_rounds_then_retired(retire_after):
    """Item 3 is never corrected, item 7 (the only fresh item) always is; n_u = 2."""
    n_items = 10

    def ranks(rs: RoundSet):
        bad = rs.items == 3
        giver = torch.where(bad, 1, 20)
        receiver = torch.where(bad, 50, 2)
        return giver, receiver

    sampler = sampler_on([7], n_items)
    rs = RoundSet(users=t([0, 0]), items=t([3, 7]), streak=t([0, 0]))   # round 1: fresh samples
    history = []
    retired_at = None
    for rnd in range(2, 10):
        giver, receiver = ranks(rs)
        fb = feedback(rs, giver, receiver, retire_after, n_items)
        if fb["retired"].any():
            assert fb["items"][fb["retired"]].tolist() == [3]
            retired_at = rnd
        c = fb["carry"]
        rs, kept = build_round_set(fb["users"][c], fb["items"][c], fb["streak"][c], fb["first"][c],
                                   t([2]), sampler)
        assert len(rs.items) == 2
        history.append(rs.streak[rs.items == 3].tolist())
    redistilled = [h for h in history if h]
    assert redistilled == [[k] for k in range(1, retire_after + 1)]     # streaks 1..A in consecutive rounds
    assert retired_at == retire_after + 2
    assert all(h == [] for h in history[retire_after:])                  # never comes back by carry-over


# ------------------------------------------------------------------------------------------ refresh


def random_pair(split, seed=0, name="bprmf"):
    torch.manual_seed(seed)
    teacher = build_model(name, split, 16).eval()
    student = build_model(name, split, 4).eval()
    for m in (teacher, student):
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.5)
    return teacher, student


def test_refresh_query_ranks_match_full_ranks(synthetic_split):
    s = synthetic_split
    teacher, student = random_pair(s)
    g = torch.Generator().manual_seed(0)
    qu = torch.sort(torch.randint(s.n_users, (500,), generator=g)).values
    qi = torch.randint(s.n_items, (500,), generator=g)
    r = refresh(teacher, student, s, eps_t=1e-2, eps_e=1e-4, direction="paper", top_n=20, device="cpu",
                queries={"ts": (qu, qi)}, keep_lists=True, batch_users=64)
    users = torch.arange(s.n_users)
    observed = s.train_mask(users)
    with torch.no_grad():
        full_t = ranks_from_scores(teacher.score_all(users), observed)
        full_s = ranks_from_scores(student.score_all(users), observed)
    qt, qs = r.query_ranks["ts"]
    assert torch.equal(qt, full_t[qu, qi]) and torch.equal(qs, full_s[qu, qi])
    # top-N lists and their overlap
    assert r.top_lists["T"].shape == (s.n_users, 20)
    assert (full_t.gather(1, r.top_lists["T"]) <= 20).all()
    in_t, in_s = full_t <= 20, full_s <= 20
    assert torch.allclose(r.overlap, (in_t & in_s).sum(1).float() / 20)
    # the samplers never draw an observed item, and T→S draws only items the teacher ranks higher
    n_u = 5 * s.train_counts
    for d in ("ts", "st"):
        indptr, items = r.samplers[d].sample(n_u, generator=g)
        u = torch.repeat_interleave(users, indptr[1:] - indptr[:-1])
        assert not observed[u, items].any()
        if d == "ts":
            assert (full_s[u, items] > full_t[u, items]).all()


def test_refresh_identical_models_give_no_teacher_to_student_pairs(synthetic_split):
    s = synthetic_split
    teacher, _ = random_pair(s)
    r = refresh(teacher, teacher, s, eps_t=1e-2, eps_e=1e-4, direction="paper", top_n=10, device="cpu")
    assert torch.allclose(r.overlap, torch.ones(s.n_users))
    indptr, items = r.samplers["ts"].sample(5 * s.train_counts)
    assert indptr[-1].item() == 0 and items.numel() == 0
    # S→T weights are exp(0) = 1 on every unobserved item: every user gets its full n_u
    indptr, _ = r.samplers["st"].sample(5 * s.train_counts)
    assert torch.equal(indptr[1:] - indptr[:-1], 5 * s.train_counts)


# ------------------------------------------------------------------------------------------ BD / iBD epoch schedule


def bd_state(split, **kw) -> BDState:
    cfg = make_config(profile="ci", model="bprmf", method="bd", device="cpu", **kw)
    ctx = Context(cfg, split, torch.device("cpu"), UnobservedSampler(split), progress=False)
    teacher, student = random_pair(split, seed=1)
    tl, sl = make_learner(ctx, "teacher", teacher), make_learner(ctx, "student", student)
    return BDState(ctx, teacher, student, tl, sl)


def kd_snapshot(state: BDState):
    return {"ts": (state.sl.kd, state.sl.kd.items.clone()), "st": (state.tl.kd, state.tl.kd.items.clone())}


def test_bd_epoch_draws_fresh_pairs_every_epoch(synthetic_split):
    s = synthetic_split
    torch.manual_seed(0)
    state = bd_state(s, refresh_every=3)
    state.bd_epoch(1)
    a = kd_snapshot(state)
    state.bd_epoch(2)
    b = kd_snapshot(state)
    assert state.sl.kd.giver is state.teacher and state.tl.kd.giver is state.student
    for d in ("ts", "st"):
        assert not torch.equal(a[d][1], b[d][1])
    n_u = 5 * s.train_counts
    assert state.tl.kd.size == int(n_u.sum())                     # S→T weights are never all zero
    counts = state.sl.kd.indptr[1:] - state.sl.kd.indptr[:-1]
    assert ((counts == n_u) | (counts == 0)).all()


def test_ibd_schedule_rounds_then_bd(synthetic_split):
    """P = 2, M = 1: round 0 = epochs 1-2 (plain BD: fresh draws every epoch), round 1 = epochs 3-4 (one set
    kept for the round), then plain BD with fresh draws every epoch."""
    s = synthetic_split
    torch.manual_seed(0)
    state = bd_state(s, refresh_every=2, rounds=1, after_rounds="bd")
    n_u = 5 * s.train_counts
    logs, snaps = [], []
    for epoch in range(1, 7):
        logs.append(state.ibd_epoch(epoch))
        snaps.append(kd_snapshot(state))
        observed = s.train_mask(state.sl.kd.users)
        assert not observed[torch.arange(len(state.sl.kd.users)), state.sl.kd.items].any()
    assert logs[0]["round"] == 0 and logs[1]["round"] == 0 and logs[2]["round"] == 1
    assert logs[3] == {}
    assert "round" not in logs[4]
    assert [r["round"] for r in state.rounds] == [0, 1]
    for d in ("ts", "st"):
        assert not torch.equal(snaps[0][d][1], snaps[1][d][1])    # round 0 is plain BD: redraws every epoch
        assert snaps[3][d][0] is snaps[2][d][0]                   # round t >= 1 keeps its set for P epochs
        assert not torch.equal(snaps[4][d][1], snaps[5][d][1])    # after the rounds: BD redraws every epoch
    entry = state.rounds[1]
    for d in ("ts", "st"):
        tot = entry[d]["total"]
        per = {k: decode(v).tolist() for k, v in entry[d]["per_user"].items()}
        assert tot["corrected"] + tot["noise"] == tot["checked"]
        assert tot["retired"] == 0                                # nothing has been carried A times yet
        assert tot["carried"] <= tot["noise"]
        assert all(x <= n for x, n in zip(per["sampled"], n_u.tolist()))
        assert all(c <= k for c, k in zip(per["corrected"], per["checked"]))
        # every pair distilled in round 0 (both epochs) is what round 1 checks
        keys = torch.cat([k.users * s.n_items + k.items for k in (snaps[0][d][0], snaps[1][d][0])])
        assert tot["checked"] == len(torch.unique(keys))


def test_ibd_rounds_continue_when_asked(synthetic_split):
    torch.manual_seed(0)
    state = bd_state(synthetic_split, refresh_every=1, rounds=1, after_rounds="rounds")
    logs = [state.ibd_epoch(e) for e in range(1, 5)]
    assert [lg.get("round") for lg in logs] == [0, 1, 2, 3]
    assert [r["round"] for r in state.rounds] == [0, 1, 2, 3]
