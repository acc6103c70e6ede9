"""Issue 7: a hostile cache file never runs code; every bad input fails in seconds, before any training, with
exit 2 and a message naming the parameter; a diverged run is an error, never a result; concurrent runners
never train a run twice; stale temporary files are removed; results carry the training code's fingerprint."""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest
import torch

from ibd_lite import experiments as E
from ibd_lite import methods, provenance, runner, train
from ibd_lite.cli import main
from ibd_lite.config import make_config
from ibd_lite.errors import ConfigError, DivergedError, IBDError
from ibd_lite.runner import run

SMALL = dict(profile="ci", model="cdae", method="student", device="cpu", pretrain_epochs=2, epochs=2, eval_every=2)
CLI = ["run", "--profile", "ci", "--device", "cpu", "--quiet"]
REPO = Path(__file__).resolve().parent.parent


class Payload:
    """Unpickling this calls open(marker, 'w'): it would create the marker file if the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def forbid_work(monkeypatch):
    """Any data loading or training fails loudly: what is rejected must be rejected before all work."""
    def boom(*a, **kw):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(runner, "load_split", boom)
    monkeypatch.setattr(methods, "pretrain", boom)


def cli(capsys, *args: str) -> tuple[int, str, float]:
    """Exit code, stderr and seconds of an in-process CLI call."""
    t0 = time.perf_counter()
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err, time.perf_counter() - t0


# ---------------------------------------------------------------- row 1: a crafted .pt in the warm-up cache

def test_hostile_checkpoint_never_runs_and_is_retrained(cache_dir, tmp_path):
    run(SMALL, progress=False)                                     # creates the student's warm-up entry
    (ckpt,) = cache_dir.glob("*.pt")
    marker = tmp_path / "payload-ran"
    torch.save({"format": methods.CHECKPOINT_FORMAT, "state": Payload(marker), "report": "{}"}, ckpt)
    live = tmp_path / "copy.pt"                                    # the payload is live: an unsafe load runs it
    live.write_bytes(ckpt.read_bytes())
    torch.load(live, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.warns(UserWarning, match=f"discarding warm-up cache file .*{ckpt.name}"):
        res = run(SMALL, progress=False)
    assert not marker.exists()
    assert res["pretrain"]["student"]["cached"] is False           # retrained, and stored as plain tensors
    blob = torch.load(ckpt, weights_only=True)
    assert blob["format"] == methods.CHECKPOINT_FORMAT and json.loads(blob["report"])["epochs_run"] == 2
    assert run(SMALL, progress=False)["pretrain"]["student"]["cached"] is True


# ---------------------------------------------------------------- rows 2-3, 5-7: bad values fail at once, exit 2

@pytest.mark.parametrize("args, message", [
    (["--lr", "inf"], "lr=inf is not finite: it must be a finite number > 0"),
    (["--lr", "nan"], "lr=nan is not finite"),
    (["--weight-decay", "inf"], "weight_decay=inf is not finite: it must be a finite number >= 0"),
    (["--method", "bd", "--gamma-ts", "inf"], "gamma_ts=inf is not finite: it must be a finite number >= 0"),
    (["--method", "bd", "--tau", "inf"], "tau=inf is not finite: it must be a finite number > 0"),
    (["--method", "ibd", "--eps-e=-inf"], "eps_e=-inf is not finite"),
    (["--seed", "-1"], "seed=-1 is out of range: it must be an integer in [0, 2**32 - 1]"),
    (["--seed", str(2 ** 32)], f"seed={2 ** 32} is out of range"),
    (["--device", "mps"], "MPS backend is not available"),
])
def test_bad_value_exits_2_before_any_work(capsys, monkeypatch, cache_dir, args, message):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    forbid_work(monkeypatch)
    code, err, seconds = cli(capsys, *CLI, *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert seconds < 5 and not cache_dir.exists()


def test_seed_bounds_are_inclusive_exclusive():
    assert make_config(profile="ci", seed=2 ** 32 - 1).seed == 2 ** 32 - 1
    assert make_config(profile="ci", seed=0).seed == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr="0.1"), "lr='0.1' has type str: it must be a number"),
    (dict(seed="1"), "seed='1' has type str: it must be an integer"),
    (dict(seed=1.5), "seed=1.5 has type float: it must be an integer (e.g. seed=1)"),
    (dict(epochs=True), "epochs=True has type bool: it must be an integer"),
    (dict(ks=50), "ks=50 must be a sequence of integers, e.g. ks=(50,)"),
    (dict(ks="50"), "ks='50' must be a sequence of integers"),
    (dict(ks=(50, 2.5)), "must be a sequence of integers"),
    (dict(extra={"note": object()}), "extra must be a dict of JSON values"),
])
def test_python_api_type_errors_name_the_expected_type(monkeypatch, kwargs, message):
    forbid_work(monkeypatch)
    with pytest.raises(ConfigError) as e:
        run(dict(SMALL, **kwargs), progress=False, cache=False)
    assert message in str(e.value)


def test_python_api_accepts_numpy_scalars_and_paths(tmp_path):
    import numpy as np

    c = make_config(profile="ci", seed=np.int64(3), lr=np.float64(0.01), ks=[50, 100], data_dir=tmp_path)
    assert (c.seed, c.lr, c.ks, c.data_dir) == (3, 0.01, (50, 100), str(tmp_path))
    assert type(c.seed) is int and type(c.lr) is float
    assert make_config(**c.to_dict()) == c                        # a result's config round-trips unchanged


def test_rd_k_beyond_the_items_fails_before_pretraining(monkeypatch, synthetic_split):
    monkeypatch.setattr(methods, "pretrain", lambda *a, **kw: pytest.fail("pretraining started"))
    unobserved = synthetic_split.n_items - int(synthetic_split.train_counts.max())
    with pytest.raises(ConfigError, match=rf"rd_k=100000 is out of range for synthetic.*\[1, {unobserved}\]"):
        run(dict(SMALL, method="rd", rd_k=100000), progress=False, cache=False)
    with pytest.raises(ConfigError, match=f"rd_k={unobserved + 1} is out of range"):
        run(dict(SMALL, method="rd", rd_k=unobserved + 1), progress=False, cache=False)


def test_min_user_interactions_beyond_every_user_names_the_largest(capsys, monkeypatch):
    monkeypatch.setattr(methods, "pretrain", lambda *a, **kw: pytest.fail("pretraining started"))
    code, err, _ = cli(capsys, *CLI, "--no-cache", "--min-user-interactions", "1000")
    assert code == 2
    assert "no user has at least 1000 distinct items in synthetic; the largest has 40" in err   # SYN_MAX_LEN


# ---------------------------------------------------------------- row 4: paths proven writable at start-up

def test_bad_out_paths_and_cache_dir_exit_2_in_seconds(capsys, monkeypatch, tmp_path):
    forbid_work(monkeypatch)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    monkeypatch.setenv("IBD_CACHE_DIR", str(tmp_path / "cache"))
    cases = [
        (["--out", "/proc/ibd-result.json"], "cannot write to the result's folder (out='/proc/ibd-result.json')"),
        (["--out", str(tmp_path)], f"out='{tmp_path}' is a directory: give the result a file path"),
        (["--out", f"{a_file}/r.json"], f"{a_file} is a file, not a folder; choose an --out path"),
    ]
    for args, message in cases:
        code, err, seconds = cli(capsys, *CLI, *args)
        assert code == 2 and message in err and seconds < 5, err
    monkeypatch.setenv("IBD_CACHE_DIR", str(a_file))
    code, err, seconds = cli(capsys, *CLI, "--out", str(tmp_path / "ok.json"))
    assert code == 2 and seconds < 5
    assert f"checkpoint cache folder '{a_file}' (IBD_CACHE_DIR): {a_file} is a file" in err and "--no-cache" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]      # no probe, result or cache left


def test_full_disk_at_write_time_keeps_a_rescue_copy(tmp_path, monkeypatch):
    out = tmp_path / "res" / "r.json"
    real = runner.write_json

    def disk_full(path, obj):
        if Path(path) == out:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, obj)

    monkeypatch.setattr(runner, "write_json", disk_full)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "sys-tmp"))
    (tmp_path / "sys-tmp").mkdir()
    with pytest.raises(IBDError) as e:
        run(SMALL, out, progress=False, cache=False)
    (rescue,) = (tmp_path / "sys-tmp").glob("ibd_lite-rescue-*-r.json")
    msg = str(e.value)
    assert f"cannot write the result to {out}: No space left on device" in msg and f"mv {rescue} {out}" in msg
    assert json.loads(rescue.read_text())["config"] == make_config(**SMALL).to_dict()
    assert not out.exists()


# ---------------------------------------------------------------- row 3: the training loop's guard, strict JSON

def test_diverging_learning_rate_stops_with_the_model_phase_and_epoch(tmp_path):
    out = tmp_path / "r.json"
    with pytest.raises(DivergedError) as e:
        run(dict(SMALL, lr=1e30), out, progress=False, cache=False)
    assert ("the CF loss of model 'student' is nan in phase 'pretrain student' at epoch 1. "
            "Suspect parameters: lr=1e+30, weight_decay=1e-06") in str(e.value)
    assert not out.exists()


def test_non_finite_kd_loss_in_bd_stops_the_run(monkeypatch):
    """A KD loss that becomes NaN during BD is an error naming both directions' suspects, not a result."""
    real = train.train_epoch

    def nan_kd(learners, *a, **kw):
        totals = real(learners, *a, **kw)
        if learners[0].kd is not None:
            totals[learners[0].name]["kd"] = float("nan")
        return totals

    monkeypatch.setattr(train, "train_epoch", nan_kd)
    with pytest.raises(DivergedError) as e:
        run(dict(SMALL, method="bd", gamma_ts=0.3, tau=2.5), progress=False, cache=False)
    msg = str(e.value)
    assert "the KD loss of model 'teacher' is nan in phase 'bd' at epoch 3" in msg     # warm-up ran 2 epochs
    assert "lr=0.005" in msg and "tau=2.5" in msg


