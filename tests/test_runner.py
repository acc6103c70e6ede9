"""runner.run: the result JSON (atomic write, contents), resuming finished runs, the checkpoint cache."""

from __future__ import annotations

import json

import pytest
import torch

from ibd_lite import methods, runner
from ibd_lite.config import make_config
from ibd_lite.errors import ConfigError
from ibd_lite.provenance import usable_cores
from ibd_lite.runner import load_result, run, write_json

SMALL = dict(profile="ci", model="cdae", method="student", device="cpu", pretrain_epochs=2, epochs=2,
             eval_every=2)


def forbid_training(monkeypatch):
    """Make any actual run fail loudly."""
    def boom(*a, **kw):
        raise AssertionError("the run was redone")

    for name in ("run_alone", "run_rd", "run_cd", "run_bd", "load_split"):
        monkeypatch.setattr(runner, name, boom)
        if hasattr(methods, name):
            monkeypatch.setattr(methods, name, boom)


def test_run_writes_result_json(tmp_path):
    out = tmp_path / "sub" / "r.json"
    res = run(SMALL, out, progress=False, cache=False)
    assert out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json", "r.json.lock"]   # no temporary file left
    stored = json.loads(out.read_text())
    assert stored == json.loads(json.dumps(res))
    for key in ("config", "history", "timing", "provenance", "models", "dataset"):
        assert key in stored
    assert stored["config"] == make_config(**SMALL).to_dict()
    assert stored["config"]["dataset"] == "synthetic"
    assert stored["dataset"]["users"] == 300
    t = stored["timing"]
    assert t["total_s"] > 0
    # CPU seconds and the machine's load are recorded, so that Table 7 tells idle timings from shared ones
    assert 0 < t["cpu_s"] <= t["total_s"] * t["threads"] * 1.05 + 0.05
    assert t["threads"] == torch.get_num_threads() and t["cores"] == usable_cores() >= 1
    assert len(t["load"]) == 2 and all(x is None or x >= 0 for x in t["load"])
    assert {"commit", "torch", "python", "device", "time_utc"} <= set(stored["provenance"])
    assert stored["history"] and all("loss" in h for h in stored["history"])
    assert set(stored["models"]) == {"student"}


def test_finished_result_is_not_redone(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    first = run(SMALL, out, progress=False, cache=False)
    forbid_training(monkeypatch)
    again = run(SMALL, out, progress=False, cache=False)
    assert again == json.loads(json.dumps(first))
    again_cfg = run(make_config(**SMALL), out, progress=False, cache=False)     # a Config works the same
    assert again_cfg["provenance"] == again["provenance"]


def test_different_config_or_force_reruns(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    run(SMALL, out, progress=False, cache=False)
    calls = []
    real = runner.run_alone

    def spy(ctx, role):
        calls.append((role, ctx.cfg.seed))
        return real(ctx, role)

    monkeypatch.setattr(runner, "run_alone", spy)
    res = run(dict(SMALL, seed=1), out, progress=False, cache=False)
    assert calls == [("student", 1)]
    assert json.loads(out.read_text())["config"]["seed"] == 1 == res["config"]["seed"]
    run(dict(SMALL, seed=1), out, progress=False, cache=False, force=True)
    assert calls == [("student", 1), ("student", 1)]


def test_unreadable_result_file_is_redone(tmp_path):
    out = tmp_path / "r.json"
    out.write_text('{"config": ')                                         # a half-written file
    assert load_result(out) is None
    res = run(SMALL, out, progress=False, cache=False)
    assert json.loads(out.read_text())["config"] == res["config"]


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"b": object()})                                 # fails half-way through dumping
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_k_and_top_n_larger_than_item_count_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="K=100000"):
        run(SMALL, ks=(50, 100000), progress=False, cache=False)
    with pytest.raises(ConfigError, match="top_n"):
        run(SMALL, top_n=10 ** 6, progress=False, cache=False)


def test_checkpoint_cache_is_used_and_stored(cache_dir):
    a = run(SMALL, progress=False)
    assert a["pretrain"]["student"]["cached"] is False
    files = list(cache_dir.glob("*.pt"))
    assert len(files) == 1 and "student" in files[0].name
    b = run(dict(SMALL, method="rd"), progress=False)           # a different method reuses the warm-up
    assert b["pretrain"]["student"]["cached"] is True
    assert b["pretrain"]["student"]["valid_best"] == a["pretrain"]["student"]["valid_best"]


@pytest.mark.parametrize("method", ["student", "teacher"])
def test_alone_run_does_not_depend_on_the_checkpoint_cache(method, cache_dir):
    """The same config gives the same result whether its warm-up was trained now or loaded from the cache."""
    cfg = dict(SMALL, method=method)
    fresh = run(cfg, progress=False, cache=False)
    stored = run(cfg, progress=False)             # trains the warm-up and stores it
    loaded = run(cfg, progress=False)             # loads it
    assert loaded["pretrain"][method]["cached"] is True
    assert stored["models"][method]["test"] == fresh["models"][method]["test"]
    assert loaded["models"][method]["test"] == fresh["models"][method]["test"]


def test_corrupt_checkpoint_is_retrained(cache_dir):
    run(SMALL, progress=False)
    (ckpt,) = cache_dir.glob("*.pt")
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match=f"discarding warm-up cache file .*{ckpt.name}"):
        res = run(SMALL, progress=False)
    assert res["pretrain"]["student"]["cached"] is False
    assert ckpt.exists() and ckpt.stat().st_size > 100


def test_cut_offs_without_50_run_or_are_rejected_cleanly():
    """--ks 10 20 is a valid request (each K is in range): the run must finish with those metrics,
    or be refused up front with a ConfigError - never crash half-way with a KeyError."""
    try:
        res = run(dict(SMALL, ks=(10, 20)), progress=False, cache=False)
    except ConfigError as e:
        assert "ks" in str(e) or "50" in str(e)
        return
    assert set(res["models"]["student"]["test"]) == {"H@10", "N@10", "H@20", "N@20"}
