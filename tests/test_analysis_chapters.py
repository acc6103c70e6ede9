"""The measurements chapters 4 and 5 print: soft-label push per rank band, validation curves, iBD's
top-N list overlap, and paired tests with numeric bounds (hand-made cases with known answers)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ibd_lite.analysis import kth_logit, label_push, list_overlap, paired_frame, result_rows, valid_curve
from ibd_lite.codec import encode
from ibd_lite.config import make_config
from ibd_lite.data import Split
from ibd_lite.models import Recommender


class FixedScores(Recommender):
    """A recommender whose logits are a given matrix (for hand-worked cases)."""

    def __init__(self, scores: torch.Tensor):
        super().__init__(*scores.shape, dim=1)
        self.s = torch.nn.Parameter(scores.clone())

    def score_all(self, users):
        return self.s[users]

    def pair_logits(self, users, items):
        return self.s[users, items]


def _split(train: list[list[int]], n_items: int) -> Split:
    counts = torch.tensor([len(t) for t in train])
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    n = len(train)
    return Split("hand", n, n_items, indptr, torch.tensor([i for t in train for i in t], dtype=torch.long),
                 torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long), np.arange(n_items), np.arange(n))


def test_kth_logit_skips_training_items_and_caps_k():
    scores = torch.tensor([[9.0, 5.0, 7.0, 1.0, 3.0],
                           [0.0, 1.0, 2.0, 3.0, 4.0]])
    split = _split([[0], [1, 2, 3]], 5)                  # user 0 trained on its top item; user 1 has 2 unobserved
    assert kth_logit(FixedScores(scores), split, k=2, batch_users=1).tolist() == [5.0, 0.0]
    assert kth_logit(FixedScores(scores), split, k=1).tolist() == [7.0, 4.0]


def _pairs() -> pd.DataFrame:
    p = pd.DataFrame({"rank_T": [3, 40, 500, 2_000, 20_000],
                      "p_receiver": [0.50, 0.40, 0.10, 0.01, 0.01],
                      "p_giver": [0.30, 0.30, 0.20, 0.10, 0.05],
                      "target": [0.40, 0.45, 0.30, 0.21, 0.11],
                      "p_receiver_k": [0.20, 0.20, 0.20, 0.20, 0.20]})
    p.attrs["k"] = 50
    return p


def test_label_push_per_band_by_hand():
    out = label_push(_pairs())
    assert list(out.index) == ["1–50", "51–1,000", "1,001–10,000", "> 10,000"]
    assert out["pairs (%)"].tolist() == pytest.approx([40, 20, 20, 20])
    assert out["receiver σ(s)"].tolist() == pytest.approx([0.45, 0.10, 0.01, 0.01])
    assert out["giver σ(s), τ = 1"].tolist() == pytest.approx([0.30, 0.20, 0.10, 0.05])
    assert out["soft label"].tolist() == pytest.approx([0.425, 0.30, 0.21, 0.11])
    assert out["label above (%)"].tolist() == pytest.approx([50, 100, 100, 100])   # 0.40 < 0.50 is pushed down
    assert out["mean push"].tolist() == pytest.approx([-0.025, 0.20, 0.20, 0.10])
    up = np.array([0.05, 0.20, 0.20, 0.10])                                      # 0.40 − 0.50 pushes nothing up
    assert out["upward push (%)"].tolist() == pytest.approx(list(100 * up / up.sum()))
    assert out["label above #50 (%)"].tolist() == pytest.approx([100, 100, 100, 0])


def test_label_push_leaves_out_empty_bands_and_works_without_the_new_columns():
    p = _pairs().iloc[:3].drop(columns=["p_giver", "p_receiver_k"])
    out = label_push(p)
    assert list(out.index) == ["1–50", "51–1,000"]
    assert out["pairs (%)"].sum() == pytest.approx(100)
    assert "giver σ(s), τ = 1" not in out and not any(c.startswith("label above #") for c in out)


def test_valid_curve_starts_at_the_warm_up_and_skips_warm_up_epochs():
    result = {"pretrain": {"teacher": {"epochs_run": 30, "valid_best": {"N@50": 0.10}}},
              "history": [{"phase": "pretrain teacher", "epoch": 20, "valid": {"teacher": {"N@50": 0.09}}},
                          {"phase": "bd", "epoch": 35},
                          {"phase": "bd", "epoch": 40, "valid": {"teacher": {"N@50": 0.08},
                                                                 "student": {"N@50": 0.05}}},
                          {"phase": "bd", "epoch": 50, "valid": {"student": {"N@50": 0.06}}},
                          {"phase": "bd", "epoch": 60, "valid": {"teacher": {"N@50": 0.11}}}]}
    c = valid_curve(result, "teacher")
    assert c["epoch"].tolist() == [0, 10, 30] and c["N@50"].tolist() == [0.10, 0.08, 0.11]


def test_list_overlap_shares_of_n():
    result = {"config": {"top_n": 4}, "dataset": {"items": 10},
              "rounds": [{"round": 0, "overlap@N": 0.5},
                         {"round": 1, "overlap@N": 0.75, "list_stability_T": encode([4, 2]),
                          "list_stability_S": encode([1, 0])}]}
    out = list_overlap(result).set_index(["round", "measure"])["share"]
    assert out[(0, "teacher–student overlap")] == 0.5 and len(out) == 4
    assert out[(1, "teacher list kept")] == pytest.approx(0.75)       # (4 + 2) / 2 users / N = 4
    assert out[(1, "student list kept")] == pytest.approx(0.125)
    small = dict(result, dataset={"items": 2})                         # N is capped at the number of items
    assert list_overlap(small).set_index(["round", "measure"])["share"][(1, "student list kept")] == 0.25


def _result(method: str, seed: int, ranks: np.ndarray) -> dict:
    c = make_config(profile="ci", method=method, seed=seed, device="cpu").to_dict()
    model = {"test": {}, "ranks": {"test": encode(ranks), "valid": encode(ranks)}}
    return {"config": c, "models": {"teacher": model, "student": model}}


def test_paired_frame_on_a_known_difference(tmp_path):
    a_ranks = np.array([0] * 20 + [100] * 20)             # H@50: half the users hit
    b_ranks = np.zeros(40, dtype=int)                     # every user hits
    rows = result_rows(tmp_path, {"A": ([_result("bd", s, a_ranks) for s in (1, 0)], "teacher"),
                                  "B": ([_result("ibd", s, b_ranks) for s in (0, 1)], "student")})
    assert [r.config["seed"] for r, _ in rows["A"]] == [0, 1] and rows["B"][0][1] == "student"
    assert rows["A"][0][0].path.parent == tmp_path
    f = paired_frame(rows, [("A", "B"), ("A", "A")], metrics=("H@50", "H@100"), n_boot=500).set_index(
        ["B vs A", "metric"])
    hit = f.loc[("B vs A", "H@50")]
    assert (hit["A"], hit["B"], hit["B − A"], hit["change %"]) == pytest.approx((0.5, 1.0, 0.5, 100.0))
    assert 0 < hit["lo"] <= 0.5 <= hit["hi"] < 1 and hit["verdict"] == "ahead" and hit["seeds"] == 2
    assert hit["lo %"] == pytest.approx(200 * hit["lo"]) and hit["hi %"] == pytest.approx(200 * hit["hi"])
    at100 = f.loc[("B vs A", "H@100")]                     # rank 100 is outside the top 100 too
    assert at100["B − A"] == pytest.approx(0.5)
    same = f.loc[("A vs A", "H@50")]
    assert (same["B − A"], same["lo"], same["hi"], same["verdict"]) == (0.0, 0.0, 0.0, "n.d.")


def test_paired_frame_change_is_undefined_when_a_scores_zero(tmp_path):
    rows = result_rows(tmp_path, {"A": ([_result("bd", 0, np.full(10, 500))], "teacher"),
                                  "B": ([_result("bd", 0, np.zeros(10, dtype=int))], "teacher")})
    f = paired_frame(rows, [("A", "B")], n_boot=100)
    assert f.loc[0, "B − A"] == 1.0 and math.isnan(f.loc[0, "change %"])


def test_paired_sentence_words_follow_the_interval():
    from ibd_lite.report import sentence as paired_sentence

    t = {"verdict": "behind", "change %": -2.0, "metric": "H@50", "lo": -0.004, "hi": -0.001}
    assert paired_sentence(t, "BD") == "behind BD (-2.0 % H@50, 95% CI of the difference [-0.0040, -0.0010])"
    assert paired_sentence(dict(t, verdict="n.d.", hi=0.001), "BD").startswith("not distinguishable from BD (")
    assert paired_sentence(dict(t, verdict="ahead", **{"change %": float("nan")}), "A").startswith(
        "ahead of A (change undefined H@50")