def test_check_finite_losses_names_the_suspects():
    kd = types.SimpleNamespace(coef=0.5, tau=2.0, giver=object())
    learner = types.SimpleNamespace(name="student", lr=1e-3, weight_decay=0.0, kd=kd)
    train.check_finite_losses([learner], {"student": {"cf": 1.0, "kd": 2.0}}, "bd", 7)       # finite: passes
    with pytest.raises(DivergedError) as e:
        train.check_finite_losses([learner], {"student": {"cf": 1.0, "kd": math.inf}}, "bd", 7)
    assert str(e.value) == (
        "training diverged: the KD loss of model 'student' is inf in phase 'bd' at epoch 7. Suspect parameters: "
        "lr=0.001, weight_decay=0, the distillation weight (gamma_ts/gamma_st, rd_alpha or cd_lambda)=0.5, "
        "tau=2; lower the learning rate or the distillation weight/temperature and run again")


def test_result_json_is_strict(tmp_path, monkeypatch):
    with pytest.raises(ValueError):
        runner.write_json(tmp_path / "x.json", {"N@50": float("nan")})
    assert list(tmp_path.iterdir()) == []
    def nan_eval(*a, return_ranks=False, **kw):
        m = {"N@50": float("nan"), "H@50": 0.0}
        return (m, torch.zeros(300, dtype=torch.long)) if return_ranks else m

    monkeypatch.setattr(methods, "evaluate", nan_eval)
    out = tmp_path / "r.json"
    with pytest.raises(IBDError, match=r"models\.student\.test\.N@50 is nan"):
        run(SMALL, out, progress=False, cache=False)
    assert not out.exists()


