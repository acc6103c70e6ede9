"""The comparison protocol (SPEC §8): equal budgets, selection on validation only, per-role tuned learning
rates, paired bootstrap statistics on hand-made cases, compact per-user storage, and the report's refusal to
pool unlike runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ibd_lite import run
from ibd_lite.codec import decode, encode
from ibd_lite.config import make_config
from ibd_lite.errors import ConfigError
from ibd_lite.report import Run, comparisons, is_table_config, mean_pm_sd, summary, table_rows
from ibd_lite.stats import paired_bootstrap, paired_difference, per_user_metric, verdict

TINY = dict(profile="ci", model="cdae", device="cpu", pretrain_epochs=2, epochs=4, eval_every=2,
            refresh_every=1, rounds=2, rd_warmup=2)


# ---------------------------------------------------------------- statistics on hand-made cases

def test_per_user_metric_hand_worked():
    ranks = np.array([0, 1, 49, 50, 99, 100])
    assert per_user_metric(ranks, "H@50").tolist() == [1, 1, 1, 0, 0, 0]
    assert per_user_metric(ranks, "H@100").tolist() == [1, 1, 1, 1, 1, 0]
    n = per_user_metric(ranks, "N@50")
    assert n[0] == 1.0 and n[1] == pytest.approx(1 / math.log2(3)) and n[2] == pytest.approx(1 / math.log2(51))
    assert n[3:].tolist() == [0, 0, 0]
    with pytest.raises(ConfigError, match="H@K or N@K"):
        per_user_metric(ranks, "R@5")


def test_bootstrap_of_a_constant_difference_is_that_constant():
    ci = paired_bootstrap(np.full(200, 0.25), n_boot=500)
    assert ci["mean"] == ci["lo"] == ci["hi"] == 0.25
    assert ci["p"] == 1 / 500                                     # never on the other side of 0: floored


def test_bootstrap_interval_matches_the_normal_theory_width():
    """d_u in {0, 1}, half each, n = 10,000: mean 0.5, sd 0.5, so the 95% CI is 0.5 ± 1.96 · 0.005."""
    d = np.tile([0.0, 1.0], 5000)
    ci = paired_bootstrap(d, n_boot=4000, seed=1)
    assert ci["mean"] == 0.5
    assert ci["lo"] == pytest.approx(0.5 - 1.96 * 0.005, abs=1e-3)
    assert ci["hi"] == pytest.approx(0.5 + 1.96 * 0.005, abs=1e-3)


def test_symmetric_differences_are_not_distinguishable():
    d = np.tile([-1.0, 1.0], 500)
    ci = paired_bootstrap(d, n_boot=2000)
    assert ci["lo"] < 0 < ci["hi"] and ci["p"] > 0.5
    assert verdict(ci, "iBD", "BD") == "iBD and BD are not distinguishable at this budget"
    assert verdict({"lo": 0.01, "hi": 0.02}, "iBD", "BD") == "iBD is ahead of BD"
    assert verdict({"lo": -0.02, "hi": -0.01}, "iBD", "BD") == "iBD is behind BD"


def test_paired_difference_pools_seeds_per_user():
    # 4 users, 2 seeds. A hits nobody; B hits user 0 on both seeds and user 1 on one seed.
    a = [np.array([60, 60, 60, 60]), np.array([60, 60, 60, 60])]
    b = [np.array([0, 0, 60, 60]), np.array([0, 60, 60, 60])]
    out = paired_difference(a, b, "H@50", n_boot=200)
    assert out["mean"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert out["mean_a"] == 0 and out["rel_pct"] is None and out["n_seeds"] == 2
    with pytest.raises(ConfigError, match="same seeds"):
        paired_difference(a, b[:1])


def test_codec_round_trip_is_exact_and_compact():
    x = np.random.default_rng(0).integers(0, 25_000, size=5219)
    enc = encode(x)
    assert np.array_equal(decode(enc), x)
    assert len(json.dumps(enc)) < len(json.dumps(x.tolist()))
    assert decode(encode(np.zeros((3, 4), dtype=np.int64))).shape == (3, 4)
    with pytest.raises(TypeError):
        encode(np.array([0.5]))


# ---------------------------------------------------------------- budgets and selection


def _trained_epochs(res: dict) -> int:
    return sum(1 for h in res["history"] if h["phase"] not in ("pretrain teacher", "pretrain student"))


def _check_selected_on_validation(res: dict, role: str, warm_best: float) -> None:
    vals = [h["valid"][role]["N@50"] for h in res["history"] if "valid" in h and role in h["valid"]]
    best = res["models"][role]["valid_best"]["N@50"]
    assert best == max([warm_best, *vals])                         # the warm-up is a candidate too
    assert res["models"][role]["valid"]["N@50"] == pytest.approx(best, abs=1e-12)   # the kept weights are those


def test_every_method_trains_the_same_budget_and_selects_on_validation(module_cache):
    """No early stop: alone, RD, CD, BD and iBD all train exactly `epochs` after the same warm-up, even
    with a patience that would have stopped them, and keep the best-validation checkpoint."""
    epochs = {}
    for method in ("teacher", "student", "rd", "cd", "bd", "ibd"):
        res = run(dict(TINY, method=method, patience=1), progress=False)
        epochs[method] = _trained_epochs(res)
        for role, m in res["models"].items():
            if method in ("rd", "cd") and role == "teacher":
                continue                                           # the frozen teacher does not train
            warm = res["pretrain"][role]["valid_best"]["N@50"]
            _check_selected_on_validation(res, role, warm)
            assert decode(m["ranks"]["test"]).shape == (300,)
    assert set(epochs.values()) == {TINY["epochs"]}


def test_early_stop_is_only_an_explicit_option(module_cache):
    res = run(dict(TINY, method="student", patience=1, early_stop=True, epochs=12, lr=1e-9), progress=False)
    assert _trained_epochs(res) < 12                               # nothing improves at lr 1e-9: it stops


def test_ibd_needs_room_for_its_rounds():
    with pytest.raises(ConfigError, match=r"at least \(rounds \+ 1\) \* refresh_every = 110"):
        make_config(profile="quick", method="ibd", epochs=100)
    make_config(profile="quick", method="ibd", epochs=110)


def test_a_base_model_can_have_its_own_budget_and_explicit_values_win():
    neumf = make_config(profile="converged", model="neumf")
    cdae = make_config(profile="converged", model="cdae")
    assert (neumf.pretrain_epochs, neumf.epochs, neumf.eval_every) == (50, 150, 10)
    assert (cdae.pretrain_epochs, cdae.epochs) == (600, 1400)          # the profile's own budget
    assert make_config(profile="converged", model="NeuMF", epochs=7).epochs == 7
    quick = make_config(profile="quick", model="neumf", method="ibd")   # iBD's rounds fit in the budget
    assert (quick.pretrain_epochs, quick.epochs, quick.refresh_every, quick.rounds) == (20, 30, 5, 5)
    assert make_config(profile="paper", model="neumf").epochs == 400    # no override at the paper profile


def test_role_learning_rates_come_from_the_tuned_file(tmp_path, monkeypatch):
    import ibd_lite.tuning as T

    f = tmp_path / "tuned.json"
    f.write_text(json.dumps({"ci/synthetic/cdae": {"teacher": {"lr": 1e-3, "weight_decay": 1e-5},
                                                   "student": {"lr": 2e-3, "weight_decay": 1e-6}}}))
    monkeypatch.setattr(T, "TUNED_FILE", f)
    monkeypatch.setattr(T.load_tuned, "__defaults__", (f,))
    c = make_config(profile="ci", model="cdae")
    assert (c.lr_teacher, c.wd_teacher, c.lr_student, c.wd_student) == (1e-3, 1e-5, 2e-3, 1e-6)
    c = make_config(profile="ci", model="cdae", lr=5e-4)                  # an explicit lr wins for both
    assert c.lr_teacher == c.lr_student == 5e-4
    c = make_config(profile="ci", model="neumf")                          # not tuned: the profile's lr
    assert c.lr_teacher == c.lr_student == 5e-3 and c.wd_teacher == 1e-6


# ---------------------------------------------------------------- the report refuses unlike runs

def _fake(tmp_path, method: str, seed: int, **over) -> Run:
    c = make_config(profile="ci", method=method, seed=seed, device="cpu", **over).to_dict()
    ranks = np.arange(300) % 80 + (0 if method == "teacher" else 5)
    model = {"test": {"H@50": 0.5, "H@100": 0.9, "N@50": 0.2, "N@100": 0.25},
             "ranks": {"test": encode(ranks), "valid": encode(ranks)}}
    role = "teacher" if method == "teacher" else "student"
    models = {"teacher": model, "student": model} if method in ("bd", "ibd") else {role: model}
    path = tmp_path / f"{method}-{seed}-{len(over)}.json"
    return Run(path, {"config": c, "models": models, "provenance": {"commit": "abc", "fingerprint": "f1"}})


def test_report_pools_only_identical_configs(tmp_path):
    runs = [_fake(tmp_path, m, s) for m in ("teacher", "student", "bd") for s in (0, 1)]
    rows = table_rows(runs, "synthetic", "cdae")
    assert list(rows) == ["Teacher", "Student", "BD-Teacher", "BD-Student"]
    assert [r.config["seed"] for r, _ in rows["Student"]] == [0, 1]
    comp = comparisons(rows, metrics=("H@50",), n_boot=200)
    assert set(comp["B vs A"]) == {"BD-Teacher vs Teacher", "BD-Student vs Student"}

    dup = runs + [_fake(tmp_path, "student", 1, kd_per_pos=5)]       # same config, seed 1 twice
    with pytest.raises(ConfigError, match=r"seed\(s\) \[1\] more than once"):
        table_rows(dup, "synthetic", "cdae")

    mixed = runs + [_fake(tmp_path, "teacher", 2, epochs=20)]        # another budget in one folder
    with pytest.raises(ConfigError, match="different budgets|different configs"):
        table_rows(mixed, "synthetic", "cdae")


def test_ablations_and_sweeps_are_not_table_rows(tmp_path):
    assert is_table_config(_fake(tmp_path, "ibd", 0).config)
    assert not is_table_config(_fake(tmp_path, "ibd", 0, ibd_variant="no-carry").config)
    assert not is_table_config(_fake(tmp_path, "ibd", 0, gamma_ts=0.1).config)
    assert not is_table_config(_fake(tmp_path, "bd", 0, bd_direction="released").config)


# ---------------------------------------------------------------- the paper-style table: mean ± sd, Improv.

TABLE_VALS = {"BD-Teacher": [0.20, 0.24], "iBD-Teacher": [0.22, 0.26], "BD-Student": [0.10, 0.10],
              "iBD-Student": [0.12, 0.13], "Teacher": [0.30, 0.31, 0.35]}


def _rows(vals: dict[str, list[float]]) -> dict[str, list]:
    """Table rows of hand-made runs, one per seed, with H@K = x and N@K = x / 2."""
    def run(row: str, seed: int, x: float) -> Run:
        test = {"H@50": x, "H@100": x, "N@50": x / 2, "N@100": x / 2}
        return Run(Path(f"{row}-{seed}.json"), {"models": {"m": {"test": test}}})

    return {row: [(run(row, s, x), "m") for s, x in enumerate(xs)] for row, xs in vals.items()}


def test_table_shows_mean_and_sd_over_seeds():
    t = summary(_rows(TABLE_VALS), decimals=3)
    assert list(t.columns) == ["H@50", "H@100", "N@50", "N@100", "seeds"]
    assert list(t.index) == list(TABLE_VALS)
    assert t.loc["BD-Teacher", "H@50"] == "0.220 ± 0.028"                 # sd(0.20, 0.24) = 0.0283
    assert t.loc["BD-Student", "H@50"] == "0.100 ± 0.000"                 # two equal seeds: sd is 0
    sd = float(np.std([0.30, 0.31, 0.35], ddof=1))
    assert t.loc["Teacher", "H@50"] == f"0.320 ± {sd:.3f}" and t.loc["Teacher", "seeds"] == 3
    n = np.array([0.12, 0.13]) / 2
    assert t.loc["iBD-Student", "N@50"] == f"{n.mean():.3f} ± {n.std(ddof=1):.3f}"   # 0.062 ± 0.004


def test_a_single_seed_shows_its_value_without_an_sd():
    assert summary(_rows({"Teacher": [0.30]}), decimals=2).loc["Teacher", "H@50"] == "0.30"
    assert mean_pm_sd([0.110, 0.112, 0.114]) == "0.1120 ± 0.0020"
    assert mean_pm_sd([0.5], decimals=3) == "0.500"


def test_improvement_rows_are_ibd_over_bd_in_percent_of_the_seed_means():
    from ibd_lite.reproduce import improvements, paper_table

    imp = improvements(_rows(TABLE_VALS))
    assert imp.loc["Improv.BD-T", "H@50"] == pytest.approx((0.24 - 0.22) / 0.22 * 100)   # 9.09 %
    assert imp.loc["Improv.BD-S", "N@50"] == pytest.approx(25.0)                         # 0.0625 / 0.05
    table = paper_table(_rows(TABLE_VALS))
    assert table.loc["Improv.BD-T", "H@50"] == "+9.09%" and table.loc["Improv.BD-S", "H@100"] == "+25.00%"
    assert improvements(_rows({"Teacher": [0.3], "BD-Student": [0.1]})).empty          # no iBD row: none


# ---------------------------------------------------------------- what BD's soft labels ask of the receiver

def test_distilled_pairs_and_label_push(synthetic_split):
    import torch

    from ibd_lite.analysis import distilled_pairs, label_push
    from ibd_lite.models import build_model

    s = synthetic_split
    torch.manual_seed(0)
    teacher, student = build_model("bprmf", s, 16), build_model("bprmf", s, 4)
    pairs = distilled_pairs(teacher, student, s, eps_t=1e-2, eps_e=1e-4, tau=5.0, direction="st")
    assert len(pairs) == 5 * int(s.train_counts.sum())               # S→T weights are positive everywhere
    observed = s.train_mask(torch.tensor(pairs["user"].to_numpy()))
    assert not observed[torch.arange(len(pairs)), torch.tensor(pairs["item"].to_numpy())].any()
    assert pairs[["rank_T", "rank_S"]].min().min() >= 1
    # exp(ε_e (rank_T − rank_S)) favours items the student ranks higher than the teacher
    assert (pairs["rank_S"] < pairs["rank_T"]).mean() > 0.5
    # targets σ(s/τ) of near-zero logits sit near 0.5, as do the receiver's own probabilities
    assert pairs["target"].between(0, 1).all() and pairs["p_receiver"].between(0, 1).all()
    push = label_push(pairs)
    assert push["pairs (%)"].sum() == pytest.approx(100.0)
    assert push["label above (%)"].dropna().between(0, 100).all()


# ---------------------------------------------------------------- the chapters' comparison and its words

def test_chapter_comparison_words_come_from_the_intervals(tmp_path, monkeypatch):
    from ibd_lite import book

    def fake(method, seed, ranks):
        r = _fake(tmp_path, method, seed)
        model = {"test": {"H@50": float((ranks <= 50).mean()), "H@100": float((ranks <= 100).mean()),
                          "N@50": 0.1, "N@100": 0.1}, "ranks": {"test": encode(ranks), "valid": encode(ranks)}}
        r.result["models"] = {k: model for k in r.result["models"]}
        return r

    hit, miss = np.ones(300, dtype=np.int64), np.full(300, 500, dtype=np.int64)
    half = np.where(np.arange(300) < 150, 1, 500)
    runs = [fake("teacher", s, half) for s in (0, 1)] + [fake("student", s, miss) for s in (0, 1)]
    runs += [fake("bd", s, half) for s in (0, 1)] + [fake("ibd", s, hit) for s in (0, 1)]
    glued = {}
    monkeypatch.setattr(book, "glue", lambda name, value, fmt="": glued.setdefault(name, format(value, fmt)))
    cmp = book.Comparison.from_rows(table_rows(runs, "synthetic", "cdae"), n_boot=500, metrics=("H@50",))
    assert cmp.n_seeds == 2 and cmp.best_student() == "BD-Student"
    # every user gains 0.5 on average from Student (0) to BD-Student (0.5): the interval excludes 0
    assert cmp.test("BD-Student", "Student")["B − A"] == pytest.approx(0.5)
    assert cmp.sentence("BD-Student", "Student").startswith("ahead of Student (")
    assert cmp.sentence("BD-Teacher", "Teacher") == ("not distinguishable from Teacher (+0.0 % H@50, 95% CI of "
                                                     "the difference [+0.0000, +0.0000])")
    cmp.glue_all("x_")
    assert glued["x_n_seeds"] == "2" and glued["x_mean_iBD_Student_H50"] == "1.0000"
    assert glued["x_n_seeds_text"] == "2 seeds"
    assert glued["x_iBD_Student_vs_BD_Student_H50_verdict"] == "ahead"
    assert glued["x_BD_Teacher_vs_Teacher_H50_verdict"] == "not distinguishable"
    assert glued["x_iBD_Student_vs_BD_Student_H50_pct"] == "+100.0"
    with pytest.raises(KeyError, match="no paired comparison RD vs Student"):
        cmp.test("RD", "Student")


def test_ci_text_prints_an_interval_with_signs_or_a_dash():
    from ibd_lite.report import ci_text

    assert ci_text(-0.00123, 0.0034) == "[-0.0012, +0.0034]"
    assert ci_text(0.0, 0.0) == "[+0.0000, +0.0000]"
    assert ci_text(float("nan"), 0.1) == "–" and ci_text(0.1, float("nan")) == "–"
