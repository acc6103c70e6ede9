"""Command line: bad input exits with status 2 and a message naming the fix (never a traceback); a run writes --out."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ibd_lite.cli import main

BASE = ["run", "--profile", "ci", "--device", "cpu", "--no-cache", "--quiet"]


def run_cli(capsys, *extra: str) -> tuple[int, str, str]:
    try:
        code = main([*BASE, *extra])
    except SystemExit as e:           # argparse-level errors exit this way
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("flag, value, valid", [
    ("--dataset", "movielens", ["citeulike-t", "citeulike-a", "foursquare-tky", "foursquare-nyc", "synthetic"]),
    ("--model", "lightgcn", ["cdae", "neumf", "bprmf"]),
    ("--method", "kd", ["teacher", "student", "rd", "cd", "bd", "ibd"]),
    ("--profile", "fast", ["ci", "quick", "paper"]),
    ("--bd-direction", "ascending", ["paper", "released"]),
    ("--ibd-variant", "half", ["full", "no-carry"]),
])
def test_unknown_name_exits_2_listing_valid_values(capsys, flag, value, valid):
    code, out, err = run_cli(capsys, flag, value)
    assert code == 2
    assert value in err
    for v in valid:
        assert v in err
    assert "Traceback" not in err and "Traceback" not in out


@pytest.mark.parametrize("args, words", [
    (["--epochs", "0"], ["epochs"]),
    (["--pretrain-epochs", "-3"], ["pretrain_epochs"]),
    (["--ks", "50", "100000"], ["K=100000"]),
    (["--min-user-interactions", "2"], ["min_user_interactions"]),
    (["--lr", "0"], ["lr"]),
    (["--teacher-dim", "4", "--student-dim", "8"], ["student_dim", "teacher_dim"]),
])
def test_out_of_range_value_exits_2_naming_it(capsys, args, words):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    for w in words:
        assert w in err
    assert "Traceback" not in err


def test_badly_typed_value_exits_2(capsys):
    code, _, err = run_cli(capsys, "--epochs", "ten")
    assert code == 2 and "epochs" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is absent")
def test_cuda_without_cuda_exits_2(capsys):
    code = main(["run", "--profile", "ci", "--device", "cuda", "--no-cache", "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "CUDA" in err and "--device cpu" in err
    assert "Traceback" not in err


def test_unknown_grid_experiment_exits_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:                       # argparse rejects it, listing the choices
        main(["grid", "figure99", "--profile", "ci", "--device", "cpu", "--out-dir", str(tmp_path), "--quiet"])
    _, err = capsys.readouterr()
    assert e.value.code == 2 and "figure99" in err and "table" in err


def test_successful_run_writes_out_json(capsys, tmp_path):
    out = tmp_path / "res.json"
    code, stdout, _ = run_cli(capsys, "--method", "student", "--pretrain-epochs", "2", "--epochs", "2",
                              "--seed", "3", "--out", str(out))
    assert code == 0
    summary = json.loads(stdout)
    assert summary["method"] == "student" and set(summary["test"]) == {"student"}
    stored = json.loads(out.read_text())
    assert stored["config"]["seed"] == 3 and stored["config"]["pretrain_epochs"] == 2
    assert stored["config"]["profile"] == "ci" and stored["config"]["dataset"] == "synthetic"
    assert stored["models"]["student"]["test"] == summary["test"]["student"]


def test_module_entry_point_subprocess(tmp_path):
    out = tmp_path / "r.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", IBD_CACHE_DIR=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "ibd_lite", "run", "--profile", "ci", "--device", "cpu", "--method", "student",
           "--pretrain-epochs", "1", "--epochs", "1", "--no-cache", "--quiet", "--out", str(out)]
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(out.read_text())["config"]["method"] == "student"
    bad = subprocess.run([*cmd[:-2], "--model", "nope"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2
    assert "cdae" in bad.stderr and "Traceback" not in bad.stderr


def test_cut_offs_without_50_do_not_crash(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--method", "student", "--pretrain-epochs", "2", "--epochs", "2",
                           "--ks", "10", "20", "--out", str(tmp_path / "r.json"))
    assert code in (0, 2) and "Traceback" not in err
    if code == 0:
        stored = json.loads((tmp_path / "r.json").read_text())
        assert set(stored["models"]["student"]["test"]) == {"H@10", "N@10", "H@20", "N@20"}


def test_a_reader_that_stops_early_is_not_an_error(tmp_path):
    # `reproduce --list | head`: the reader may close the pipe before the list is written (`true` never reads)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = (f"{sys.executable} -m ibd_lite reproduce --profile ci --only table-citeulike-t-cdae --seeds 3 "
           f"--out-dir {tmp_path} --list | true; exit ${{PIPESTATUS[0]}}")
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