# ---------------------------------------------------------------- row 9: concurrent runners, --jobs

GRID = dict(profile="ci", model="cdae", seeds=[0], device="cpu", pretrain_epochs=2, epochs=2, eval_every=2)
GRID_SCRIPT = f"""
import json, sys
from ibd_lite.experiments import run_experiment
print("ready", flush=True)
done = []
run_experiment("direction", out_dir=sys.argv[1], progress=False, jobs=2,
               on_done=lambda path, status: done.append([path.name, status]), **{GRID!r})
print(json.dumps(done))
"""


def test_two_grids_and_jobs_on_one_folder_train_each_run_once(tmp_path, monkeypatch):
    """A `--jobs 2` grid in another process and a grid here, on one folder: both BD runs need the same two
    warm-ups; every run and every warm-up is trained exactly once, and each grid returns every result."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("IBD_CACHE_DIR", str(cache))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = tmp_path / "grid"
    other = subprocess.Popen([sys.executable, "-c", GRID_SCRIPT, str(out)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert other.stdout.readline().strip() == "ready"           # imported: its workers are starting now
    here = []
    E.run_experiment("direction", out_dir=out, progress=False, on_done=lambda p, s: here.append([p.name, s]), **GRID)
    stdout, stderr = other.communicate(timeout=300)
    assert other.returncode == 0, stderr
    reports = [dict(here), dict(json.loads(stdout.splitlines()[-1]))]
    names = sorted(p.name for p in out.glob("*.json"))
    assert len(names) == 2 and all(sorted(r) == names for r in reports)       # each grid got every result
    trained = [n for r in reports for n, status in r.items() if status == "trained"]
    assert sorted(trained) == names                                            # every run trained exactly once
    results = [json.loads((out / n).read_text()) for n in names]
    for role in ("teacher", "student"):                                        # each warm-up trained once
        assert sum(not r["pretrain"][role]["cached"] for r in results) == 1, role
    assert len(list(cache.glob("*.pt"))) == 2


def test_run_locked_by_another_process_is_skipped_then_loaded(tmp_path, monkeypatch):
    """Grid order: A is locked elsewhere, so B runs first; then the grid waits for A and loads its result."""
    from filelock import FileLock

    monkeypatch.setenv("IBD_CACHE_DIR", str(tmp_path / "cache"))
    cfgs = [dict(SMALL, seed=s) for s in (0, 1)]
    paths = [tmp_path / E.run_name(make_config(**c).to_dict()) for c in cfgs]
    elsewhere = FileLock(runner.lock_path(paths[0]))
    elsewhere.acquire()
    order = []

    def on_done(path, status):
        order.append((path, status))
        if path == paths[1]:                       # the "other process" finishes A and lets go of it
            runner.run(cfgs[0], paths[0].with_suffix(".other"), progress=False)
            paths[0].write_bytes(paths[0].with_suffix(".other").read_bytes())
            elsewhere.release()

    res = E.run_grid(cfgs, tmp_path, progress=False, on_done=on_done)
    assert order == [(paths[1], "trained"), (paths[0], "finished")]
    assert res[0]["config"]["seed"] == 0 and res[1]["config"]["seed"] == 1


def test_grid_jobs_must_be_positive(capsys, tmp_path):
    code, err, _ = cli(capsys, "grid", "table", "--profile", "ci", "--jobs", "0", "--out-dir", str(tmp_path))
    assert code == 2 and "jobs=0 is out of range" in err


# ---------------------------------------------------------------- row 10: stale temporary files

def dead_pid() -> int:
    """The PID of a process that has exited."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path, monkeypatch):
    dead = dead_pid()
    res_dir, cache = tmp_path / "res", tmp_path / "cache"
    monkeypatch.setenv("IBD_CACHE_DIR", str(cache))
    for folder in (res_dir, cache):
        folder.mkdir()
    stale = [res_dir / f".r.json.{dead}.k2j4_x9a.tmp", cache / f"synthetic-cdae-student-0123.tmp{dead}"]
    kept = [res_dir / f".r.json.{os.getpid()}.abcd1234.tmp", res_dir / "notes.tmp", cache / "x.tmp-old"]
    for p in stale + kept:
        p.write_text("partial")
    run(SMALL, res_dir / "r.json", progress=False)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


