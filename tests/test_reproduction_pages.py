"""Issue 10, chapters 6-7: the reproduction pages render from whatever results exist. A table or figure knows
how many of its planned runs and seeds are finished, shows the seeds complete for every part, and otherwise
says plainly what is pending and the command that trains it; the overviews of chapters 6 and 7 count the
same; the committed pages resolve every glued name and hide their parameters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ibd_lite import experiments as E
from ibd_lite import report
from ibd_lite import reproduce as R
from ibd_lite.codec import encode
from ibd_lite.config import make_config
from ibd_lite.errors import ConfigError
from ibd_lite.provenance import code_fingerprint
from ibd_lite.runner import RESULT_SCHEMA, write_json

ROOT = Path(__file__).resolve().parent.parent
ROLES = {"teacher": ("teacher",), "student": ("student",), "rd": ("student",), "cd": ("student",),
         "bd": ("teacher", "student"), "ibd": ("teacher", "student")}
CMD = "python -m ibd_lite reproduce --profile ci --only"


def fake(method: str, seed: int, model: str = "cdae", value: float = 0.1, ranks=None, **over) -> report.Run:
    """A finished ci result of the current code (synthetic data), every test metric = value."""
    c = make_config(profile="ci", dataset="synthetic", model=model, method=method, seed=seed, device="cpu",
                    **over).to_dict()
    models = {r: {"test": dict.fromkeys(E.METRICS, value)} for r in ROLES[method]}
    if ranks is not None:
        for r in models:
            models[r]["ranks"] = {"test": encode(ranks[r] if isinstance(ranks, dict) else ranks)}
    result = {"schema": RESULT_SCHEMA, "config": c, "models": models,
              "provenance": {"code_fingerprint": code_fingerprint(model), "commit": "abc", "dirty": False},
              "history": [{"epoch": 10, "test": {r: {"H@50": value} for r in ROLES[method]}}],
              "timing": {"total_s": 3.0, "pretrain_s": 1.0, "distill_s": 2.0, "predict_s": 0.5}}
    return report.Run(Path("/nowhere") / E.run_name(c), result)


def table(seeds, methods=("teacher", "student", "rd", "cd", "bd", "ibd"), **kw) -> list[report.Run]:
    return [fake(m, s, **kw) for s in seeds for m in methods]


# ------------------------------------------------------------------------------------------ status

def test_table_status_shows_the_seeds_complete_for_every_row():
    runs = table([0, 1]) + table([2], ("teacher", "student", "rd")) + table([7])     # seed 7: not planned
    st, mine = R.table_status(runs, "citeulike-t", "cdae", "ci")
    assert (st.planned_runs, st.finished_runs, st.planned_seeds, st.seeds) == (30, 15, 5, (0, 1))
    assert st.state == "partial" and st.ready and not st.complete
    assert sorted((r.config["method"], r.config["seed"]) for r in mine) == sorted(
        (m, s) for s in (0, 1) for m in ROLES)
    note = st.note()
    assert note.startswith("**Partial results.** 15 of 30 planned runs of the citeulike-t / CDAE table")
    assert "the 2 of 5 planned seeds that are complete for every part (seeds 0, 1)" in note
    assert note.endswith(f"```bash\n{CMD} table-citeulike-t-cdae\n```\n")
    assert st.progress() == "2 of 5 seeds (15 of 30 runs)"
    rows = report.table_rows(mine, "synthetic", "cdae")
    assert len(rows) == 8 and all(len(rs) == 2 for rs in rows.values())


def test_table_status_complete_pending_and_seeds_argument():
    st, mine = R.table_status(table([0, 1]), "foursquare-nyc", "neumf", "ci", seeds=2)
    assert st.state == "pending"                                  # the runs are CDAE: nothing of NeuMF
    st, mine = R.table_status(table([0, 1]), "foursquare-nyc", "cdae", "ci", seeds=2)
    assert st.complete and st.state == "done" and len(mine) == 12
    assert st.command == f"{CMD} table-foursquare-nyc-cdae --seeds 2"
    assert st.note() == "All 12 planned runs of the foursquare-nyc / CDAE table are finished (2 seeds)."
    st, mine = R.table_status([], "citeulike-t", "cdae", "converged")
    assert (st.state, mine, st.finished_runs, st.planned_runs) == ("pending", [], 0, 30)
    assert st.note().startswith("**Not run yet.** None of the 30 planned runs of the citeulike-t / CDAE "
                                "table is finished yet, so there is nothing to show.")
    assert "python -m ibd_lite reproduce --profile converged --only table-citeulike-t-cdae\n" in st.note()
    st, _ = R.table_status(table([2], ("teacher", "student", "rd")), "citeulike-t", "cdae", "ci")
    assert st.state == "pending" and st.note().startswith(
        "**In progress.** 3 of the 30 planned runs of the citeulike-t / CDAE table are finished, but no seed "
        "is complete for every part yet")


def test_rows_of_different_budgets_are_said_not_raised():
    runs = table([0], ("student", "rd", "cd", "bd", "ibd")) + [fake("teacher", 0, epochs=7)]
    st, mine = R.table_status(runs, "citeulike-t", "cdae", "ci", seeds=1)
    assert st.state == "pending" and mine == [] and st.finished_runs == 6
    assert st.note().startswith("**Cannot be shown yet.** The citeulike-t / CDAE table: 6 of 6 planned runs are "
                                "finished, but they do not go together: the rows of synthetic/cdae had different "
                                "budgets")


def warm(runs: list[report.Run], retrained: dict[tuple[str, int], dict] = {}) -> list[report.Run]:
    """Record each run's warm-ups (best epoch, validation N@50): one per role and seed, unless `retrained`
    gives (method, seed) another."""
    for r in runs:
        c = r.config
        ws = {"teacher": (40, 0.0653 + c["seed"]), "student": (20, 0.0304 + c["seed"])}
        ws.update(retrained.get((c["method"], c["seed"]), {}))
        r.result["pretrain"] = {role: {"best_epoch": ws[role][0], "valid_best": {"N@50": ws[role][1]}}
                                for role in ((c["method"],) if c["method"] in ws else ws)}   # RD, CD: both
    return runs


def test_runs_of_a_seed_that_continued_from_different_warm_ups_are_flagged(tmp_path):
    later = {"teacher": (40, 1.0661), "student": (20, 1.0335)}         # seed 1's warm-ups, retrained
    runs = warm(table([0, 1]), {("student", 1): later, ("rd", 1): later})
    assert report.mixed_warmups(runs) == {(1, "student"): [(20, 1.0304), (20, 1.0335)],
                                          (1, "teacher"): [(40, 1.0653), (40, 1.0661)]}
    assert report.mixed_warmups([r for r in runs if r.config["method"] != "rd"]) == {
        (1, "student"): [(20, 1.0304), (20, 1.0335)]}                # the student alone has no teacher
    st, _ = R.table_status(runs, "citeulike-t", "cdae", "ci", seeds=2)
    assert st.complete and st.note() == (
        "All 12 planned runs of the citeulike-t / CDAE table are finished (2 seeds).\n\n**Warm-ups differ.** In "
        "the runs shown, not every run of a seed continued from the same warm-up: seed 1, student (validation "
        "N@50 1.0304 vs 1.0335); seed 1, teacher (validation N@50 1.0653 vs 1.0661). A warm-up retrained after "
        "its cache was lost, on a machine whose floating point differs, is a slightly different model, so "
        "differences between these runs include that of their starting points. Deleting those seeds' result "
        "files and re-running the command retrains them from one warm-up.")
    st, shown = R.table_status(runs, "citeulike-t", "cdae", "ci", seeds=1)     # seed 0 alone: one warm-up
    assert len(shown) == 6 and st.warmups == "" and "Warm-ups" not in st.note()
    grid = warm([fake("ibd", 0, model="neumf", gamma_ts=a, gamma_st=b) for a in R.GAMMAS for b in R.GAMMAS],
                {("ibd", 0): later})                                  # every cell: the same warm-ups
    assert R.gamma_status(grid, "citeulike-t", "neumf", "ci", seeds=1)[0].warmups == ""
    grid[4].result["pretrain"]["teacher"]["valid_best"]["N@50"] = 0.0679    # the centre cell: another one
    st = R.gamma_status(grid, "citeulike-t", "neumf", "ci", seeds=1)[0]
    assert st.warmups.startswith("not every run of a seed continued from the same warm-up: seed 0, teacher "
                                 "(validation N@50 0.0679 vs 1.0661)")
    for r in runs:                                                    # `report` says it too
        r.result["models"] = {k: dict(v, ranks={"test": encode(np.arange(40))}) for k, v in r.result["models"].items()}
        write_json(tmp_path / r.path.name, r.result)
    text = report.render(tmp_path, n_boot=50)
    assert "warm-ups: MIXED: not every run of a seed continued from the same warm-up: seed 1, student" in text
    for f in tmp_path.glob("*-s1-*.json"):
        f.unlink()
    assert "warm-ups: the runs of each seed share one warm-up per model" in report.render(tmp_path, n_boot=50)
    for f in tmp_path.glob("*.json"):                               # the models alone: nothing to pair
        if "-teacher-" not in f.name and "-student-" not in f.name:
            f.unlink()
    alone = report.render(tmp_path, n_boot=50)
    assert "(no paired comparison: no pair the book discusses" in alone and "Empty DataFrame" not in alone


def test_gamma_comparisons_pair_each_cell_with_the_default_over_users_and_seeds():
    half = np.r_[np.zeros(100, int), np.full(100, 100)]          # 200 users: half hit at rank 0, half miss
    student = {(0.5, 0.5): half, (0.9, 0.9): np.zeros(200, int), (0.1, 0.1): np.full(200, 100)}
    grid = [fake("ibd", s, model="neumf", gamma_ts=a, gamma_st=b,
                 ranks={"student": student.get((a, b), half), "teacher": half})
            for s in (0, 1) for a in R.GAMMAS for b in R.GAMMAS]
    cmp = R.gamma_comparisons(grid, "synthetic", "neumf", n_boot=500).set_index(["role", "gamma_ts", "gamma_st"])
    assert len(cmp) == 16 and set(cmp.seeds) == {2} and set(cmp.default) == {0.5}
    up, down = cmp.loc[("student", 0.9, 0.9)], cmp.loc[("student", 0.1, 0.1)]
    assert (up.cell, up["change %"], up.verdict) == (1.0, 100.0, "ahead") and up.lo > 0.4   # +1 for 100 users
    assert (down.cell, down["change %"], down.verdict) == (0.0, -100.0, "behind") and down.hi < -0.4
    same = cmp.drop([("student", 0.9, 0.9), ("student", 0.1, 0.1)])   # identical ranks: a zero difference
    assert (same["change %"] == 0).all() and (same["95% CI"] == "[+0.0000, +0.0000]").all()
    assert set(same.verdict) == {"not distinguishable"}
    with pytest.raises(ConfigError, match=r"no default cell \(0.5, 0.5\)"):
        R.gamma_comparisons([r for r in grid if r.config["gamma_ts"] != 0.5], "synthetic", "neumf")


def test_gamma_tied_and_default_read_one_role_of_the_grid():
    cells = [(a, b) for a in R.GAMMAS for b in R.GAMMAS]
    grid = pd.DataFrame([{"role": role, "gamma_ts": a, "gamma_st": b,
                          "H@50": 0.1024 if role == "teacher" else 0.06 + 0.001 * i}
                         for role in ("student", "teacher") for i, (a, b) in enumerate(cells)])
    assert R.gamma_tied(grid, "teacher") and not R.gamma_tied(grid, "student")
    assert R.gamma_default(grid, "student") == pytest.approx(0.064) and R.gamma_default(grid, "teacher") == 0.1024
    with pytest.raises(ConfigError, match=r"no default cell \(0.5, 0.5\) for the student"):
        R.gamma_default(grid[(grid.gamma_ts != 0.5)], "student")


def test_chapter_7_findings_state_each_page_in_a_sentence_with_its_numbers():
    half = np.r_[np.zeros(100, int), np.full(100, 100)]           # 200 users: H@50 0.5
    student = {(0.9, 0.9): (np.zeros(200, int), 1.0), (0.1, 0.1): (np.full(200, 100), 0.0)}
    grid = []
    for a, b in ((a, b) for a in R.GAMMAS for b in R.GAMMAS):
        ranks, value = student.get((a, b), (half, 0.5))
        r = fake("ibd", 0, model="neumf", gamma_ts=a, gamma_st=b, value=value,
                 ranks={"student": ranks, "teacher": half})
        r.result["models"]["teacher"]["test"]["H@50"] = 0.5
        grid.append(r)
    bd = [r for r in table([0]) if r.config["method"] == "bd"][0]
    bd.result["timing"]["distill_s"] = 4.0                         # iBD's phase (2 s) takes half of BD's
    f = R.analyses_findings(table([0], ("teacher", "student", "rd", "cd", "ibd")) + [bd] + grid, "ci", n_boot=300)
    assert list(f) == ["Figure 3", "Figure 4", "Figure 5", "Figure 6", "Table 7"]
    assert f["Figure 3"] == ("at the last epoch (10, 1 seed) iBD's student reaches H@50 0.1000 against 0.1000 "
                             "for BD's, and the teachers 0.1000 (iBD) and 0.1000 (BD).")
    assert f["Figure 4"] == f["Figure 5"] == "no complete seed yet."            # no round logs in these runs
    assert f["Figure 6"].startswith("with 1 seed per cell, the student's best cell is $(\\gamma_{T\\to S}, "
                                    "\\gamma_{S\\to T}) = (0.9, 0.9)$ with H@50 1.0000 (the default $(0.5, "
                                    "0.5)$: 0.5000; paired: +100.0 %, 95% CI of the difference [+0.4")
    assert f["Figure 6"].endswith("ahead); of the eight other cells, 1 is ahead of the default, 1 behind and 6 "
                                  "not distinguishable; the teacher's H@50 is the same in all nine cells (0.5000).")
    assert f["Table 7"] == ("over 1 (dataset, base model) cell, iBD's distillation phase took 0.50× the wall "
                            "time of BD's, and the warm-up was 18 % of a BD run's time (7 runs, unknown).")   # 1 / (1 + 4 + 0.5)


def test_figure_statuses_count_their_own_runs_and_name_their_target():
    grid = [fake("ibd", s, model="neumf", gamma_ts=a, gamma_st=b) for s, cells in ((0, 9), (1, 4))
            for a, b in [(a, b) for a in R.GAMMAS for b in R.GAMMAS][:cells]]
    noise = [fake("ibd", 0, model="neumf", ibd_variant="no-carry")]
    st, mine = R.gamma_status(grid + noise, "citeulike-t", "neumf", "ci")
    assert (st.planned_runs, st.finished_runs, st.seeds, len(mine)) == (27, 13, (0,), 9)
    assert st.command == f"{CMD} fig6"
    other = R.gamma_status(grid, "citeulike-t", "cdae", "ci")[0]
    assert other.command.startswith("python -m ibd_lite grid figure6 --profile ci --dataset synthetic "
                                    "--model cdae --seeds 0 1 2 3 4 --out-dir results/ci")
    assert R.rounds_status([], "foursquare-tky", "neumf", "ci", figure=5)[0].command == f"{CMD} fig5"
    assert R.rounds_status([], "foursquare-nyc", "cdae", "ci", figure=4)[0].command == f"{CMD} fig4"
    assert R.rounds_status([], "citeulike-t", "cdae", "ci")[0].command == f"{CMD} table-citeulike-t-cdae"
    st, mine = R.timing_status(table([0]), "ci")                   # Table 7 shows every finished run
    assert (st.planned_runs, st.finished_runs, st.state, len(mine)) == (5 * 6 + 3 * 6, 6, "partial", 6)
    assert "6 of 48 planned runs of Table 7 are finished; this page shows those" in st.note()
    done = R.Status("Table 7", "cmd", 48, 48, 5, (0, 1, 2, 3, 4), each_run=True)     # 5 seeds in one cell only
    assert done.note() == "All 48 planned runs of Table 7 are finished."
    assert R.target_status("table7", table([0]), "ci") == st
    with pytest.raises(Exception, match="unknown target 'chapters'"):
        R.target_status("chapters", [], "ci")


def test_curves_leave_out_bd_with_the_released_direction():
    runs = [fake("bd", 0, value=0.2), fake("ibd", 0, value=0.3), fake("bd", 0, value=0.9, bd_direction="released")]
    st, mine = R.curves_status(runs, "citeulike-t", "cdae", "ci", seeds=1)
    assert st.complete and len(mine) == 2
    df = R.curves(runs, "synthetic", "cdae")
    assert sorted(df[df.method == "BD"]["value"]) == [0.2, 0.2]   # teacher and student, never the 0.9 run


def test_verdict_words_from_short_and_long_verdicts():
    assert [R.short_verdict(v) for v in ("ahead", "behind", "n.d.")] == ["ahead", "behind", "not distinguishable"]
    assert R.short_verdict("iBD is ahead of BD") == "ahead" and R.short_verdict("B is behind A") == "behind"
    assert R.short_verdict("B and A are not distinguishable at this budget") == "not distinguishable"
    assert R.say("iBD-Student", "CD", "ahead") == "iBD-Student is ahead of CD"
    assert R.say("iBD-Student", "CD", "behind") == "iBD-Student is behind CD"
    assert R.say("iBD-Student", "CD", "n.d.") == "iBD-Student and CD are not distinguishable"


def test_tables_overview_on_a_hand_made_complete_table():
    # 40 users: BD-Student hits 10 of them (rank 0), iBD-Student 30 (those 10 and 20 more): a paired
    # H@50 gain of 20/40 = 0.5 on a base of 0.25, +200 %, every user's difference >= 0 -> ahead.
    bd_s = np.array([0] * 10 + [500] * 30)
    ibd_s = np.array([0] * 30 + [500] * 10)
    same = np.array([0] * 20 + [500] * 20)
    runs = [fake(m, 0, ranks=same) for m in ("teacher", "student", "rd", "cd")]
    runs += [fake("bd", 0, ranks={"teacher": same, "student": bd_s}),
             fake("ibd", 0, ranks={"teacher": same, "student": ibd_s})]
    shown, tests = R.tables_overview(runs, "ci", seeds=1, n_boot=400)
    first = shown.iloc[0]
    assert (first["dataset"], first["model"], first["seeds"], first["runs"], first["state"]) == (
        "citeulike-t", "cdae", "1/1", "6/6", "done")
    assert first["iBD-S vs BD-S"] == "+200.0 % (ahead)" and first["iBD-T vs BD-T"] == "+0.0 % (n.d.)"
    row = tests[(tests.dataset == "citeulike-t") & (tests.comparison == "iBD-S vs BD-S")].iloc[0]
    assert row["B − A"] == 0.5 and row["mean A"] == 0.25 and row["lo"] > 0 and row["verdict"] == "ahead"
    assert list(shown.loc[shown.model == "neumf", "state"]) == ["pending"] * 3
    assert (shown.loc[shown.model == "neumf", "iBD-S vs BD-S"] == "pending").all()
    # every stored test mean is 0.1 here, so the students tie and the first, Student, is the best other one:
    # the paired test itself uses the ranks (Student hits 20 of 40, iBD-Student 30: +50 %)
    assert first["iBD-S vs best student"] == "+50.0 % (ahead, Student)"


@pytest.mark.parametrize("best", ["cd", "bd"])
def test_tables_overview_names_the_best_other_student(best):
    # the best other student hits 30 of 40 users, iBD-Student 10 of them: -66.7 %; the others hit none.
    # When that student is BD's, the third column repeats the first column's test.
    top, ibd_s, none = np.array([0] * 30 + [500] * 10), np.array([0] * 10 + [500] * 30), np.array([500] * 40)
    hi, lo = dict(ranks=top, value=0.75), dict(ranks=none, value=0.0)      # stored means follow the ranks
    runs = [fake("teacher", 0, **hi), fake("student", 0, **lo), fake("rd", 0, **lo),
            fake("cd", 0, **(hi if best == "cd" else lo)),
            fake("bd", 0, ranks={"teacher": top, "student": top if best == "bd" else none},
                 value=0.75 if best == "bd" else 0.0),
            fake("ibd", 0, ranks={"teacher": top, "student": ibd_s}, value=0.25)]
    shown, tests = R.tables_overview(runs, "ci", seeds=1, n_boot=400)
    name = {"cd": "CD", "bd": "BD-S"}[best]
    assert shown.iloc[0]["iBD-S vs best student"] == f"-66.7 % (behind, {name})"
    row = tests[(tests.dataset == "citeulike-t") & (tests.comparison == "iBD-S vs best student")].iloc[0]
    assert (row["A"], row["B − A"], row["verdict"]) == ({"cd": "CD", "bd": "BD-Student"}[best], -0.5, "behind")
    if best == "bd":
        assert shown.iloc[0]["iBD-S vs BD-S"] == "-66.7 % (behind)"


def test_select_runs_keeps_current_code_and_says_what_it_left_out(tmp_path):
    good, stale = fake("teacher", 0), fake("student", 0)
    stale.result["provenance"]["code_fingerprint"] = "0000older000"
    quick = fake("rd", 0)
    quick.result["config"]["profile"] = "quick"
    for run in (good, stale, quick):
        write_json(tmp_path / run.path.name, run.result)
    assert [r.path.name for r in R.select_runs(tmp_path, "ci")] == [good.path.name]
    assert [r.path.name for r in R.stale_runs(tmp_path, "ci")] == [stale.path.name]
    assert R.select_runs(tmp_path / "missing", "ci") == [] and R.select_runs(tmp_path, "paper") == []
    assert R.resolve_results_dir(None, "ci") == ROOT / "results" / "ci"
    assert R.resolve_results_dir("results/x", "ci") == ROOT / "results" / "x"
    line = R.results_provenance(R.select_runs(tmp_path, "ci"), tmp_path)
    assert line == f"results: 1 finished run in {tmp_path}\n  commit(s) abc\n  code fingerprint(s) " \
                   f"cdae {code_fingerprint('cdae')}"
    # each base model has its own training code: two fingerprints across models are not a mix
    nmf = fake("teacher", 0, model="neumf")
    two = R.results_provenance([good, nmf], tmp_path)
    assert two.endswith(f"code fingerprint(s) cdae {code_fingerprint('cdae')}, neumf {code_fingerprint('neumf')}")
    assert R.results_provenance([good, stale], tmp_path).endswith(     # two for one model: a mix
        "(MIXED: more than one training-code fingerprint)")
    assert R.results_provenance([], "results/x") == "results: no finished run in results/x"


def test_provenance_flags_mixed_training_code_apart_from_several_commits():
    from ibd_lite.report import commits_and_prints, mix_note

    provs = [{"commit": "a72e19ac64ffff", "code_fingerprint": "956aaaf70a77"},
             {"commit": "816116d463ffff", "code_fingerprint": "956aaaf70a77"}]
    commits, prints = commits_and_prints(provs)
    assert (commits, prints) == (["816116d463", "a72e19ac64"], ["956aaaf70a77"])
    assert mix_note(commits, prints) == "several commits, one training code"
    assert mix_note(*commits_and_prints(provs[:1])) == ""
    assert mix_note(*commits_and_prints([*provs, {"commit": "c", "code_fingerprint": "0000older000"}])) \
        == "MIXED: more than one training-code fingerprint"
    assert mix_note(*commits_and_prints([{"commit": "c", "dirty": True, "code_fingerprint": "f"}])) \
        == "some runs had uncommitted changes"


# ------------------------------------------------------------------------------------------ committed pages

def _nb(path: Path) -> dict:
    return json.loads(path.read_text())


def _toc_pages() -> dict[str, list[str]]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    part = next(p for p in toc["parts"] if p["caption"] == "Reproducing the paper")
    return {c["file"]: [s["file"] for s in c.get("sections", [])] for c in part["chapters"]}


PAGES = [ROOT / f"{f}.ipynb" for sections in _toc_pages().values() for f in sections]
LANDING = [ROOT / f"{f}.ipynb" for f in _toc_pages()]


def test_the_reproduction_part_lists_the_six_tables_and_the_analyses():
    toc = _toc_pages()
    assert list(toc) == ["book/chapters/06_tables", "book/chapters/07_analyses"]
    assert toc["book/chapters/06_tables"] == [f"book/reproduced/converged/table-{d}-{m}"
                                              for d in E.TABLE_DATASETS for m in E.TABLE_MODELS]
    assert toc["book/chapters/07_analyses"] == [f"book/reproduced/converged/{n}"
                                                for n in ("fig3", "fig4", "fig5", "fig6", "table7")]
    assert all(p.exists() for p in PAGES + LANDING)


@pytest.mark.parametrize("path", PAGES + LANDING, ids=lambda p: p.stem)
def test_every_glued_name_in_the_prose_is_stored_and_nothing_failed(path):
    nb = _nb(path)
    used = set()
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            src = "".join(c["source"])
            used |= set(re.findall(r"\{glue:(?:text|md)\}`(\w+)", src))
            used |= set(re.findall(r"```\{glue:md\} (\w+)", src))
    stored = {o["metadata"]["scrapbook"]["name"] for c in nb["cells"] for o in c.get("outputs", [])
              if "scrapbook" in o.get("metadata", {})}
    assert used and used <= stored, sorted(used - stored)
    assert not any(o["output_type"] == "error" for c in nb["cells"] for o in c.get("outputs", []))


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.stem)
def test_rendered_pages_hide_parameters_read_the_repository_folder_and_say_what_is_pending(path):
    nb = _nb(path)
    target = path.stem
    params = nb["metadata"]["papermill"]["parameters"]
    assert params["profile"] == "converged" and params["results_dir"] == "results/converged"
    for c in nb["cells"]:
        tags = c["metadata"].get("tags", [])
        if {"parameters", "injected-parameters"} & set(tags):
            assert "remove-cell" in tags
    title = "".join(nb["cells"][0]["source"]).splitlines()[0]
    assert title == "# " + (R.page_title(target) or title[2:])
    notes = [o["data"]["application/papermill.record/text/markdown"] for c in nb["cells"]
             for o in c.get("outputs", []) if o.get("metadata", {}).get("scrapbook", {}).get("name") == "status_note"]
    assert len(notes) == 1
    # (the page's numbers are checked against the result files by its check cell when it is rendered; here
    # only its form, as the grid adds results to results/converged between renders)
    if notes[0].startswith(("**Not run yet.**", "**In progress.**", "**Partial results.**")):
        assert f"python -m ibd_lite reproduce --profile converged --only {target}" in notes[0]
    else:
        assert notes[0].startswith(("All ", "**Cannot be shown yet.**")), notes[0]


@pytest.mark.parametrize("path", sorted((ROOT / "book" / "reproduce").glob("*.ipynb")), ids=lambda p: p.stem)
def test_template_code_fits_the_column(path):
    """Every code line a reader of a rendered page can see or unfold (not the removed cells, nor the
    parameters cell, removed when rendered) fits the book's column, as in the chapters."""
    hidden = {"parameters", "remove-cell", "remove-input"}
    for c in _nb(path)["cells"]:
        if c["cell_type"] == "code" and not hidden & set(c["metadata"].get("tags", [])):
            for line in "".join(c["source"]).splitlines():
                assert len(line) <= 100, line

def test_page_titles_are_distinct():
    titles = ["".join(_nb(p)["cells"][0]["source"]).splitlines()[0] for p in PAGES]
    assert len(set(titles)) == len(titles) == 11
