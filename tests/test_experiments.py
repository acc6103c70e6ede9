"""Experiment grids: the configs of each named experiment, stable run names, resumable grids, tables."""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd
import pytest

from ibd_lite import experiments as E
from ibd_lite import runner
from ibd_lite.config import make_config
from ibd_lite.errors import ConfigError

METHODS = ["teacher", "student", "rd", "cd", "bd", "ibd"]


def test_table_configs_ci():
    cfgs = E.experiment_configs("table", profile="ci", seeds=(0, 1))
    assert all(c["profile"] == "ci" and c["dataset"] == "synthetic" for c in cfgs)
    per = Counter((c["model"], c["seed"], c["method"]) for c in cfgs)
    assert set(per.values()) == {1}
    for model in ("cdae", "neumf"):
        for seed in (0, 1):
            assert sorted(m for (mo, s, m) in per if (mo, s) == (model, seed)) == sorted(METHODS)
    assert len(cfgs) == 2 * 2 * 6
    for c in cfgs:                                   # every config is valid
        make_config(**c)


def test_table_configs_real_data_and_restrictions():
    cfgs = E.experiment_configs("table", profile="quick", seeds=(0,))
    assert {c["dataset"] for c in cfgs} == {"citeulike-t", "foursquare-tky", "foursquare-nyc"}
    one = E.experiment_configs("table", profile="ci", dataset="synthetic", model="bprmf", seeds=(4,))
    assert [c["method"] for c in one] == METHODS
    assert {(c["model"], c["seed"]) for c in one} == {("bprmf", 4)}


def test_other_experiments():
    abl = E.experiment_configs("ablation", profile="ci", model="cdae", seeds=(0,))
    assert [(c["method"], c.get("ibd_variant", "full")) for c in abl] == [("bd", "full"), ("ibd", "no-carry"),
                                                                         ("ibd", "full")]
    dirs = E.experiment_configs("direction", profile="ci", model="cdae", seeds=(0,))
    assert [c["bd_direction"] for c in dirs] == ["paper", "released"]
    f6 = E.experiment_configs("figure6", profile="ci", model="neumf", seeds=(0,))
    assert len(f6) == 9 and {c["method"] for c in f6} == {"ibd"}
    assert {(c["gamma_ts"], c["gamma_st"]) for c in f6} == {(a, b) for a in (0.1, 0.5, 0.9) for b in (0.1, 0.5, 0.9)}
    with pytest.raises(ConfigError, match="table"):
        E.experiment_configs("figure99", profile="ci")


def test_run_name_is_stable_and_config_specific():
    c = make_config(profile="ci", method="bd", model="cdae", seed=2).to_dict()
    name = E.run_name(c)
    assert name == E.run_name(dict(reversed(list(c.items()))))         # key order does not matter
    assert name == E.run_name(make_config(profile="ci", method="bd", model="cdae", seed=2).to_dict())
    assert name.startswith("synthetic-cdae-bd-ci-s2-") and name.endswith(".json")
    others = {E.run_name(dict(c, seed=3)), E.run_name(dict(c, gamma_ts=0.9)), E.run_name(dict(c, method="ibd")),
              E.run_name(dict(c, bd_direction="released"))}
    assert name not in others and len(others) == 4


def test_run_grid_resumes_finished_runs(tmp_path, monkeypatch):
    cfgs = [dict(profile="ci", model="cdae", method="student", device="cpu", pretrain_epochs=1, epochs=1, seed=s)
            for s in (0, 1)]
    monkeypatch.setenv("IBD_CACHE_DIR", str(tmp_path / "cache"))
    first = E.run_grid(cfgs, tmp_path / "res", progress=False)
    names = sorted(p.name for p in (tmp_path / "res").glob("*.json"))
    assert names == sorted(E.run_name(make_config(**c).to_dict()) for c in cfgs)

    def boom(*a, **kw):
        raise AssertionError("a finished run was redone")

    monkeypatch.setattr(runner, "run", boom)
    monkeypatch.setattr(runner, "_execute", boom)
    again = E.run_grid(cfgs, tmp_path / "res", progress=False)
    assert [r["models"] for r in again] == [r["models"] for r in first]


