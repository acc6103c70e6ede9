"""Experiment grids: the configs of each named experiment, stable run names, resumable grids."""

from __future__ import annotations

from collections import Counter

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


def test_budget_probe_doubles_the_total_budget_and_scales_the_student_lr():
    # converged, citeulike-t CDAE: warm-up 600 + 1,400 epochs at the tuned student lr 2e-3
    cfgs = E.experiment_configs("budget", profile="converged", seeds=(0, 1))
    assert {(c["dataset"], c["model"], c["method"]) for c in cfgs} == {("citeulike-t", "cdae", "student")}
    assert [(c["seed"], c.get("epochs"), c.get("lr_student")) for c in cfgs] == [
        (0, 3400, None), (0, None, 0.005), (0, None, 0.01), (1, 3400, None), (1, None, 0.005), (1, None, 0.01)]
    longer = make_config(**cfgs[0])
    assert longer.pretrain_epochs == 600 and longer.pretrain_epochs + longer.epochs == 2 * 2000
    assert longer.lr_student == 0.002 and make_config(**cfgs[2]).lr_student == 0.01
    # ci: synthetic data, its own budget (12 + 12) and lr (5e-3)
    ci = E.experiment_configs("budget", profile="ci", seeds=(0,))
    assert [(c["dataset"], c.get("epochs"), c.get("lr_student")) for c in ci] == [
        ("synthetic", 36, None), ("synthetic", None, 0.0125), ("synthetic", None, 0.025)]
    # the probe's warm-up is the table run's: same pretrain settings, so the cached checkpoint is reused
    table = make_config(profile="converged", dataset="citeulike-t", model="cdae", method="student", seed=0)
    assert longer.pretrain_epochs == table.pretrain_epochs and longer.wd_student == table.wd_student



def test_budget_distill_probe_doubles_every_distilled_methods_budget():
    cfgs = E.experiment_configs("budget-distill", profile="converged", seeds=(0, 1))
    assert [(c["seed"], c["method"], c["epochs"]) for c in cfgs] == [
        (s, m, 3400) for s in (0, 1) for m in ("rd", "cd", "bd", "ibd")]
    assert {(c["dataset"], c["model"]) for c in cfgs} == {("citeulike-t", "cdae")}
    for c in cfgs:
        cfg, table = make_config(**c), make_config(**dict(c, epochs=None))
        assert cfg.pretrain_epochs + cfg.epochs == 2 * (table.pretrain_epochs + table.epochs) == 4000
        # only the epochs differ from the table run of the same method: same warm-up, lr, rounds, gammas
        assert {k for k, v in cfg.to_dict().items() if table.to_dict()[k] != v} == {"epochs"}
    ci = E.experiment_configs("budget-distill", profile="ci", seeds=(0,))
    assert [(c["dataset"], c["method"], c["epochs"]) for c in ci] == [
        ("synthetic", m, 36) for m in ("rd", "cd", "bd", "ibd")]

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
