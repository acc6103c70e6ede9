"""Learning curves and plateaus (ibd_lite.curves) on hand-worked cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ibd_lite.curves import (budget_probes, ceiling_sentence, curve_summary, history_frame, log_trend,
                             forecast_check, forecast_sentence, gap_sentence, longer_budget_gaps, longer_budget_table,
                             longer_gaps_view, longer_runs,
                             longer_sentences, plateau_epoch, retrace_gap, plateau_sentence, plateau_table, predicted_best, probe_label,
                             probe_predictions, probe_sentences, rough_multiple, table_curves, tail_gain,
                             trend_check, trend_sentence, trend_table, value_span)
from ibd_lite.errors import ConfigError


# ------------------------------------------------------------------------------------------------ plateaus
def test_flat_curve_plateaus_at_its_first_evaluation():
    s = curve_summary([10, 20, 30], [0.1, 0.1, 0.1])
    assert s == {"plateau epoch": 10, "best epoch": 10, "best": 0.1, "last epoch": 30, "tail gain %": 0.0,
                 "still rising": False}


def test_monotone_rising_curve_plateaus_only_at_the_end_and_is_still_rising():
    epochs, values = list(range(10, 101, 10)), [0.01 * i for i in range(1, 11)]
    assert plateau_epoch(epochs, values) == 100                   # 0.10 > 1.01 * 0.09
    assert plateau_epoch(epochs, values, tol=0.5) == 70           # 0.10 <= 1.5 * 0.07, > 1.5 * 0.06
    assert tail_gain(epochs, values) == pytest.approx(0.10 / 0.08 - 1)   # cut at 0.8 * 100 = epoch 80
    s = curve_summary(epochs, values)
    assert s["still rising"] and s["best epoch"] == 100 and s["tail gain %"] == pytest.approx(25.0)


def test_noisy_plateau():
    epochs, values = [10, 20, 30, 40, 50, 60], [0.50, 0.80, 0.79, 0.805, 0.78, 0.802]
    # running best 0.5, 0.8, 0.8, 0.805, 0.805, 0.805: 0.805 <= 1.01 * 0.8 from epoch 20 on
    assert plateau_epoch(epochs, values) == 20
    assert plateau_epoch(epochs, values, tol=0.001) == 40         # 0.805 > 1.001 * 0.8
    s = curve_summary(epochs, values)
    assert (s["best epoch"], s["best"], s["tail gain %"], s["still rising"]) == (40, 0.805, 0.0, False)


def test_overfitting_curve_plateaus_at_its_peak_and_is_not_rising():
    epochs, values = [10, 20, 30, 40, 50], [0.2, 0.3, 0.25, 0.22, 0.21]
    assert curve_summary(epochs, values)["plateau epoch"] == 20
    assert tail_gain(epochs, values) == 0.0


def test_late_jump_counts_as_still_rising():
    s = curve_summary([10, 20, 30, 40, 50], [0.5, 0.5, 0.5, 0.5, 0.6])
    assert s["plateau epoch"] == 50 and s["tail gain %"] == pytest.approx(20.0) and s["still rising"]


def test_a_gain_of_exactly_tol_is_not_rising():
    s = curve_summary([50, 100], [0.5, 0.625], tol=0.25)          # exact in binary: 0.625 = 1.25 * 0.5
    assert s["tail gain %"] == 25.0 and not s["still rising"] and s["plateau epoch"] == 50


def test_tail_before_the_first_evaluation_compares_with_the_first_value():
    assert tail_gain([90, 100], [0.5, 0.6]) == pytest.approx(0.2)   # nothing at or before epoch 80


def test_zero_curves():
    assert curve_summary([10, 20], [0.0, 0.0])["plateau epoch"] == 10
    assert tail_gain([10, 20], [0.0, 0.0]) == 0.0
    assert math.isinf(tail_gain([10, 20], [0.0, 0.1]))


@pytest.mark.parametrize("epochs, values, words", [
    ([], [], "empty learning curve"),
    ([10, 20], [0.1], "one length"),
    ([20, 10], [0.1, 0.2], "strictly increasing"),
    ([10, 10], [0.1, 0.2], "strictly increasing"),
    ([10, 20], [0.1, float("nan")], "NaN"),
    ([10, 20], [0.1, -0.2], "non-negative"),
])
def test_bad_curves_are_refused_with_the_reason(epochs, values, words):
    with pytest.raises(ConfigError, match=words):
        plateau_epoch(epochs, values)


def test_tail_must_be_a_share():
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        tail_gain([10, 20], [0.1, 0.2], tail=1.0)


# ------------------------------------------------------------------------------------------ curves of runs
def _valid(**by_role):
    return {role: {"H@50": h, "N@50": n} for role, (h, n) in by_role.items()}


def _run(method, seed=0, entries=(), pretrain=None):
    return {"config": {"method": method, "seed": seed}, "history": list(entries),
            "models": {}, "pretrain": pretrain or {}}


WARM_T = {"best_epoch": 4, "valid_best": {"N@50": 0.2}, "epochs_run": 4}
WARM_S = {"best_epoch": 2, "valid_best": {"N@50": 0.1}, "epochs_run": 4}
TEACHER = _run("teacher", pretrain={"teacher": WARM_T}, entries=[
    {"phase": "pretrain teacher", "epoch": 1},
    {"phase": "pretrain teacher", "epoch": 2, "valid": _valid(teacher=(0.3, 0.1))},
    {"phase": "pretrain teacher", "epoch": 4, "valid": _valid(teacher=(0.4, 0.2))},
    {"phase": "teacher", "epoch": 6, "valid": _valid(teacher=(0.5, 0.25))}])
STUDENT = _run("student", pretrain={"student": WARM_S}, entries=[
    {"phase": "pretrain student", "epoch": 2, "valid": _valid(student=(0.2, 0.1))},
    {"phase": "pretrain student", "epoch": 4, "valid": _valid(student=(0.2, 0.09))},
    {"phase": "student", "epoch": 6, "valid": _valid(student=(0.3, 0.11))}])
BD = _run("bd", pretrain={"teacher": WARM_T, "student": WARM_S}, entries=[
    {"phase": "bd", "epoch": 5},
    {"phase": "bd", "epoch": 6, "valid": _valid(teacher=(0.45, 0.22), student=(0.35, 0.12))}])


def test_history_frame_keeps_the_evaluated_epochs_of_one_model():
    f = history_frame(TEACHER, "teacher")
    assert f["epoch"].tolist() == [2, 4, 6] and f["N@50"].tolist() == [0.1, 0.2, 0.25]
    assert f["phase"].tolist() == ["pretrain teacher", "pretrain teacher", "teacher"]
    with pytest.raises(ConfigError, match="no valid metrics for model 'student'"):
        history_frame(TEACHER, "student")


def test_table_curves_put_the_shared_warmup_in_front_of_each_row():
    c = table_curves([BD, STUDENT, TEACHER])
    assert list(c.columns[:4]) == ["row", "role", "phase", "epoch"]
    assert list(dict.fromkeys(c["row"])) == ["Teacher", "Student", "BD-Teacher", "BD-Student"]
    bd_t = c[c["row"] == "BD-Teacher"]
    assert bd_t["epoch"].tolist() == [2, 4, 6] and bd_t["N@50"].tolist() == [0.1, 0.2, 0.22]
    assert bd_t["phase"].tolist() == ["pretrain teacher", "pretrain teacher", "bd"]
    bd_s = c[c["row"] == "BD-Student"]
    assert bd_s["H@50"].tolist() == [0.2, 0.2, 0.35] and set(bd_s["role"]) == {"student"}
    table = plateau_table(c, "N@50", tol=0.1)
    assert table.index.tolist() == ["Teacher", "Student", "BD-Teacher", "BD-Student"]
    # BD-Student N@50 0.1, 0.09, 0.12: 0.12 > 1.1 * 0.1 -> plateau at the last epoch, best epoch 6
    assert table.loc["BD-Student", ["plateau epoch", "best epoch"]].tolist() == [6, 6]
    # Teacher 0.1, 0.2, 0.25: 0.25 <= 1.1 * 0.2? no (0.22) -> 6; at tol 0.25: 4
    assert table.loc["Teacher", "plateau epoch"] == 6
    assert plateau_table(c, "N@50", tol=0.25).loc["Teacher", "plateau epoch"] == 4


def test_a_row_without_a_warmup_donor_starts_after_the_warmup():
    c = table_curves([BD])
    assert c[c["row"] == "BD-Teacher"]["epoch"].tolist() == [6]


def test_table_curves_refuse_mixed_seeds_mismatched_warmups_and_nothing():
    with pytest.raises(ConfigError, match="seeds \\[0, 1\\]"):
        table_curves([TEACHER, _run("bd", seed=1)])
    other = dict(BD, pretrain={"teacher": dict(WARM_T, best_epoch=2), "student": WARM_S})
    with pytest.raises(ConfigError, match="different teacher warm-ups"):
        table_curves([TEACHER, other])
    with pytest.raises(ConfigError, match="no runs given"):
        table_curves([])
    with pytest.raises(ConfigError, match="none of the runs"):
        table_curves([_run("sweep")])


def test_plateau_table_names_a_missing_metric():
    with pytest.raises(ConfigError, match="no metric 'N@20'.*H@50, N@50"):
        plateau_table(table_curves([TEACHER]), "N@20")


def test_plateau_table_on_a_plain_frame():
    f = pd.DataFrame({"row": ["A"] * 3 + ["B"] * 2, "role": "x", "phase": "p", "epoch": [10, 20, 30, 10, 20],
                      "N@50": [0.1, 0.2, 0.2, 0.3, 0.3]})
    t = plateau_table(f)
    assert t["plateau epoch"].tolist() == [20, 10] and t["still rising"].tolist() == [False, False]


def _table(rising: dict[str, float], settled: dict[str, int]) -> pd.DataFrame:
    recs = {r: {"plateau epoch": 2000, "tail gain %": g, "still rising": True} for r, g in rising.items()}
    recs.update({r: {"plateau epoch": e, "tail gain %": 0.0, "still rising": False} for r, e in settled.items()})
    return pd.DataFrame.from_dict(recs, orient="index")


def test_plateau_sentence_when_every_model_settled():
    s = plateau_sentence(_table({}, {"Teacher": 400, "CD": 1250, "RD": 900}))
    assert s == "every model's validation N@50 stopped improving by more than 1% by epoch 1,250 (the last to settle: CD)"


def test_plateau_sentence_names_the_rising_rows_and_their_gains():
    s = plateau_sentence(_table({"CD": 2.04}, {"Teacher": 400, "RD": 900}), metric="H@50")
    assert s == ("CD was still rising at the end of the budget (gain of the best validation H@50 over the last "
                 "20% of the budget: CD +2.0 %); the other models stopped improving by more than 1% by epoch 900")
    s = plateau_sentence(_table({"CD": 2.0, "RD": 1.5, "BD-Student": 3.0}, {"Teacher": 400}))
    assert s.startswith("CD, RD and BD-Student were still rising") and s.endswith("the other model stopped "
                                                                                 "improving by more than 1% by epoch 400")
    assert plateau_sentence(_table({"CD": 2.0}, {})).startswith("every model was still rising")
    with pytest.raises(ConfigError, match="no rows"):
        plateau_sentence(_table({}, {}))


# ------------------------------------------------------------------------------------------ beyond the budget
def test_log_trend_recovers_an_exact_logarithm_and_the_budget_its_rule_would_need():
    epochs = list(range(100, 1001, 100))
    values = [0.01 + 0.002 * math.log(e) for e in epochs]
    t = log_trend(epochs, values, since=0.5)                      # fitted on epochs 500..1000
    assert t["slope"] == pytest.approx(0.002, rel=1e-9) and t["intercept"] == pytest.approx(0.01, rel=1e-7)
    assert t["gain per doubling %"] == pytest.approx(100 * 0.002 * math.log(2) / values[-1])   # 5.82 %
    assert t["gain per doubling %"] == pytest.approx(5.8209, abs=1e-4)
    # tail gain of the trend b ln(1.25) / (a + b ln T) equals 1 % exactly at T*
    T = t["budget for the rule"]
    assert T == pytest.approx(math.exp((0.002 * math.log(1.25) / 0.01 - 0.01) / 0.002), rel=1e-6)   # 3.3e7
    assert 0.002 * math.log(1.25) / predicted_best(t, T) == pytest.approx(0.01, rel=1e-9)
    assert predicted_best(t, 2000) == pytest.approx(0.01 + 0.002 * math.log(2000), rel=1e-9)


def test_log_trend_of_a_settled_curve_needs_no_more_budget():
    # flat, over-fitting (the running best stays at the peak) and slow-but-high curves already meet the rule
    assert log_trend([10, 20, 30, 40], [0.2] * 4)["budget for the rule"] == 40
    over = log_trend([10, 20, 30, 40, 50], [0.1, 0.3, 0.25, 0.2, 0.2], since=0.4)
    assert over["slope"] == pytest.approx(0.0, abs=1e-15) and over["budget for the rule"] == 50
    slow = [1.0 + 0.001 * math.log(e) for e in (100, 200, 300, 400)]    # 0.1 * ln 1.25 / 1.006 < 1 %
    assert log_trend([100, 200, 300, 400], slow, since=0.1)["budget for the rule"] == 400


def test_log_trend_refuses_too_few_evaluations_and_a_bad_share():
    with pytest.raises(ConfigError, match="at least 3 evaluations"):
        log_trend([10, 20, 30, 40], [0.1, 0.2, 0.3, 0.4], since=0.6)      # only 30 and 40
    with pytest.raises(ConfigError, match=r"since must be a share"):
        log_trend([10, 20, 30], [0.1, 0.2, 0.3], since=1.0)


def test_trend_table_gives_each_row_its_budget_as_a_multiple():
    epochs = [100, 200, 300, 400]
    f = pd.DataFrame({"row": ["Flat"] * 4 + ["Log"] * 4, "role": "x", "phase": "p", "epoch": epochs * 2,
                      "N@50": [0.3] * 4 + [0.01 + 0.002 * math.log(e) for e in epochs]})
    t = trend_table(f, since=0.2)
    assert t.index.tolist() == ["Flat", "Log"] and t.loc["Flat", "x budget"] == 1.0
    assert t.loc["Log", "x budget"] == pytest.approx(t.loc["Log", "budget for the rule"] / 400)
    assert t.loc["Log", "x budget"] > 1e4


def test_probe_label_names_what_changed():
    base = {"pretrain_epochs": 600, "epochs": 1400, "lr_student": 0.002}
    assert probe_label(dict(base, epochs=3400), base) == "4,000 epochs (2x)"
    assert probe_label(dict(base, lr_student=0.005), base) == "lr 0.005 (2.5x)"
    assert probe_label(dict(base, epochs=3400, lr_student=0.01), base) == "4,000 epochs (2x), lr 0.01 (5x)"
    assert probe_label(dict(base), base) == "same as the table run"


def _alone(seed, epochs, lr, curve, ranks):
    from ibd_lite.codec import encode

    hits = sum(r < 50 for r in ranks) / len(ranks)
    return {"config": {"method": "student", "seed": seed, "pretrain_epochs": 10, "epochs": epochs,
                       "lr_student": lr},
            "history": [{"phase": "student", "epoch": 10 * (i + 1), "valid": _valid(student=(0.0, v))}
                        for i, v in enumerate(curve)],
            "models": {"student": {"test": {"H@50": hits}, "ranks": {"test": encode(ranks)}}}}


def test_budget_probes_compare_each_probe_with_the_table_run_on_the_same_users():
    base = _alone(0, 30, 0.002, [0.1, 0.2, 0.2, 0.2], [0, 100, 100, 100])              # test H@50 0.25
    longer = _alone(0, 70, 0.002, [0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.3, 0.4], [0, 0, 100, 100])   # 0.5
    faster = _alone(0, 30, 0.01, [0.3, 0.3, 0.3, 0.3], [0, 100, 100, 100])              # same users hit
    other_seed = _alone(5, 70, 0.002, [0.1] * 8, [0, 0, 0, 0])
    t = budget_probes([base], [longer, faster, other_seed], n_boot=4000)
    assert t.index.tolist() == ["table run", "80 epochs (2x)", "lr 0.01 (5x)"]
    assert t["seeds"].tolist() == [1, 1, 1] and t["epochs"].tolist() == [40, 80, 40]
    assert t[f"best valid N@50"].tolist() == [0.2, 0.4, 0.3] and t["best epoch"].tolist() == [20, 80, 10]
    assert t["plateau epoch"].tolist() == [20, 80, 10]
    # the longer run's best gained 0.4 / 0.2 over its last 20 % (epochs 64..80): still rising
    assert t.loc["80 epochs (2x)", "tail gain %"] == pytest.approx(100.0) and t["still rising"].tolist() == [0, 1, 0]
    assert t["test H@50"].tolist() == [0.25, 0.5, 0.25]
    # per-user differences (0, 1, 0, 0): mean 0.25 (+100 %); a bootstrap of 4 users spans 0 .. 0.75
    row = t.loc["80 epochs (2x)"]
    assert (row["test H@50 change"], row["change %"], row["lo"], row["hi"]) == (0.25, 100.0, 0.0, 0.75)
    assert t.loc["lr 0.01 (5x)", ["test H@50 change", "lo", "hi"]].tolist() == [0.0, 0.0, 0.0]
    assert pd.isna(t.loc["table run", "lo"])
    # the table run's trend over epochs 20..40 (running best 0.2, 0.2, 0.2) is flat: 0.2 expected at epoch 80;
    # the lr probe is not a longer budget, the other seed has no table run
    assert probe_predictions([base], [longer, faster, other_seed]) == {"80 epochs (2x)": pytest.approx(0.2)}
    with pytest.raises(ConfigError, match=r"shares a seed with the table runs \(seeds \[0\]\)"):
        budget_probes([base], [other_seed])
    with pytest.raises(ConfigError, match="no table run"):
        budget_probes([], [longer])


def _distilled(method, epochs, curves, ranks, seed=0, lr=0.002):
    """A hand-made run of `method` whose models (role -> validation N@50 curve, test ranks) are given."""
    from ibd_lite.codec import encode

    return {"config": {"method": method, "seed": seed, "pretrain_epochs": 10, "epochs": epochs,
                       "lr_student": lr, "lr_teacher": 0.001},
            "history": [{"phase": method, "epoch": 10 * (i + 1),
                         "valid": _valid(**{role: (0.0, c[i]) for role, c in curves.items()})}
                        for i in range(len(next(iter(curves.values()))))],
            "models": {role: {"test": {"H@50": sum(r < 50 for r in rk) / len(rk)}, "ranks": {"test": encode(rk)}}
                       for role, rk in ranks.items()}}


def test_longer_budget_table_and_gaps_pair_every_row_with_itself_and_with_the_student_alone():
    miss, hit = [100] * 4, [0] * 4
    table = [_distilled("student", 30, {"student": [0.1, 0.2, 0.2, 0.2]}, {"student": [0, 100, 100, 100]}),
             _distilled("cd", 30, {"student": [0.1, 0.2, 0.3, 0.3]}, {"student": [0, 0, 100, 100]}),
             _distilled("bd", 30, {"teacher": [0.4] * 4, "student": [0.2] * 4},
                        {"teacher": hit, "student": [0, 100, 100, 100]}),
             _distilled("rd", 30, {"student": [0.1] * 4}, {"student": miss})]          # RD has no probe
    probes = [_distilled("student", 70, {"student": [0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]}, {"student": miss}),
              _distilled("student", 30, {"student": [0.5] * 4}, {"student": hit}, lr=0.01),   # not longer: ignored
              _distilled("cd", 70, {"student": [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.4, 0.6]}, {"student": hit}),
              _distilled("bd", 70, {"teacher": [0.4] * 8, "student": [0.2] * 8},
                         {"teacher": [0, 0, 0, 100], "student": [0, 100, 100, 100]}),
              _distilled("cd", 70, {"student": [0.9] * 8}, {"student": hit}, seed=3)]   # no table run of seed 3
    t = longer_budget_table(table, probes, n_boot=2000)
    assert t.index.tolist() == ["Student", "CD", "BD-Teacher", "BD-Student"]
    assert t["seeds"].tolist() == [1] * 4 and t["epochs"].tolist() == [40] * 4
    assert t["longer epochs"].tolist() == [80] * 4
    assert t["best valid N@50"].tolist() == [0.2, 0.3, 0.4, 0.2]
    assert t["longer best valid N@50"].tolist() == [0.2, 0.6, 0.4, 0.2]
    assert t["valid change %"].tolist() == pytest.approx([0.0, 100.0, 0.0, 0.0])
    # CD's best doubled over its last 20 % (0.3 -> 0.6): still rising, plateau at its last evaluation
    assert t["still rising"].tolist() == [0, 1, 0, 0] and t["plateau epoch"].tolist() == [20, 80, 10, 10]
    assert t["test H@50"].tolist() == [0.25, 0.5, 1.0, 0.25]
    assert t["longer test H@50"].tolist() == [0.0, 1.0, 0.75, 0.25]
    # per-user test H@50 differences, longer minus table run: Student (-1, 0, 0, 0), CD (0, 0, 1, 1),
    # BD-Teacher (0, 0, 0, -1), BD-Student all 0
    assert t["test H@50 change"].tolist() == [-0.25, 0.5, -0.25, 0.0]
    assert t.loc["CD", ["lo", "hi"]].tolist() == [0.0, 1.0] and t.loc["BD-Student", ["lo", "hi"]].tolist() == [0, 0]
    g = longer_budget_gaps(table, probes, n_boot=2000)
    assert g.index.tolist() == ["CD", "BD-Student"] and g.index.name == "test H@50 minus Student"
    # CD - Student: table budget (0, 1, 0, 0); longer (1, 1, 1, 1): exactly +1 on every resample
    assert g.loc["CD", ["gap", "lo", "hi", "gap %", "verdict"]].tolist() == [0.25, 0.0, 0.75, 100.0, "n.d."]
    assert g.loc["CD", ["longer gap", "longer lo", "longer hi", "longer verdict"]].tolist() == [1.0, 1.0, 1.0, "ahead"]
    # BD-Student - Student: 0 at the table budget; longer (1, 0, 0, 0); gap % undefined against a student at 0
    assert g.loc["BD-Student", ["gap", "lo", "hi", "verdict"]].tolist() == [0.0, 0.0, 0.0, "n.d."]
    assert g.loc["BD-Student", "longer gap"] == 0.25 and pd.isna(g.loc["BD-Student", "longer gap %"])
    assert [(r["config"]["method"], r["config"]["seed"]) for r in longer_runs(table, probes)] == [
        ("student", 0), ("cd", 0), ("bd", 0)]
    # the longer CD run repeats its table run's first 30 epochs and then continues
    assert retrace_gap(probes[2], table[1], "student") == 0.0
    assert retrace_gap(probes[4], table[1], "student") == pytest.approx(0.8)      # 0.9 vs 0.1 at epoch 10
    shifted = _distilled("cd", 30, {"student": [0.1]}, {"student": hit})
    shifted["history"][0]["epoch"] = 5                                              # evaluated at epoch 5 only
    with pytest.raises(ConfigError, match="share no evaluated epoch"):
        retrace_gap(probes[2], shifted, "student")
    said = longer_sentences(t)
    assert said["CD"] == ("best validation N@50 0.3000 at 40 epochs, 0.6000 at 80 (+100.0 %), still rising at epoch "
                          "80; on the test users not distinguishable from its table run (+100.0 % H@50, 95% CI of "
                          "the difference [+0.0000, +1.0000])")
    assert said["BD-Teacher"].startswith("best validation N@50 0.4000 at 40 epochs, 0.4000 at 80 (+0.0 %), settled "
                                         "by epoch 10; on the test users not distinguishable from its table run")
    assert gap_sentence(g, 40, 80) == (
        "against the student alone, on the same test users, the test H@50 gaps were: CD +0.2500 (not "
        "distinguishable) at 40 epochs and +1.0000 (ahead) at 80; BD-Student +0.0000 (not distinguishable) at 40 "
        "epochs and +0.2500 (not distinguishable) at 80. With twice the budget the gap widened for CD and "
        "BD-Student, and the verdict changed for CD")
    same = g.assign(**{"longer gap": [0.1, 0.0], "longer verdict": ["n.d.", "n.d."]})
    assert gap_sentence(same, 40, 120).endswith("With 3 times the budget the gap narrowed for CD, and no verdict "
                                                "changed")
    mixed = g.assign(**{"longer gap": [0.1, 0.3]})
    assert gap_sentence(mixed, 40, 80).endswith("the gap widened for BD-Student and narrowed for CD, and the verdict "
                                                "changed for CD")
    # a gap below zero that moves towards zero narrowed; one that crosses zero changed sign
    neg = g.assign(gap=[-0.2, 0.1], **{"longer gap": [-0.1, -0.3]})
    assert gap_sentence(neg, 40, 80).endswith("With twice the budget the gap narrowed for CD and changed sign for "
                                              "BD-Student, and the verdict changed for CD")
    flat = g.iloc[:1].assign(**{"longer gap": [0.25], "longer verdict": ["n.d."]})
    assert gap_sentence(flat, 40, 80).endswith("at 80. With twice the budget the verdict did not change")
    with pytest.raises(ConfigError, match="no longer run of 'Student'"):
        longer_budget_gaps(table, probes[2:])
    with pytest.raises(ConfigError, match="grid budget-distill"):
        longer_budget_table(table, probes[1:2])


def test_longer_gaps_of_ibd_against_bd_for_each_role_and_their_printed_view():
    hit = [0] * 4
    table = [_distilled("bd", 30, {"teacher": [0.4] * 4, "student": [0.2] * 4},
                        {"teacher": hit, "student": [0, 100, 100, 100]}),
             _distilled("ibd", 30, {"teacher": [0.4] * 4, "student": [0.2] * 4},
                        {"teacher": [0, 0, 100, 100], "student": hit})]
    probes = [_distilled("bd", 70, {"teacher": [0.4] * 8, "student": [0.2] * 8},
                         {"teacher": [0, 0, 0, 100], "student": [0, 100, 100, 100]}),
              _distilled("ibd", 70, {"teacher": [0.4] * 8, "student": [0.2] * 8},
                         {"teacher": hit, "student": [0, 0, 100, 100]})]
    s = longer_budget_gaps(table, probes, alone="BD-Student", n_boot=2000)
    t = longer_budget_gaps(table, probes, alone="BD-Teacher", n_boot=2000)
    assert s.index.tolist() == ["iBD-Student"] and t.index.tolist() == ["iBD-Teacher"]
    # students, iBD minus BD per user: (0, 1, 1, 1) at the table budget, (0, 1, 0, 0) at the longer one;
    # a bootstrap mean of 0 needs user 0 four times (1/256 < 2.5 %), so the lower bound is 0.25: ahead
    assert s.loc["iBD-Student", ["gap", "lo", "hi", "verdict"]].tolist() == [0.75, 0.25, 1.0, "ahead"]
    assert s.loc["iBD-Student", ["longer gap", "longer verdict"]].tolist() == [0.25, "n.d."]
    # teachers: (0, 0, -1, -1), a mean of 0 (users 0 and 1 only) has chance 1/16 > 2.5 %: n.d.; then (0, 0, 0, 1)
    assert t.loc["iBD-Teacher", ["gap", "lo", "hi", "verdict", "longer gap", "longer verdict"]].tolist() == [
        -0.5, -1.0, 0.0, "n.d.", 0.25, "n.d."]
    view = longer_gaps_view(pd.concat([s, t]), 40, 80)
    assert view.columns.tolist() == ["40 epochs: gap [95% CI]", "40 epochs: verdict", "80 epochs: gap [95% CI]",
                                     "80 epochs: verdict"]
    assert view.loc["iBD-Student"].tolist() == ["+0.7500 [+0.2500, +1.0000]", "ahead",
                                                "+0.2500 [+0.0000, +0.7500]", "n.d."]
    assert view.loc["iBD-Teacher", "40 epochs: gap [95% CI]"] == "-0.5000 [-1.0000, +0.0000]"
    assert gap_sentence(s, 40, 80, alone="BD's student").endswith(
        "With twice the budget the gap narrowed for iBD-Student, and the verdict changed for iBD-Student")


def _trend(slopes: dict[str, float], times: dict[str, float], pct: dict[str, float]) -> pd.DataFrame:
    role = {r: "teacher" if "Teacher" in r else "student" for r in slopes}
    per = {r: b * math.log(2) for r, b in slopes.items()}
    return pd.DataFrame({"slope": slopes, "gain per doubling": per, "x budget": times, "gain per doubling %": pct,
                         "role": role})


def test_trend_sentence_says_how_far_off_the_plateau_is_and_which_way_the_gaps_move():
    t = _trend({"Teacher": 0.0, "Student": 0.002, "CD": 0.008, "BD-Teacher": 0.003, "BD-Student": 0.005},
               {"Teacher": 1.0, "Student": 1919.6, "CD": 3.76e6, "BD-Teacher": 1.0, "BD-Student": 6.4e5},
               {"Teacher": 0.0, "Student": 4.74, "CD": 9.71, "BD-Teacher": 2.8, "BD-Student": 7.7})
    s = trend_sentence(t, ["Student", "CD", "BD-Teacher", "BD-Student"])
    ln2 = math.log(2)
    assert s == ("fitted over the second half of the budget, the best validation N@50 of the student rows still "
                 "rising grows by 4.7 to 9.7 % per doubling of the budget, so by the 1% rule they would settle only "
                 "after 2,000 to 4 million times this budget. Per doubling, the student trained alone gains "
                 f"{0.002 * ln2:+.4f} N@50 and CD and BD-Student {0.005 * ln2:+.4f} to {0.008 * ln2:+.4f}: if the "
                 "trends held, more epochs would move every distilled student further above the student alone, "
                 "not close the gaps")
    slow = _trend({"Student": 0.004, "CD": 0.001, "RD": 0.006}, {"Student": 50, "CD": 3, "RD": 80},
                  {"Student": 5, "CD": 1.5, "RD": 6})
    assert trend_sentence(slow, ["Student", "CD"]).endswith(
        "more epochs would let the student alone catch up with every distilled student")
    assert trend_sentence(slow, ["Student", "CD", "RD"]).endswith(
        "more epochs would favour RD and let the student alone catch up with CD")
    one = trend_sentence(slow, ["CD"])
    assert one.startswith("fitted over the second half of the budget, the best validation N@50 of the student "
                          "row still rising grows by 1.5 % per doubling") and one.endswith("after 3.0 times this budget")
    assert trend_sentence(t, ["BD-Teacher"]) == "" and trend_sentence(t, []) == ""


def test_probe_sentences_state_each_probe_with_its_paired_verdict():
    probes = pd.DataFrame({"seeds": [2, 2, 2], "best valid N@50": [0.04, 0.042, 0.036],
                           "still rising": [2, 1, 0], "change %": [float("nan"), 3.0, -5.0],
                           "lo": [float("nan"), 0.0005, -0.004], "hi": [float("nan"), 0.003, 0.001]},
                          index=pd.Index(["table run", "4,000 epochs (2x)", "lr 0.01 (5x)"]))
    s = probe_sentences(probes, predicted={"4,000 epochs (2x)": 0.0413})
    assert s == {
        "4,000 epochs (2x)": "best validation N@50 0.0420 (+5.0 %; the trend predicted 0.0413), still rising on "
                             "1 of 2 seeds at its end; on the test users the student is ahead of the table run "
                             "(+3.0 % H@50, 95% CI of the difference [+0.0005, +0.0030])",
        "lr 0.01 (5x)": "best validation N@50 0.0360 (-10.0 %), settled at its end; on the test users the student "
                        "is not distinguishable from the table run (-5.0 % H@50, 95% CI of the difference "
                        "[-0.0040, +0.0010])"}
    all_rising = probes.assign(**{"still rising": [2, 2, 2]})
    assert "), still rising at its end;" in probe_sentences(all_rising)["lr 0.01 (5x)"]


def test_ceiling_sentence_compares_the_probes_with_the_table_run():
    probes = pd.DataFrame({"seeds": 2, "best valid N@50": [0.0387, 0.0396, 0.0390, 0.0381],
                           "still rising": [1, 0, 0, 0], "lr": [0.002, 0.002, 0.005, 0.01]},
                          index=pd.Index(["table run", "4,000 epochs (2x)", "lr 0.005 (2.5x)", "lr 0.01 (5x)"]))
    assert ceiling_sentence(probes) == (
        "every probe settled, on a best validation N@50 against the table run's 0.0387: 4,000 epochs (2x) at "
        "0.0396 (+2.3 %), lr 0.005 (2.5x) at 0.0390 (+0.8 %), lr 0.01 (5x) at 0.0381 (-1.6 %). The table run "
        "stopped 2.3 % below the best level a probe reached (4,000 epochs (2x), with more epochs): its budget "
        "cost this student that much on validation")
    lr_top = probes.assign(**{"best valid N@50": [0.0387, 0.0380, 0.0420, 0.0381]})
    assert ceiling_sentence(lr_top).endswith("(lr 0.005 (2.5x), with a larger learning rate): its budget cost "
                                             "this student that much on validation")
    # the best probe still rising on one seed: a lower bound; only the 5x probe settled, lower
    partly = probes.assign(**{"still rising": [1, 1, 1, 0], "best valid N@50": [0.0385, 0.0395, 0.0386, 0.0371]})
    assert ceiling_sentence(partly) == (
        "of the probes, lr 0.01 (5x) settled, on a best validation N@50 against the table run's 0.0385: lr 0.01 "
        "(5x) at 0.0371 (-3.6 %). The table run stopped 2.6 % below the best level a probe reached (4,000 epochs "
        "(2x), with "
        "more epochs, and still rising on 1 of 2 seeds): its budget cost this student at least that much on "
        "validation")
    close = probes.assign(**{"best valid N@50": [0.0387, 0.0389, 0.0390, 0.0381]})
    assert ceiling_sentence(close).endswith(". The table run was within 1% of every probe's best level, so more "
                                            "training would add little to this student")
    assert ceiling_sentence(close.assign(**{"still rising": [1, 1, 1, 2]})) == ""
    assert ceiling_sentence(probes.assign(**{"still rising": [1, 1, 1, 2]})).startswith(
        "the table run stopped 2.3 % below the best level a probe reached (4,000 epochs (2x), with more epochs, "
        "and still rising on 1 of 2 seeds)")


def test_trend_check_sets_the_forecast_against_the_longer_probe():
    trend = pd.DataFrame({"x budget": [1919.6]}, index=pd.Index(["Student"]))
    probes = pd.DataFrame({"epochs": [2000, 4000, 2000], "best valid N@50": [0.0387, 0.0396, 0.039],
                           "still rising": [1, 0, 0], "plateau epoch": [1790, 3070, 940]},
                          index=pd.Index(["table run", "4,000 epochs (2x)", "lr 0.005 (2.5x)"]))
    assert trend_check(trend, probes, {"4,000 epochs (2x)": 0.0405}) == (
        "for the student alone the trend forecast a best validation N@50 of 0.0405 at 2 times the budget, and "
        "2,000 times the budget to settle; the probe reached 0.0396 and settled by epoch 3,070: the curve bends "
        "over sooner than a logarithm, so the trends above overstate how far the rows are from settling")
    rising = probes.assign(**{"still rising": [1, 1, 0]})
    assert trend_check(trend, rising, {"4,000 epochs (2x)": 0.0405}).endswith("reached 0.0396 and was still rising")
    two = rising.assign(seeds=[2, 2, 2])
    assert trend_check(trend, two, {"4,000 epochs (2x)": 0.0405}).endswith("and was still rising on 1 of 2 seeds")
    settled = trend_check(trend.assign(**{"x budget": [1.0]}), probes, {"4,000 epochs (2x)": 0.0405})
    assert settled == ("for the student alone the trend forecast a best validation N@50 of 0.0405 at 2 times the "
                       "budget, and that it had settled; the probe reached 0.0396 and settled by epoch 3,070")
    assert trend_check(trend, probes, {}) == ""


def test_rough_multiple_rounds_to_one_significant_figure():
    assert [rough_multiple(x) for x in (1.0, 2.46, 12.3, 1919.6, 93412.9, 639733.1, 3762975.4, 2.6e7)] == [
        "1.0", "2.5", "10", "2,000", "90,000", "600,000", "4 million", "30 million"]


def test_value_span_gives_one_value_when_the_ends_agree_at_the_precision():
    assert value_span([4.74, 9.71, 6.4], ".1f") == "4.7 to 9.7"
    assert value_span(pd.Series([0.891, 0.994]), ".2f", "–") == "0.89–0.99"
    assert value_span([0.501, 0.499], ".2f", "–") == "0.50"


def test_learning_curves_draw_only_the_roles_present_and_mark_the_table_budget():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ibd_lite.plots import learning_curves

    c = table_curves([STUDENT])
    fig = learning_curves(c, {"N@50": plateau_table(c, "N@50")}, 4, metrics=("N@50",), budget_end=6)
    assert len(fig.axes) == 1                                           # no empty teacher panel
    marks = {line.get_linestyle(): line.get_xdata()[0] for line in fig.axes[0].lines
             if line.get_linestyle() in (":", "--")}
    assert marks == {":": 4, "--": 6}                                   # end of warm-up, end of the table budget
    both = learning_curves(table_curves([BD, STUDENT, TEACHER]), {"N@50": plateau_table(
        table_curves([BD, STUDENT, TEACHER]), "N@50")}, 4, metrics=("N@50",))
    assert len(both.axes) == 2 and not [ln for ln in both.axes[0].lines if ln.get_linestyle() == "--"]
    plt.close("all")


def test_warmup_report_identifies_a_warmup_without_its_timings():
    from ibd_lite.curves import warmup_report

    a = {"pretrain": {"student": dict(WARM_S, seconds_train=100.3, cached=False)}}
    b = {"pretrain": {"student": dict(WARM_S, seconds_train=165.0, cached=True)}}
    assert warmup_report(a, "student") == warmup_report(b, "student") == {
        "best_epoch": 2, "valid_best": {"N@50": 0.1}, "epochs_run": 4}
    other = {"pretrain": {"student": dict(WARM_S, best_epoch=3)}}
    assert warmup_report(a, "student") != warmup_report(other, "student")
    assert warmup_report(a, "teacher") == {"best_epoch": None, "valid_best": None, "epochs_run": None}


def test_forecast_check_sets_the_trend_beside_the_measured_gain():
    trend = pd.DataFrame({"gain per doubling": [0.002, 0.004, 0.001, 0.0], "role": ["student"] * 4},
                         index=["Student", "CD", "RD", "Teacher"])
    longer = pd.DataFrame({"epochs": [2000] * 3, "longer epochs": [4000, 4000, 8000],
                           "best valid N@50": [0.038, 0.058, 0.040],
                           "longer best valid N@50": [0.0398, 0.059, 0.044]}, index=["Student", "CD", "RD"])
    c = forecast_check(trend, longer)
    assert c.index.tolist() == ["Student", "CD", "RD"]                      # the Teacher has no longer run
    # 4x the budget is two doublings: RD's forecast is 2 x 0.001
    assert c["forecast gain"].tolist() == pytest.approx([0.002, 0.004, 0.002])
    assert c["measured gain"].tolist() == pytest.approx([0.0018, 0.001, 0.004])
    assert c["measured / forecast"].tolist() == pytest.approx([0.9, 0.25, 2.0])
    assert forecast_sentence(c) == (
        "the log trends of the table runs against the longer runs, best validation N@50 gained: Student +0.0020 "
        "forecast, +0.0018 measured; CD +0.0040 forecast, +0.0010 measured; RD +0.0020 forecast, +0.0040 "
        "measured. Within 50 %, the trend held for Student; it overstated the gain of CD; it understated the gain "
        "of RD")
    flat = forecast_check(trend.assign(**{"gain per doubling": 0.0}), longer.iloc[:1])
    assert pd.isna(flat.loc["Student", "measured / forecast"])             # nothing forecast: no ratio
    assert forecast_sentence(flat).endswith("Student +0.0000 forecast, +0.0018 measured")
