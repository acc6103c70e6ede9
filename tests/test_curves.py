"""Learning curves and plateaus (ibd_lite.curves) on hand-worked cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ibd_lite.curves import (curve_summary, history_frame, plateau_epoch, plateau_sentence, plateau_table,
                             table_curves, tail_gain)
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
