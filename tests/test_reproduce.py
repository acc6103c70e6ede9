"""Issue 10: `python -m ibd_lite reproduce` plans every run behind the paper's tables and figures, trains only
what is missing (a killed grid resumes, a deleted file is retrained alone, a failed run is logged while the
others finish), lists one command per pending run, keeps the store compact, and renders each table with
papermill from exactly the numbers in the result files."""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ibd_lite import codec as C
from ibd_lite import experiments as E
from ibd_lite import report, runner
from ibd_lite import reproduce as R
from ibd_lite.cli import main
from ibd_lite.errors import ConfigError
from ibd_lite.runner import is_finished, load_result

REPO = Path(__file__).resolve().parent.parent
# The smallest ci budget iBD accepts (rounds 4, refresh every 2 -> 10 epochs); budget keys only, so the runs
# still count as table runs.
TINY = dict(pretrain_epochs=2, epochs=10, eval_every=2)
ONE_TABLE = dict(profile="ci", only=["table-citeulike-t-cdae"], seeds=1, device="cpu", **TINY)
KILL_SCRIPT = """
import sys
from ibd_lite import reproduce as R
plan = R.make_plan(out_dir=sys.argv[1], **{kw!r})
R.train(plan, progress=False)
"""


# ------------------------------------------------------------------------------------------ plans

def test_plan_of_the_paper_counts_dedupes_and_seeds(tmp_path):
    plan = R.make_plan("converged", out_dir=tmp_path)
    # Tables 1-6: 6 cells x 6 methods x (5 seeds for citeulike-t/cdae, 3 elsewhere) = 120; Figure 6 adds
    # the 8 gamma cells other than (0.5, 0.5) on citeulike-t/neumf x 3 seeds = 24; figures 3-5 and Table 7
    # reuse table runs; the chapters add BD with the released direction (1 seed) and iBD without carry-over
    # (3 seeds) on citeulike-t/cdae.
    assert len(plan.configs) == 6 * 5 + 30 * 3 + 8 * 3 + 1 + 3 == 148
    assert len(set(plan.names)) == 148 and len(plan.pending) == 148 and not plan.done
    chapters = R.make_plan("converged", ["chapters"], out_dir=tmp_path)
    extra = [c for c in chapters.configs if c.get("bd_direction") == "released" or c.get("ibd_variant") == "no-carry"]
    assert sorted((c["method"], c["seed"]) for c in extra) == [("bd", 0), ("ibd", 0), ("ibd", 1), ("ibd", 2)]
    assert len(chapters.configs) == 34 and R.notebook_jobs(chapters, tmp_path) == []   # no notebook of its own
    seeds = {(c["dataset"], c["model"]): set() for c in plan.configs}
    for c in plan.configs:
        seeds[c["dataset"], c["model"]].add(c["seed"])
    assert seeds[("citeulike-t", "cdae")] == set(range(5)) and seeds[("foursquare-nyc", "neumf")] == {0, 1, 2}
    table = set(R.make_plan("converged", ["table-citeulike-t-neumf"], out_dir=tmp_path).names)
    fig6 = set(R.make_plan("converged", ["fig6"], out_dir=tmp_path).names)
    assert len(fig6) == 27 and len(fig6 & table) == 3            # the (0.5, 0.5) cell IS the table's iBD run
    fig3 = R.make_plan("converged", ["fig3"], out_dir=tmp_path)
    assert {c["method"] for c in fig3.configs} == {"bd", "ibd"} and len(fig3.configs) == 10
    assert set(fig3.names) <= set(R.make_plan("converged", ["table-citeulike-t-cdae"], out_dir=tmp_path).names)
    two = R.make_plan("converged", ["fig4", "fig5", "table7"], seeds=2, out_dir=tmp_path)
    assert len(two.configs) == 6 * 6 * 2 and {c["seed"] for c in two.configs} == {0, 1}
    ci = R.make_plan("ci", out_dir=tmp_path)       # ci: synthetic stands in for every dataset (cdae: 5 seeds)
    assert {c["dataset"] for c in ci.configs} == {"synthetic"} and len(ci.configs) == 6 * 5 + 6 * 3 + 8 * 3 + 4
    with pytest.raises(ConfigError, match="unknown target.*fig7.*valid targets are: table-citeulike-t-cdae"):
        R.make_plan("ci", ["fig7"], out_dir=tmp_path)
    with pytest.raises(ConfigError, match="seeds=0 is out of range"):
        R.make_plan("ci", seeds=0, out_dir=tmp_path)