def test_partial_download_of_a_dead_process_is_removed(tmp_path):
    import hashlib
    import io

    from ibd_lite import download

    dead = dead_pid()
    payload = b"the pinned bytes"
    stale = tmp_path / f".users.dat.{dead}.q1w2e3r4.part"
    stale.write_bytes(b"half a file")
    dest = download.ensure_file(tmp_path / "users.dat", "https://example.invalid/users.dat",
                                hashlib.sha256(payload).hexdigest(), opener=lambda url: io.BytesIO(payload))
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.dat"]


def test_write_json_names_its_temporary_file_with_the_pid(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(Path(a).name), real(a, b)))
    runner.write_json(tmp_path / "x.json", {"a": 1})
    assert len(seen) == 1 and seen[0].startswith(f".x.json.{os.getpid()}.") and seen[0].endswith(".tmp")


# ---------------------------------------------------------------- provenance: the training code's fingerprint

def test_fingerprint_covers_the_training_modules(tmp_path):
    (tmp_path / "models").mkdir()
    for name in provenance.TRAINING_MODULES + tuple(provenance.MODEL_MODULES.values()):
        (tmp_path / name).write_bytes((provenance.PACKAGE / name).read_bytes())

    def fp(model):
        return provenance._fingerprint(tmp_path, provenance.TRAINING_MODULES + (provenance.MODEL_MODULES[model],))

    assert fp("cdae") == provenance.code_fingerprint("cdae") and fp("neumf") == provenance.code_fingerprint("neumf")
    assert len({provenance.code_fingerprint(m) for m in (None, "cdae", "neumf", "bprmf")}) == 4
    assert len(provenance.code_fingerprint("cdae")) == 12
    with open(tmp_path / "models" / "neumf.py", "a") as f:          # a change to NeuMF only ...
        f.write("\n# a change\n")
    assert fp("neumf") != provenance.code_fingerprint("neumf")
    assert fp("cdae") == provenance.code_fingerprint("cdae")         # ... leaves CDAE's results valid
    with open(tmp_path / "bd.py", "a") as f:                        # a shared module changes every model's
        f.write("\n# a change\n")
    assert fp("cdae") != provenance.code_fingerprint("cdae")
    with pytest.raises(ValueError, match="no fingerprint for model 'svd'"):
        provenance.code_fingerprint("svd")


