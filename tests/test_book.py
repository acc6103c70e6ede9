"""The book's helpers (ibd_lite.book, ibd_lite.plots) and the papermill runner's checks of its input."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import types
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ibd_lite
from ibd_lite.provenance import code_fingerprint
from ibd_lite import book
from ibd_lite.experiments import run_name
from ibd_lite.runner import RESULT_SCHEMA, write_json

ROOT = Path(__file__).resolve().parent.parent


def _runner():
    spec = importlib.util.spec_from_file_location("execute_chapters", ROOT / "scripts" / "execute_chapters.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------- the Colab cell
def _exec_colab_cell(monkeypatch, on_colab: bool, results: list[int]):
    """Run the Colab cell with subprocess.run faked: returns the commands it tried to run."""
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        rc = results[len(calls) - 1]
        return subprocess.CompletedProcess(cmd, rc, stdout="", stderr="" if rc == 0 else "fatal: boom here")

    monkeypatch.setattr(subprocess, "run", fake_run)
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr("os.path.isdir", lambda p: False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(book.colab_cell_source(), "colab-cell", "exec"), {})
    return calls


def test_colab_cell_does_nothing_off_colab(monkeypatch):
    assert _exec_colab_cell(monkeypatch, on_colab=False, results=[]) == []


def test_colab_cell_stops_when_the_clone_fails(monkeypatch):
    with pytest.raises(RuntimeError) as e:
        _exec_colab_cell(monkeypatch, on_colab=True, results=[128])
    msg = str(e.value)
    assert f"cloning {book.REPO_URL}" in msg and "exit 128" in msg and "fatal: boom here" in msg


def test_colab_cell_stops_when_the_install_fails_and_pins_torch(monkeypatch):
    calls = []
    with pytest.raises(RuntimeError, match="installing ibd_lite"):
        calls = _exec_colab_cell(monkeypatch, on_colab=True, results=[0, 1])
    # on success the cell clones then installs the package with Colab's torch pinned, nothing else
    calls = _exec_colab_cell(monkeypatch, on_colab=True, results=[0, 0])
    assert calls[0][:2] == ["git", "clone"] and book.REPO_URL in calls[0]
    install = calls[1]
    assert install[1:4] == ["-m", "pip", "install"] and f"torch=={version('torch')}" in install
    assert "-r" not in install and "--upgrade" not in install and "-U" not in install
    assert len(calls) == 2


# ---------------------------------------------------------------------------------- the address, once
def test_every_place_names_the_repository_of_book_py():
    assert book.stale_repository_urls(ROOT) == []



def test_landing_page_and_readme_list_every_chapter_with_a_colab_link():
    index, readme = (ROOT / "book" / "index.md").read_text(), (ROOT / "README.md").read_text()
    for nb in sorted((ROOT / "book" / "chapters").glob("[0-9]*.ipynb")):
        colab = f"{book.REPO_URL.replace('https://github.com', 'https://colab.research.google.com/github')}" \
                f"/blob/main/book/chapters/{nb.name}"
        assert f"| {{doc}}`chapters/{nb.stem}` |" in index, f"book/index.md: no table row for {nb.stem}"
        assert colab in index and colab in readme, f"no Colab link to {nb.name}"

def test_sync_rewrites_a_stale_address(tmp_path):
    for rel in ("README.md", "_config.yml", "book/index.md", "book/chapters/01_data.ipynb"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    for rel in ("README.md", "_config.yml", "book/index.md"):
        p = tmp_path / rel
        p.write_text(p.read_text().replace("ibd-book/ibd-book", "someone/else"))
    nb = tmp_path / "book/chapters/01_data.ipynb"
    nb.write_text(nb.read_text().replace(book.REPO_URL, "https://github.com/someone/else"))
    stale = book.stale_repository_urls(tmp_path)
    assert len(stale) >= 4 and any("01_data.ipynb" in s for s in stale)
    changed = book.sync_repository_url(tmp_path)
    assert len(changed) == 4
    assert book.stale_repository_urls(tmp_path) == []
    assert "someone/else" not in (tmp_path / "README.md").read_text()


def test_colab_url():
    assert book.colab_url("04_bd") == ("https://colab.research.google.com/github/ibd-book/ibd-book/blob/"
                                       "main/book/chapters/04_bd.ipynb")


# ------------------------------------------------------------------------------------- time estimates
def _fake_result(out: Path, seconds: float, device_name: str = "Test CPU", **kw) -> dict:
    cfg = ibd_lite.make_config(**{"profile": "ci", "device": "cpu", **kw}).to_dict()
    r = {"schema": RESULT_SCHEMA, "config": cfg, "timing": {"total_s": seconds},
         "provenance": {"device_name": device_name, "code_fingerprint": code_fingerprint(cfg["model"])}}
    write_json(out / run_name(cfg), r)
    return cfg


def test_plan_uses_measured_time_of_the_same_config_with_another_seed(tmp_path):
    _fake_result(tmp_path, 100.0, method="teacher", seed=0)
    _fake_result(tmp_path, 140.0, method="teacher", seed=1)
    _fake_result(tmp_path, 20.0, method="student", seed=0)
    configs = [dict(profile="ci", device="cpu", method="teacher", seed=s) for s in (0, 2)]
    configs += [dict(profile="ci", device="cpu", method="bd", seed=0)]
    plan = book.plan_runs(configs, tmp_path)
    assert [c["seed"] for c in plan.finished] == [0]
    assert [(c["method"], c["seed"]) for c in plan.todo] == [("teacher", 2), ("bd", 0)]
    assert plan.estimate_s == pytest.approx(120.0)          # median of the two teacher timings
    assert plan.unmeasured == 1                             # no BD run was ever measured
    msg = plan.message(tmp_path)
    assert "2 of 3 runs must train now (1 reused" in msg
    assert "about 2 min, from timings measured on Test CPU (1 run(s) never measured" in msg


def test_plan_when_everything_is_finished(tmp_path):
    _fake_result(tmp_path, 5.0, method="student", seed=3)
    plan = book.plan_runs([dict(profile="ci", device="cpu", method="student", seed=3)], tmp_path)
    assert plan.todo == [] and plan.estimate_s == 0
    assert plan.message(tmp_path).startswith("The run this step needs is finished")
    _fake_result(tmp_path, 5.0, method="student", seed=4)
    plan = book.plan_runs([dict(profile="ci", device="cpu", method="student", seed=s) for s in (3, 4)], tmp_path)
    assert plan.message(tmp_path).startswith("All 2 runs this step needs are finished")


def test_converged_chapters_show_only_seeds_whose_runs_all_finished(tmp_path):
    ch = book.start_chapter("converged", "cpu", "cdae", 0, method="bd")
    ch.out_dir = tmp_path
    for seed in (0, 1, 3):
        for m in book.table_methods():
            if (seed, m) != (1, "ibd"):                                 # seed 1 lacks its iBD run
                _fake_result(tmp_path, 1.0, profile="converged", method=m, seed=seed)
    assert book.table_methods() == ["teacher", "student", "rd", "cd", "bd", "ibd"]
    assert ch.seeds_in_store([0, 1, 2, 3, 4]) == [0, 3]
    assert ch.seeds_in_store([0, 1], {"method": "bd"}) == [0, 1]         # only the variants asked about
    with pytest.raises(FileNotFoundError, match=r"ibd no-carry.*reproduce --only chapters.*quick"):
        ch.seeds_in_store([0, 1], {"method": "ibd", "ibd_variant": "no-carry"})
    assert ch.seeds_in_store([0, 1], {"method": "ibd", "ibd_variant": "no-carry"}, required=False) == []
    quick = book.start_chapter("quick", "cpu", "cdae", 0)
    quick.out_dir = tmp_path
    assert quick.seeds_in_store([0, 1, 2]) == [0, 1, 2]                  # other profiles train what is missing


def test_converged_chapters_show_the_probes_of_seeds_whose_probes_all_finished(tmp_path):
    from ibd_lite.experiments import experiment_configs

    ch = book.start_chapter("converged", "cpu", "cdae", 0, dataset="citeulike-t", method="student")
    ch.out_dir = tmp_path
    assert ch.probe_runs("budget", range(5)) == []                      # nothing stored: nothing shown or trained
    probes = experiment_configs("budget", profile="converged", dataset="citeulike-t", model="cdae", seeds=[0, 1],
                                device="cpu")
    for c in probes[:5]:                                                # seed 1 lacks its last probe
        _fake_result(tmp_path / "budget", 1.0, **c)
    got = ch.probe_runs("budget", range(5))
    assert [(r["config"]["seed"], r["config"]["epochs"], r["config"]["lr_student"]) for r in got] == [
        (0, 3400, 0.002), (0, 1400, 0.005), (0, 1400, 0.01)]
    assert not list(tmp_path.glob("budget/*-s2-*.json"))                # converged never trains in the book
    # budget-distill: what finished is shown per method (seed 0's RD and CD; BD of seed 0 still training)
    distill = experiment_configs("budget-distill", profile="converged", dataset="citeulike-t", model="cdae",
                                 seeds=[0], device="cpu")
    for c in distill[:2]:
        _fake_result(tmp_path / "budget-distill", 1.0, **c)
    got = ch.probe_runs("budget-distill", range(5))
    assert [(r["config"]["seed"], r["config"]["method"], r["config"]["epochs"]) for r in got] == [
        (0, "rd", 3400), (0, "cd", 3400)]
    assert len(list(tmp_path.glob("budget-distill/*.json"))) == 2


def test_probe_runs_without_training_show_only_what_finished_at_any_profile(tmp_path):
    from ibd_lite.experiments import experiment_configs

    ch = book.start_chapter("ci", "cpu", "cdae", 0, method="ibd")
    ch.out_dir = tmp_path
    assert ch.probe_runs("budget-distill", [0], train=False) == []      # nothing stored: nothing trained
    assert not list(tmp_path.rglob("*.json"))
    distill = experiment_configs("budget-distill", profile="ci", dataset=None, model="cdae", seeds=[0],
                                 device="cpu")
    for c in distill:
        if c["method"] in ("bd", "ibd"):
            _fake_result(tmp_path / "budget-distill", 1.0, **c)
    got = ch.probe_runs("budget-distill", [0], train=False)
    assert sorted(r["config"]["method"] for r in got) == ["bd", "ibd"]
    assert len(list(tmp_path.glob("budget-distill/*.json"))) == 2      # RD and CD were not trained


def test_seeds_note_is_provisional_until_enough_seeds_finished():
    assert book.seeds_note([0, 1, 2, 3, 4], range(5)) == "This comparison rests on 5 seeds (0, 1, 2, 3, 4)."
    part = book.seeds_note([0, 3], range(5))
    assert part.startswith("**Provisional:** this comparison rests on 2 of the 5 seeds asked for (0, 3; "
                           "seeds 1, 2, 4 have not finished training yet)")
    assert "seed 1 has not finished" in book.seeds_note([0], [0, 1])
    assert book.seeds_note([0, 1, 2, 3], range(5)).endswith(
        "(0, 1, 2, 3; seed 4 has not finished training yet). The protocol (SPEC §8) wants 5 before a verdict "
        "counts: read these as a first look, not a finding.")
    assert "need at least 5" in book.seeds_note([0, 1], [0, 1])           # all finished, but too few
    assert book.seeds_note([], [0, 1, 2], "ablation").startswith("**Not run yet:** no seed of this ablation")
    assert book.seeds_note([0, 1, 2], [0, 1, 2], "ablation", needed=3) == "This ablation rests on 3 seeds (0, 1, 2)."


def test_plan_without_any_timing(tmp_path):
    plan = book.plan_runs([dict(profile="ci", device="cpu", method="rd")], tmp_path)
    assert "time is unknown" in plan.message(tmp_path)


def test_format_duration():
    assert [book.format_duration(s) for s in (45, 89.4, 90, 3000, 5400, 9000)] == \
        ["45 s", "89 s", "2 min", "50 min", "1.5 h", "2.5 h"]


def test_warmup_seconds_reads_the_pretrain_report(tmp_path):
    cfg = ibd_lite.make_config(profile="ci", device="cpu", method="bd")
    d = cfg.to_dict()
    r = {"config": d, "pretrain": {"teacher": {"seconds_train": 10.0, "seconds_eval": 2.0},
                                   "student": {"seconds_train": 3.0, "seconds_eval": 1.0}}}
    (tmp_path / "x.json").write_text(json.dumps(r))
    assert book.warmup_seconds(tmp_path, cfg) == 16.0
    assert book.warmup_seconds(tmp_path, ibd_lite.make_config(profile="ci", device="cpu", seed=1)) == 0.0


# --------------------------------------------------------------------------------------- tables, text
def test_tidy_formats_integers_floats_and_missing_values():
    df = pd.DataFrame({"n": pd.array([550112, 1200, pd.NA], dtype="Int64"), "count": [550112.0, 2.0, np.nan],
                       "h": [0.11154, 0.02, np.nan], "name": ["a", None, "c"]})
    out = book.tidy(df, decimals=3, int_columns=["count"])
    assert out["n"].tolist() == ["550,112", "1,200", "–"]
    assert out["count"].tolist() == ["550,112", "2", "–"]
    assert out["h"].tolist() == ["0.112", "0.020", "–"]
    assert out["name"].tolist() == ["a", "–", "c"]
    assert book.tidy(df[["h"]], decimals={"h": 1})["h"].tolist() == ["0.1", "0.0", "–"]


def test_whole_floats_of_four_digits_or_more_print_as_integers():
    out = book.tidy(pd.DataFrame({"x": [122152.0, 4.0]}))
    assert out["x"].tolist() == ["122,152", "4"]
    assert book.tidy(pd.DataFrame({"x": [1.0, 2.0]}))["x"].tolist() == ["1.0000", "2.0000"]


def test_glue_returns_the_formatted_text():
    assert book.glue("test_value", 0.123456, ".3f") == "0.123"
    assert book.glue("test_text", "citeulike-t") == "citeulike-t"


# ------------------------------------------------------------------------------------- measurements
def test_topk_latency_reports_sizes_exactly():
    split = ibd_lite.load_split("synthetic", seed=0)
    model = ibd_lite.build_model("bprmf", split, 8)
    out = book.topk_latency(model, split, k=10, batch_users=64, repeats=2)
    assert out["params"] == (split.n_users + split.n_items) * 8
    assert out["params_mb"] == pytest.approx(4 * out["params"] / 2**20)
    assert out["scores_mb"] == pytest.approx(4 * 64 * split.n_items / 2**20)
    assert out["batch_ms"] > 0


def test_chapter_overrides_reach_the_config_and_none_means_default():
    ch = book.start_chapter("ci", "cpu", "cdae", 0, epochs=None, method="bd", eps_t=None, rd_lambda=2.0)
    assert ch.over == {"rd_lambda": 2.0}
    assert ch.cfg.rd_lambda == 2.0 and ch.cfg.eps_t == 1e-4
    assert ch.out_dir == ROOT / "results" / "ci"
    assert ch.configs({"method": "rd"}) == [dict(profile="ci", device="cpu", model="cdae", seed=0,
                                                 rd_lambda=2.0, method="rd")]


def test_figure_style_is_column_sized():
    import matplotlib as mpl
    from ibd_lite import plots

    plots.set_style()
    assert tuple(mpl.rcParams["figure.figsize"]) == (6.5, 3.2)
    assert mpl.rcParams["figure.dpi"] == 150 and mpl.rcParams["savefig.dpi"] == 150
    assert plots.LABELS["p_ts"] == r"$p_{T\to S}$"


# ------------------------------------------------------------------------------ the papermill runner
def test_runner_refuses_an_unknown_chapter_with_the_list(capsys, tmp_path):
    run = _runner()
    assert run.main(["--only", "04_bdd", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown chapter(s) 04_bdd" in err and "01_data, 02_teachers_students" in err and "05_ibd" in err
    assert list(tmp_path.iterdir()) == []


def test_runner_refuses_an_unknown_parameter_with_each_chapters_list(capsys, tmp_path):
    run = _runner()
    assert run.main(["--only", "04_bd", "--out-dir", str(tmp_path), "-p", "modle", '"neumf"']) == 2
    err = capsys.readouterr().err
    assert "unknown parameter(s) modle" in err and "04_bd: profile, device, dataset, model, seed, epochs, eps_t" in err
    assert list(tmp_path.iterdir()) == []


def test_runner_sends_each_parameter_only_to_chapters_that_define_it():
    run = _runner()
    chapters = run.select_chapters(["01_data", "04_bd.ipynb", "01_data"])
    assert [c.stem for c in chapters] == ["01_data", "04_bd"]
    plan = run.assign_parameters(chapters, {"datasets": ["synthetic"], "seed": 3}, {"profile": "ci"})
    assert plan[chapters[0]] == {"profile": "ci", "datasets": ["synthetic"], "seed": 3}
    assert plan[chapters[1]] == {"profile": "ci", "seed": 3}


def test_runner_hides_the_injected_cell(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["injected-parameters"]}),
                nbformat.v4.new_code_cell("y = 2")]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    _runner().hide_injected(path)
    cells = nbformat.read(str(path), as_version=4).cells
    assert cells[0].metadata.tags == ["injected-parameters", "remove-cell"]
    assert "tags" not in cells[1].metadata or cells[1].metadata.tags == []