def test_list_prints_one_runnable_command_per_pending_run(tmp_path, capsys, cache_dir, monkeypatch):
    out = tmp_path / "res"
    monkeypatch.setattr(R, "make_plan", functools.partial(R.make_plan, **TINY))
    assert main(["reproduce", "--profile", "ci", "--only", "table-foursquare-nyc-cdae", "--seeds", "1",
                 "--device", "cpu", "--out-dir", str(out), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    plan = R.make_plan(out_dir=out, **ONE_TABLE)
    assert len(lines) == 6
    outs = []
    for line in lines:
        argv = shlex.split(line)
        assert argv[:4] == ["python", "-m", "ibd_lite", "run"]
        outs.append(Path(argv[argv.index("--out") + 1]).name)
    assert outs == plan.names                                      # file named by the config hash
    teacher = shlex.split(next(x for x in lines if "--method teacher" in x))
    assert main(teacher[3:]) == 0                                   # run one as a cluster job would
    capsys.readouterr()
    again = R.make_plan(out_dir=out, **ONE_TABLE)
    assert sorted(again.done) == [outs[0]] and len(again.pending) == 5
    assert load_result(out / outs[0])["config"]["method"] == "teacher"


# ------------------------------------------------------------------------------------------ kill, resume

def _some_lock_held(folder: Path) -> bool:
    return any(R._held(Path(str(p)[: -len(".lock")])) for p in folder.glob("*.json.lock"))


@pytest.fixture(scope="module")
def killed_store(tmp_path_factory):
    """A one-table ci grid SIGKILLed in another process after its first result, while the next run trains;
    then the same grid run here to completion. -> (folder, outcome of the rerun, names on disk at the kill)."""
    base = tmp_path_factory.mktemp("killed")
    out, cache = base / "res", base / "cache"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", IBD_CACHE_DIR=str(cache))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT.format(kw=ONE_TABLE), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if list(out.glob("*.json")) and _some_lock_held(out):
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = sorted(p.name for p in out.glob("*.json"))
    old = os.environ.get("IBD_CACHE_DIR")
    os.environ["IBD_CACHE_DIR"] = str(cache)
    try:
        outcome = R.train(R.make_plan(out_dir=out, **ONE_TABLE), progress=False)
    finally:
        os.environ.pop("IBD_CACHE_DIR") if old is None else os.environ.__setitem__("IBD_CACHE_DIR", old)
    return out, outcome, at_kill


def test_sigkilled_grid_resumes_with_every_result_valid(killed_store):
    out, outcome, at_kill = killed_store
    plan = R.make_plan(out_dir=out, **ONE_TABLE)
    assert 1 <= len(at_kill) < 6
    assert sorted(outcome.finished) == at_kill                      # what was done before the kill is kept
    assert sorted(outcome.trained) == sorted(set(plan.names) - set(at_kill)) and not outcome.failed
    files = sorted(out.glob("*.json"))
    assert [p.name for p in files] == sorted(plan.names)
    for p in files:
        r = json.loads(p.read_text())                               # valid JSON of a finished run
        assert is_finished(r, r["config"]) and p.name == E.run_name(r["config"])
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.tmp"))
    assert not plan.pending


def test_dry_run_after_the_grid_and_a_deleted_file_retrains_only_that(killed_store, tmp_path, capsys,
                                                                      cache_dir, monkeypatch):
    out = tmp_path / "res"
    shutil.copytree(killed_store[0], out)
    monkeypatch.setattr(R, "make_plan", functools.partial(R.make_plan, **TINY))
    argv = ["reproduce", "--profile", "ci", "--only", "table-citeulike-t-cdae", "--seeds", "1", "--device", "cpu",
            "--out-dir", str(out)]
    assert main([*argv, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "6 in all, 6 finished, 0 to train" in text
    times = [json.loads(p.read_text())["timing"] for p in out.glob("*.json")]
    spent = R.time_spent(times)                                   # the runs' own timing records, summed
    (wall, n_wall), (cpu, n_cpu) = spent["total_s"], spent["cpu_s"]
    assert n_wall == n_cpu == 6 and cpu == pytest.approx(sum(t["cpu_s"] for t in times)) and 0 < cpu
    assert wall == pytest.approx(sum(t["total_s"] for t in times))
    assert (f"the finished runs took {R.format_seconds(wall)} of wall time summed over runs (6 of 6 recorded it), "
            f"and {R.format_seconds(cpu)} of CPU time (6 recorded it)") in text
    gone = next(p for p in out.glob("*-cd-*.json"))
    gone.unlink()
    assert main([*argv, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "6 in all, 5 finished, 1 to train" in text and gone.name in text
    assert "estimated time with --jobs 1: " in text and "unknown" not in text   # the other runs' recorded time
    # no other CD run of this dataset and model has finished: the estimate is borrowed, and says so
    assert "(rough: 1 of 1 runs are estimated from runs of another dataset, model or method)" in text
    assert f"{gone.name}  (~" in text and ", rough)" in text
    statuses = []
    outcome = R.train(R.make_plan(out_dir=out, **ONE_TABLE), progress=False,
                      on_done=lambda n, s: statuses.append((n, s)))
    assert statuses == [(gone.name, "trained")] and outcome.trained == [gone.name]
    assert len(outcome.finished) == 5 and gone.exists()
    # a finished result made on another device is the same run (files from a GPU cluster merge in)
    r = json.loads(gone.read_text())
    r["config"]["device"] = "cuda"
    gone.unlink()
    runner.write_json(out / "merged-from-gpu.json", r)
    assert not R.make_plan(out_dir=out, **ONE_TABLE).pending


def test_failed_run_is_logged_and_the_others_finish(killed_store, tmp_path, capsys, cache_dir, monkeypatch):
    out = tmp_path / "res"
    shutil.copytree(killed_store[0], out)
    for method in ("rd", "cd"):                                     # two runs to train, one of them fails
        next(out.glob(f"*-{method}-*.json")).unlink()
    real = runner._execute

    def flaky(cfg, *a, **kw):
        if cfg.method == "rd":
            raise RuntimeError("boom in rd")
        return real(cfg, *a, **kw)

    monkeypatch.setattr(runner, "_execute", flaky)
    monkeypatch.setattr(R, "make_plan", functools.partial(R.make_plan, **TINY))
    code = main(["reproduce", "--profile", "ci", "--only", "table-citeulike-t-cdae", "--seeds", "1", "--device",
                 "cpu", "--out-dir", str(out), "--no-notebooks", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1 and "1 run(s) and 0 notebook(s) failed" in captured.err
    summary = json.loads(captured.out)
    (name, log), = summary["failed"].items()
    assert "-rd-" in name and Path(log) == R.log_path(out, name)
    text = Path(log).read_text()
    assert "Traceback" in text and "RuntimeError: boom in rd" in text and '"method": "rd"' in text
    assert len(summary["trained"]) == 1 and "-cd-" in summary["trained"][0] and summary["reused"] == 4
    assert not (out / name).exists()
    monkeypatch.setattr(runner, "_execute", real)                  # fixed: the rerun trains it, log removed
    assert R.train(R.make_plan(out_dir=out, **ONE_TABLE), progress=False).trained == [name]
    assert not Path(log).exists()


def test_estimates_follow_the_speed_of_the_runs_trained_now(tmp_path):
    def put(name: str, method: str, seconds: float, seed: int = 0) -> Path:
        config = {"profile": "converged", "dataset": "d", "model": "cdae", "method": method, "seed": seed}
        runner.write_json(tmp_path / name, {"config": config, "timing": {"total_s": seconds}})
        return tmp_path / name

    put("rd0.json", "rd", 3000.0)
    put("bd0.json", "bd", 6000.0)
    est = R.Estimator(tmp_path)
    kind = lambda m, d="d": {"profile": "converged", "dataset": d, "model": "cdae", "method": m}  # noqa: E731
    assert (est.get(kind("rd")), est.get(kind("bd")), est.speed) == (3000.0, 6000.0, 1.0)
    est.add(put("bd1.json", "bd", 7000.0, seed=1))          # found on disk, not trained here: no speed change
    assert est.speed == 1.0 and est.get(kind("bd")) == 6500.0
    est.add(put("rd1.json", "rd", 1800.0, seed=1), fresh=True)   # trained now in 0.6x the recorded time
    assert est.speed == 0.6
    assert est.get(kind("rd")) == 1800.0 and est.get(kind("bd")) == 6500.0 * 0.6
    est.add(put("cd-new.json", "cd", 600.0), fresh=True)   # a first run of its kind: stored at the recorded scale
    assert est.speed == 0.6 and est.get(kind("cd")) == 600.0
    assert est.get(kind("cd", d="other")) == 600.0          # borrowed from the same method elsewhere
    assert est.measured(kind("cd")) and not est.measured(kind("cd", d="other"))
    # a cell with finished runs of other methods scales what it borrows by how fast those were
    runner.write_json(tmp_path / "small-cd.json", {"config": {**kind("cd", d="small"), "seed": 0},
                                                   "timing": {"total_s": 200.0}})
    small = R.Estimator(tmp_path)
    assert small.cell_scale(kind("bd", d="small")) == pytest.approx(200.0 / ((600.0 + 200.0) / 2))
    assert small.get(kind("bd", d="small")) == pytest.approx(6500.0 * 0.5)
    assert small.get(kind("bd")) == 6500.0 and small.cell_scale(kind("bd", d="other")) == 1.0


def test_a_retrained_warm_up_does_not_count_as_a_slower_machine(tmp_path):
    def put(name: str, total: float, distill: float, seed: int) -> Path:
        config = {"profile": "converged", "dataset": "d", "model": "cdae", "method": "cd", "seed": seed}
        runner.write_json(tmp_path / name, {"config": config, "timing": {"total_s": total, "distill_s": distill}})
        return tmp_path / name

    put("cd0.json", 1000.0, 999.0, seed=0)                # recorded with its warm-up loaded from the cache
    est = R.Estimator(tmp_path)
    # trained now on a fresh machine: 500 s of warm-up retrained, the method's own part at the same speed
    est.add(put("cd1.json", 1499.0, 999.0, seed=1), fresh=True)
    assert est.speed == 1.0
    est.add(put("cd2.json", 1000.0, 499.5, seed=2), fresh=True)   # the method's part twice as fast
    assert est.speed == pytest.approx(0.75)                   # median of 1.0 and 0.5
    # without distill_s on either side the whole time is compared, as before
    runner.write_json(tmp_path / "cd0.json", {"config": {"profile": "converged", "dataset": "d", "model": "cdae",
                                                         "method": "cd", "seed": 0}, "timing": {"total_s": 1000.0}})
    for name in ("cd1.json", "cd2.json"):
        (tmp_path / name).unlink()
    old = R.Estimator(tmp_path)
    old.add(put("cd1.json", 1500.0, 999.0, seed=1), fresh=True)
    assert old.speed == 1.5


def test_a_run_fits_a_time_limit_only_with_its_margin():
    assert R.TIME_MARGIN == 1.1
    assert R.fits(100.0, 110.5) and not R.fits(100.0, 109.5)       # 100 s * 1.1 = 110 s
    assert R.fits(100.0, None) and R.fits(None, 1.0)                # no limit, or nothing to estimate from


@pytest.mark.parametrize("jobs", [1, 2])
def test_time_limit_starts_only_runs_that_fit_and_leaves_the_rest(killed_store, tmp_path, cache_dir, monkeypatch,
                                                                   jobs):
    out = tmp_path / "res"
    shutil.copytree(killed_store[0], out)
    gone = {m: next(out.glob(f"*-{m}-*.json")).name for m in ("rd", "cd", "bd")}
    for name in gone.values():
        (out / name).unlink()
    before = _stat(out)
    seconds = {"rd": 10_000.0, "cd": 1.0, "bd": 1_000.0}             # only CD fits in 10 minutes
    monkeypatch.setattr(R.Estimator, "get", lambda self, c: seconds.get(c["method"], 1.0))
    outcome = R.train(R.make_plan(out_dir=out, **ONE_TABLE), jobs=jobs, progress=False, time_limit=600)
    assert outcome.trained == [gone["cd"]] and not outcome.failed  # the first run in plan order that fits
    assert outcome.deferred == [gone["rd"], gone["bd"]]             # the others wait, in plan order
    finished = sorted(n for n in before if n.endswith(".json"))
    assert sorted(p.name for p in out.glob("*.json")) == sorted([*finished, gone["cd"]])
    assert all(_stat(out)[n] == t for n, t in before.items())      # nothing finished was touched
    with pytest.raises(ConfigError, match="time_limit=0 is out of range"):
        R.train(R.make_plan(out_dir=out, **ONE_TABLE), time_limit=0)


def test_a_deferred_run_that_another_process_finished_is_not_left_over(killed_store, tmp_path, cache_dir,
                                                                        monkeypatch):
    out = tmp_path / "res"
    shutil.copytree(killed_store[0], out)
    rd, cd = (next(out.glob(f"*-{m}-*.json")) for m in ("rd", "cd"))
    saved = rd.read_bytes()
    rd.unlink()
    cd.unlink()
    seconds = {"rd": 10_000.0, "cd": 1.0}                           # RD does not fit, CD does
    monkeypatch.setattr(R.Estimator, "get", lambda self, c: seconds.get(c["method"], 1.0))
    # while CD trains here, another process (a cluster job, a second reproduce) finishes RD
    outcome = R.train(R.make_plan(out_dir=out, **ONE_TABLE), progress=False, time_limit=600,
                      on_done=lambda name, status: rd.write_bytes(saved))
    assert outcome.trained == [cd.name] and outcome.deferred == []


def test_time_limit_on_the_command_line(killed_store, tmp_path, capsys, cache_dir, monkeypatch):
    out = tmp_path / "res"
    shutil.copytree(killed_store[0], out)
    gone = next(out.glob("*-rd-*.json"))
    gone.unlink()
    monkeypatch.setattr(R, "make_plan", functools.partial(R.make_plan, **TINY))
    argv = ["reproduce", "--profile", "ci", "--only", "table-citeulike-t-cdae", "--seeds", "1", "--device", "cpu",
            "--out-dir", str(out), "--no-notebooks", "--quiet"]
    monkeypatch.setattr(R.Estimator, "get", lambda self, c: 7_200.0)   # every run: 2 h
    assert main([*argv, "--time-limit", "1h30m"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["deferred"] == [gone.name] and not gone.exists()
    assert "1 run(s) left for later: they would not finish within --time-limit" in captured.err
    assert main([*argv, "--time-limit", "2h15m"]) == 0 and gone.exists()     # 2 h * 1.1 = 2 h 12 min fits
    for bad, words in (("90", "is not a duration"), ("0m", "is zero")):
        with pytest.raises(SystemExit) as e:
            main([*argv, "--time-limit", bad])
        assert e.value.code == 2 and words in capsys.readouterr().err


def test_machine_state_tells_idle_timings_from_shared_ones():
    assert R.machine_state({"load": [0.3, 1.2], "threads": 1}) == "idle"        # the run's own thread only
    assert R.machine_state({"load": [1.9, 2.1], "threads": 1}) == "shared"      # a second --jobs worker
    assert R.machine_state({"load": [1.4, 0.2], "threads": 2}) == "idle"
    assert R.machine_state({"load": [2.5, 1.0], "threads": 2}) == "shared"      # 2.5 >= 2 + 0.5
    assert R.machine_state({"total_s": 3.0}) == "not recorded"                  # made before loads were kept
    assert R.machine_state({"load": [None, None], "threads": 1}) == "not recorded"


def test_table7_means_cpu_time_over_the_runs_that_recorded_it(killed_store):
    (path,) = killed_store[0].glob("*-bd-*.json")
    new = report.Run(path, json.loads(path.read_text()))
    old = report.Run(path, json.loads(path.read_text()))
    old.result["config"]["seed"] = 1
    for key in ("cpu_s", "load", "threads", "cores"):              # a run made before these were recorded
        old.result["timing"].pop(key)
    row = R.timing([new, old]).iloc[0]
    assert row["cpu_s"] == new.result["timing"]["cpu_s"] and row["runs"] == 2
    assert row["machine"] == "mixed" and R.machine_counts([new, old])["not recorded"] == 1


def test_cpu_spread_is_the_largest_slowest_over_fastest_ratio_within_one_cell(killed_store):
    (path,) = killed_store[0].glob("*-bd-*.json")
    runs = [report.Run(path, json.loads(path.read_text())) for _ in range(4)]
    for seed, (r, cpu) in enumerate(zip(runs, (100.0, 250.0, 40.0, 60.0))):
        r.result["config"]["seed"] = seed
        r.result["timing"]["cpu_s"] = cpu
    runs[2].result["config"]["method"] = runs[3].result["config"]["method"] = "cd"   # a second cell
    ratio, cell = R.cpu_spread(runs)
    assert ratio == pytest.approx(2.5) and cell[2] == "bd"          # 250 / 100 beats 60 / 40
    runs[1].result["timing"].pop("cpu_s")                          # bd keeps one recorded run
    ratio, cell = R.cpu_spread(runs)
    assert ratio == pytest.approx(1.5) and cell[2] == "cd"
    assert R.cpu_spread(runs[:2]) is None                          # no cell with two recorded runs


def test_hardware_names_one_thread_in_the_singular(killed_store, monkeypatch):
    from ibd_lite import provenance

    monkeypatch.setattr(provenance.torch, "get_num_threads", lambda: 1)
    assert provenance.device_name("cpu").endswith("(1 thread)")
    monkeypatch.setattr(provenance.torch, "get_num_threads", lambda: 2)
    assert provenance.device_name("cpu").endswith("(2 threads)")
    (path,) = killed_store[0].glob("*-bd-*.json")
    old, new = (report.Run(path, json.loads(path.read_text())) for _ in range(2))
    old.result["provenance"]["device_name"] = "AMD EPYC (1 threads)"      # as runs before the fix recorded it
    new.result["provenance"]["device_name"] = "AMD EPYC (1 thread)"
    assert R.hardware([old, new]) == ["AMD EPYC (1 thread)"]

# ------------------------------------------------------------------------------------------ compact store

def test_round_floats_keeps_six_significant_digits():
    obj = {"a": 0.2966666666666667, "b": [15892.18994140625, 3, "x"], "c": {"z": "eNpN1", "shape": [300]},
           "d": 1.23456789e-7, "e": True}
    assert C.round_floats(obj) == {"a": 0.296667, "b": [15892.2, 3, "x"], "c": {"z": "eNpN1", "shape": [300]},
                                   "d": 1.23457e-07, "e": True}
    assert C.round_floats(C.round_floats(obj)) == C.round_floats(obj)
    result = {"schema": 3, "config": {"lr": 0.0012345678901}, "history": [{"loss": 1.0000001}]}
    assert C.compact(result) == {"schema": 3, "config": {"lr": 0.0012345678901}, "history": [{"loss": 1.0}]}
    entry = {"round": 1, "overlap@N": 0.5, "overlap_per_user": {"z": "a"}, "list_stability_T": {"z": "b"},
             "ts": {"total": {"sampled": 9}, "per_user": {"sampled": {"z": "c"}}}}
    table_run = {"config": {"gamma_ts": 0.5, "gamma_st": 0.5}, "rounds": [entry]}
    assert C.compact(table_run) == table_run                        # Figures 4-5 read these per-user logs
    sweep = {"config": {"gamma_ts": 0.1, "gamma_st": 0.5}, "rounds": [entry]}
    assert C.compact(sweep)["rounds"] == [{"round": 1, "overlap@N": 0.5, "ts": {"total": {"sampled": 9}}}]


def test_stored_results_are_compact_and_still_finished(killed_store):
    out = killed_store[0]
    for p in out.glob("*.json"):
        r = json.loads(p.read_text())
        assert C.compact(r) == r and is_finished(r, r["config"]), p.name


# ------------------------------------------------------------------------------------------ notebooks

def glued(nb: dict) -> dict:
    """name -> text/plain of every myst-nb glue output of an executed notebook."""
    out = {}
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            meta = o.get("metadata", {}).get("scrapbook")
            if meta:
                out[meta["name"]] = o["data"][meta["mime_prefix"] + "text/plain"]
    return out


def output_lines(nb: dict) -> list[str]:
    lines = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            text = o.get("text") or o.get("data", {}).get("text/plain", "")
            lines += "".join(text).splitlines()
    return lines


def _render(template: str, dst, monkeypatch, **params) -> None:
    """Execute a reproduce template with papermill (its kernel imports this checkout's ibd_lite)."""
    import papermill as pm

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pm.execute_notebook(str(R.NOTEBOOKS / template), str(dst), cwd=str(R.NOTEBOOKS), progress_bar=False,
                        parameters=params)


def test_table_notebook_renders_the_numbers_of_the_result_files(killed_store, tmp_path, monkeypatch):
    out = killed_store[0]
    dst = tmp_path / "table.ipynb"
    _render("table.ipynb", dst, monkeypatch, dataset="citeulike-t", model="cdae", profile="ci", seeds=1,
            results_dir=str(out), n_boot=200)
    nb = json.loads(dst.read_text())
    values = glued(nb)
    rows = report.table_rows(report.load_runs(out), "synthetic", "cdae")
    means = report.means(rows)
    assert len(rows) == 8 and values["n_seeds"] == "1"
    for label in means.index:
        for metric in E.METRICS:
            key = f"mean_{label.replace('-', '_')}_{metric.replace('@', '')}"
            assert float(values[key]) == means.loc[label, metric], key
    imp = R.improvements(rows)
    assert float(values["Improv_BD_S_H50"]) == imp.loc["Improv.BD-S", "H@50"]
    assert any("equal the 6 result files" in line for line in output_lines(nb))
    assert max(map(len, output_lines(nb))) <= 100


# ------------------------------------------------------------------------------------------ GPU check

def test_gpu_check_refuses_cleanly_without_cuda(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    p = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(tmp_path / "gpu")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 3
    assert "no CUDA device" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "gpu").exists()                         # nothing started


# ------------------------------------------------------------------------------------------ --render-only

def glued_md(nb: dict) -> dict:
    """name -> Markdown text of every glued Markdown paragraph of an executed notebook."""
    return {o["metadata"]["scrapbook"]["name"]: o["data"]["application/papermill.record/text/markdown"]
            for c in nb["cells"] for o in c.get("outputs", [])
            if "application/papermill.record/text/markdown" in o.get("data", {})}


def _stat(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_render_only_trains_nothing_and_renders_finished_and_pending_pages(killed_store, tmp_path, capsys):
    out, nb_dir = tmp_path / "res", tmp_path / "pages"
    shutil.copytree(killed_store[0], out)
    before = _stat(out)
    code = main(["reproduce", "--profile", "ci", "--only", "table-citeulike-t-cdae", "fig3", "fig4", "fig5",
                 "table7", "--seeds", "1", "--device", "cpu", "--out-dir", str(out), "--nb-dir", str(nb_dir),
                 "--render-only", "--quiet"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["failed_notebooks"] == {} and _stat(out) == before     # nothing trained
    assert summary["rendered"] == ["table-citeulike-t-cdae", "fig3", "fig4", "fig5", "table7"]
    pages = {p.stem: json.loads(p.read_text()) for p in nb_dir.glob("*.ipynb")}
    assert set(pages) == set(summary["rendered"])
    lines = {name: output_lines(nb) for name, nb in pages.items()}
    assert "8 rows x 4 metrics equal the 6 result files" in lines["table-citeulike-t-cdae"]
    points = sum(len(ms) for f in [*out.glob("*-bd-*.json"), *out.glob("*-ibd-*.json")]
                 for h in json.loads(f.read_text())["history"] for ms in h.get("test", {}).values())
    assert points > 0 and f"{points} plotted points equal the 2 result files" in lines["fig3"]
    assert "student side: sampled and corrected totals equal the 1 result files" in lines["fig4"]
    assert "6 lines equal the 6 result files" in lines["table7"]
    html = "".join("".join(o["data"].get("text/html", "")) for c in pages["table7"]["cells"]
                   for o in c.get("outputs", []) if "data" in o)
    for name in ("Teacher", "Student", "RD", "CD", "BD", "iBD", "CDAE"):           # the names the prose uses
        assert f">{name}</th>" in html
    assert ">teacher</th>" not in html and ">cdae</th>" not in html                # not the files' keys
    states = re.search(r"Of these runs, \*\*(\d+)\*\* were timed on an otherwise idle machine, \*\*(\d+)\*\* "
                       r"while other work shared it .* and \*\*(\d+)\*\* before",
                       glued_md(pages["table7"])["timing_text"])
    assert states and sum(map(int, states.groups())) == 6                   # every run is counted once
    assert int(states.group(3)) == 0                                         # these runs recorded their load
    notes = {name: glued_md(nb)["status_note"] for name, nb in pages.items()}
    assert notes["table-citeulike-t-cdae"] == "All 6 planned runs of the citeulike-t / CDAE table are finished (1 seed)."
    assert notes["fig5"].startswith("**Not run yet.** None of the 1 planned runs of Figure 5 (foursquare-tky / "
                                    "NeuMF) is finished yet")                # NeuMF: no result at all
    assert f"```bash\n{'python -m ibd_lite reproduce --profile ci --only fig5 --seeds 1'}\n```" in notes["fig5"]
    assert glued_md(pages["fig5"])["share_text"].startswith("The per-user counts appear here once")
    findings = R.analyses_findings(R.select_runs(out, "ci"), "ci", seeds=1)       # chapter 7's sentences
    assert f"the student had corrected a share {float(glued(pages['fig4'])['share_student']):.3f} " \
           f"at the next round's check and the teacher {float(glued(pages['fig4'])['share_teacher']):.3f}." \
           in findings["Figure 4"]
    assert f"iBD's student reaches H@50 {float(glued(pages['fig3'])['last_iBD_student_H50']):.4f} against " \
           f"{float(glued(pages['fig3'])['last_BD_student_H50']):.4f} for BD's" in findings["Figure 3"]
    assert findings["Figure 5"] == findings["Figure 6"] == "no complete seed yet."
    assert notes["table7"].startswith("**Partial results.** 6 of 12 planned runs of Table 7 are finished")
    table = pages["table-citeulike-t-cdae"]
    assert "".join(table["cells"][0]["source"]).startswith("# CiteULike with CDAE\n")
    hidden = [c for c in table["cells"] if {"parameters", "injected-parameters"} & set(c["metadata"].get("tags", []))]
    assert len(hidden) == 2 and all("remove-cell" in c["metadata"]["tags"] for c in hidden)
    means = report.means(report.table_rows(report.load_runs(out), "synthetic", "cdae"))
    claims = glued_md(table)["claims_text"]
    assert claims.startswith("Ours, on this table (1 of 1 planned seeds): against the best other student")
    assert f"{means.loc['iBD-Student', 'H@50']:.4f}" in glued_md(table)["summary_text"]


def test_render_only_excludes_the_other_modes(capsys):
    for other in ("--dry-run", "--list", "--no-notebooks"):
        with pytest.raises(SystemExit) as e:
            main(["reproduce", "--profile", "ci", "--render-only", other])
        assert e.value.code == 2
        assert "not allowed with argument" in capsys.readouterr().err


def test_gamma_page_shows_the_seed_means_of_the_result_files(killed_store, tmp_path, monkeypatch):
    out = tmp_path / "res"
    shutil.copytree(killed_store[0], out)
    ibd = json.loads(next(out.glob("*-ibd-*.json")).read_text())
    n_users = len(C.decode(ibd["models"]["student"]["ranks"]["test"]))
    values = {}
    for i, (a, b) in enumerate((a, b) for a in R.GAMMAS for b in R.GAMMAS):
        values[a, b] = ibd["models"]["student"]["test"]["H@50"] if (a, b) == (0.5, 0.5) else (i + 1) / 10
        if (a, b) == (0.5, 0.5):
            continue
        r = json.loads(json.dumps(ibd))
        r["config"].update(gamma_ts=a, gamma_st=b)
        hits = round(values[a, b] * n_users)            # the first `hits` users hit at rank 0, the rest miss
        values[a, b] = hits / n_users
        r["models"]["student"]["ranks"]["test"] = C.encode(np.where(np.arange(n_users) < hits, 0, 10**6))
        r["models"]["student"]["test"]["H@50"] = values[a, b]
        r["models"]["teacher"]["best_epoch"] = r["config"]["pretrain_epochs"] + 10 * (i % 2 == 0)
        runner.write_json(out / E.run_name(r["config"]), r)
    kept = 4 + (ibd["models"]["teacher"]["best_epoch"] <= ibd["config"]["pretrain_epochs"])  # odd i + centre?
    dst = tmp_path / "fig6.ipynb"
    _render("fig6.ipynb", dst, monkeypatch, dataset="citeulike-t", model="cdae", profile="ci", seeds=1,
            results_dir=str(out), n_boot=200)
    nb = json.loads(dst.read_text())
    best = max(values, key=values.get)
    assert float(glued(nb)["student_best"]) == values[best]
    assert float(glued(nb)["student_mid"]) == values[0.5, 0.5]
    text = glued_md(nb)["grid_text"]
    assert text.startswith("With 1 seed per cell, the student's best cell is")
    assert f"= ({best[0]}, {best[1]})$ with H@50 {values[best]:.4f}" in text
    cmp = R.gamma_comparisons(report.load_runs(out), "synthetic", "cdae", n_boot=200)   # the page's intervals
    st = cmp[cmp.role == "student"].set_index(["gamma_ts", "gamma_st"])
    assert len(st) == 8 and set(st.seeds) == {1}
    assert f"paired: {st.loc[best, 'change %']:+.1f} %, 95% CI of the difference {st.loc[best, '95% CI']}, " \
           f"{st.loc[best, 'verdict']})" in text
    k = {v: int((st.verdict == v).sum()) for v in ("ahead", "behind", "not distinguishable")}
    assert (f"of the eight other cells, {k['ahead']} {'is' if k['ahead'] == 1 else 'are'} ahead of the default, "
            f"{k['behind']} behind and {k['not distinguishable']} not distinguishable;") in text
    assert k["ahead"] >= 1 and k["behind"] >= 1 and sum(k.values()) == 8   # H@50 0.1..0.9 around the default
    assert f"In {kept} of the 9 runs the teacher kept on validation is its warm-up" in text
    teacher = ibd["models"]["teacher"]["test"]["H@50"]                # every cell copies it: no best cell
    assert f"; the teacher's H@50 is the same in all nine cells ({teacher:.4f})." in text
    assert "For scale" not in text                                  # one seed of the default cell: no spread
    assert "18 cells equal the 9 result files" in output_lines(nb)
    assert glued_md(nb)["status_note"].startswith("**Not run yet.**") is False