def test_result_of_other_code_is_redone_with_a_warning(tmp_path, monkeypatch, cache_dir):
    out = tmp_path / "r.json"
    first = run(SMALL, out, progress=False)
    model = first["config"]["model"]
    assert first["provenance"]["code_fingerprint"] == provenance.code_fingerprint(model)
    key = methods.pretrain_key(make_config(**SMALL), "student", torch.device("cpu"))
    monkeypatch.setitem(provenance._FINGERPRINTS, model, "0123456789ab")        # the code changed
    assert methods.pretrain_key(make_config(**SMALL), "student", torch.device("cpu")) != key
    old = first["provenance"]["code_fingerprint"]
    with pytest.warns(UserWarning, match=rf"r\.json was made by other training code \(fingerprint {old}, "
                                         r"now 0123456789ab\): it is redone"):
        again = run(SMALL, out, progress=False)
    assert again["provenance"]["code_fingerprint"] == "0123456789ab"
    assert again["pretrain"]["student"]["cached"] is False                       # the old warm-up is not reused
    assert json.loads(out.read_text())["provenance"]["code_fingerprint"] == "0123456789ab"


# ---------------------------------------------------------------- row 12: grid --help

def test_grid_help_lists_only_existing_experiments(capsys):
    with pytest.raises(SystemExit) as e:
        main(["grid", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())                    # argparse wraps the help text
    assert f"one of: {', '.join(E.EXPERIMENTS + E.PROBE_EXPERIMENTS)}" in out
    for gone in ("figure3", "figure45", "timing"):
        assert gone not in out
    code, err, _ = cli(capsys, "grid", "timing", "--profile", "ci")
    assert code == 2 and "invalid choice: 'timing'" in err and all(name in err for name in E.EXPERIMENTS)