# ------------------------------------------------------------------------------------------ tables


def long_frame() -> pd.DataFrame:
    recs = []
    vals = {"BD-Teacher": [0.20, 0.24], "iBD-Teacher": [0.22, 0.26], "BD-Student": [0.10, 0.10],
            "iBD-Student": [0.12, 0.13], "Teacher": [0.30, 0.31, 0.35]}
    for row, xs in vals.items():
        for seed, x in enumerate(xs):
            recs.append({"dataset": "d", "model": "cdae", "row": row, "seed": seed,
                         "H@50": x, "N@50": x / 2})
    return pd.DataFrame.from_records(recs)


def test_summary_table_mean_and_std():
    t = E.summary_table(long_frame(), decimals=3)
    assert list(t.columns) == ["H@50", "N@50", "seeds"]
    assert t.loc[("d", "cdae", "BD-Teacher"), "H@50"] == "0.220 ± 0.028"      # std(0.20, 0.24) = 0.0283
    assert t.loc[("d", "cdae", "BD-Student"), "H@50"] == "0.100 ± 0.000"
    sd = pd.Series([0.30, 0.31, 0.35]).std(ddof=1)
    assert t.loc[("d", "cdae", "Teacher"), "H@50"] == f"{0.32:.3f} ± {sd:.3f}"
    assert t.loc[("d", "cdae", "Teacher"), "seeds"] == 3
    n = pd.Series([0.12 / 2, 0.13 / 2])
    assert t.loc[("d", "cdae", "iBD-Student"), "N@50"] == f"{n.mean():.3f} ± {n.std(ddof=1):.3f}"   # ± 0.004
    assert list(t.index.get_level_values("row")) == ["BD-Teacher", "iBD-Teacher", "BD-Student", "iBD-Student",
                                                     "Teacher"]


def test_summary_table_single_seed_has_zero_std():
    df = long_frame()
    t = E.summary_table(df[df.seed == 0], decimals=2)
    assert t.loc[("d", "cdae", "Teacher"), "H@50"] == "0.30 ± 0.00"


def test_improvement_percentages():
    imp = E.improvement(long_frame())
    t = imp.loc[("d", "cdae", "Improv.BD-T (%)")]
    s = imp.loc[("d", "cdae", "Improv.BD-S (%)")]
    assert t["H@50"] == pytest.approx(round((0.24 - 0.22) / 0.22 * 100, 2))     # 9.09
    assert s["H@50"] == pytest.approx(25.0)                                      # 0.125 over 0.10
    assert s["N@50"] == pytest.approx(25.0)
    with pytest.raises(ConfigError):
        E.improvement(long_frame().query("row != 'iBD-Student' and row != 'iBD-Teacher'"))


def test_table_frame_from_results():
    def result(method, seed, models):
        return {"config": {"dataset": "synthetic", "model": "cdae", "method": method, "seed": seed},
                "models": {role: {"test": {"H@50": h, "H@100": h, "N@50": h / 3, "N@100": h / 2}}
                           for role, h in models.items()}}

    results = [result("teacher", 0, {"teacher": 0.4}), result("rd", 0, {"student": 0.2, "teacher": 0.4}),
               result("bd", 0, {"teacher": 0.45, "student": 0.25})]
    df = E.table_frame(results)
    rows = dict(zip(df["row"], df["H@50"]))
    assert rows == {"Teacher": 0.4, "RD": 0.2, "BD-Teacher": 0.45, "BD-Student": 0.25}
    assert math.isclose(df.loc[df.row == "BD-Student", "N@50"].item(), 0.25 / 3)
    with pytest.raises(ConfigError):
        E.table_frame([])
