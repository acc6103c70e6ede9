"""Tests of the data layer: split rule, parsers, real dataset sizes, checksums, downloads, synthetic data."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from ibd_lite import data as D
from ibd_lite import download as DL
from ibd_lite.errors import ConfigError, DataError

# Hand-made citeulike-format file: user 1 has 5 entries but only 4 distinct items.
USERS_DAT = "6 50 10 30 10 20 40\n5 10 10 99 30 40\n6 60 30 70 20 90 15\n"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def tiny_citeulike(tmp_path, monkeypatch) -> Path:
    """A data dir whose citeulike-t/users.dat is USERS_DAT, registered with its own checksum."""
    path = tmp_path / "citeulike-t" / "users.dat"
    path.parent.mkdir()
    path.write_bytes(USERS_DAT.encode())
    entry = D.FILES["citeulike-t/users.dat"]
    monkeypatch.setitem(D.FILES, entry.path, D.RemoteFile(entry.path, entry.url, sha(USERS_DAT.encode())))
    return tmp_path


def tiny_split(min_user_interactions: int = 5) -> D.Split:
    return D.split_sequences("tiny", ["a", "b", "c"],
                             [[50, 10, 30, 10, 20, 40], [10, 10, 99, 30, 40], [60, 30, 70, 20, 90, 15]],
                             min_user_interactions)


# ------------------------------------------------------------------------------------------- split rule


def test_split_rule_exact_values():
    s = tiny_split()
    assert (s.n_users, s.n_items) == (2, 9)
    assert list(s.user_ids) == ["a", "c"]  # "b" has only 4 distinct items
    assert list(s.item_ids) == [10, 15, 20, 30, 40, 50, 60, 70, 90]  # 99 belonged to the dropped user only
    assert s.train_indptr.tolist() == [0, 3, 7]
    assert s.train_indices.tolist() == [5, 0, 3, 6, 3, 7, 2]  # sequence order, duplicates gone
    assert s.valid.tolist() == [2, 8]
    assert s.test.tolist() == [4, 1]
    assert s.train_counts.tolist() == [3, 4]
    assert (s.n_train, s.n_interactions) == (7, 11)
    assert all(t.dtype == torch.long for t in (s.train_indptr, s.train_indices, s.valid, s.test))


def test_split_min_user_interactions_4_keeps_user_with_4_distinct():
    s = tiny_split(4)
    assert list(s.user_ids) == ["a", "b", "c"]
    ids = list(s.item_ids)
    b_train = [ids[i] for i in s.train_indices[s.train_indptr[1]:s.train_indptr[2]].tolist()]
    assert b_train == [10, 99]
    assert (ids[s.valid[1]], ids[s.test[1]]) == (30, 40)


def test_users_dat_end_to_end(tiny_citeulike):
    s = D.load_split("citeulike-t", data_dir=tiny_citeulike)
    ref = tiny_split()
    assert list(s.user_ids) == [0, 2]
    for f in ("train_indptr", "train_indices", "valid", "test"):
        assert torch.equal(getattr(s, f), getattr(ref, f))
    assert list(s.item_ids) == list(ref.item_ids)


def test_derived_views():
    s = tiny_split()
    users, items = s.train_pairs()
    assert users.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert items.tolist() == [5, 0, 3, 6, 3, 7, 2]
    dense = s.train.to_dense()
    assert s.train.layout == torch.sparse_csr and dense.dtype == torch.float32
    expected = torch.zeros(2, 9)
    expected[users, items] = 1
    assert torch.equal(dense, expected)
    summ = s.summary()
    assert summ["users"] == 2 and summ["items"] == 9 and summ["interactions"] == 11 and summ["train"] == 7
    assert summ["density"] == pytest.approx(11 / 18)
    assert summ["mean_items_per_user"] == 5.5 and summ["median_items_per_user"] == 5.5


def test_train_and_exclude_masks():
    s = tiny_split()
    m = s.train_mask(torch.tensor([1, 0, 1]))
    assert m.shape == (3, 9) and m.dtype == torch.bool
    assert [torch.nonzero(r).flatten().tolist() for r in m] == [[2, 3, 6, 7], [0, 3, 5], [2, 3, 6, 7]]
    t = s.exclude_mask(torch.tensor([0, 1]), "test")  # also hides the validation item
    assert [torch.nonzero(r).flatten().tolist() for r in t] == [[0, 2, 3, 5], [2, 3, 6, 7, 8]]
    v = s.exclude_mask(torch.tensor([0, 1]), "valid")  # also hides the test item
    assert [torch.nonzero(r).flatten().tolist() for r in v] == [[0, 3, 4, 5], [1, 2, 3, 6, 7]]
    assert not t[torch.arange(2), s.test].any() and not v[torch.arange(2), s.valid].any()
    assert s.train_mask(torch.tensor([], dtype=torch.long)).shape == (0, 9)
    with pytest.raises(ConfigError, match="valid, test|test, valid"):
        s.exclude_mask(torch.tensor([0]), "train")


def test_parameter_errors():
    with pytest.raises(ConfigError) as e:
        D.load_split("movielens")
    for name in D.DATASETS + ("citeulike",):
        assert name in str(e.value)
    with pytest.raises(ConfigError, match=r"min_user_interactions.*>= 3"):
        D.load_split("synthetic", min_user_interactions=2)
    assert D.resolve_dataset("citeulike") == "citeulike-t"
    assert D.load_split("synthetic", min_user_interactions=3).n_users == 300


def test_data_dir_resolution(monkeypatch, tmp_path):
    assert D.data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("IBD_DATA_DIR", str(tmp_path / "x"))
    assert D.data_dir() == tmp_path / "x"
    monkeypatch.delenv("IBD_DATA_DIR")
    assert D.data_dir() == Path(D.__file__).resolve().parent.parent / "data"


# ------------------------------------------------------------------------------------------- real datasets

SIZES = {
    "citeulike-t": (5219, 25181, 125580),
    "citeulike-a": (5551, 16980, 204986),
    "foursquare-tky": (2166, 7037, 101829),
    "foursquare-nyc": (1083, 5135, 36140),
}


@pytest.mark.parametrize("name", list(SIZES))
def test_real_dataset_sizes(name, data_dir):
    s = D.load_split(name, data_dir=data_dir)
    assert (s.n_users, s.n_items, s.n_interactions) == SIZES[name]
    users, items = s.train_pairs()
    assert not (items == s.valid[users]).any() and not (items == s.test[users]).any()
    assert (s.valid != s.test).all() and (s.train_counts >= 3).all()
    assert np.all(np.diff(s.item_ids) > 0) and len(s.user_ids) == s.n_users
    assert D.load_split(name, data_dir=data_dir) is s  # cached in-process


def test_real_dataset_details(data_dir):
    assert D.load_split("citeulike", data_dir=data_dir) is D.load_split("citeulike-t", data_dir=data_dir)
    tky = D.load_split("foursquare-tky", data_dir=data_dir)
    assert np.all(np.diff(tky.user_ids) > 0) and tky.user_ids[-1] == 2172  # users 0..2172, 7 dropped
    nyc = D.load_split("foursquare-nyc", data_dir=data_dir)
    assert list(nyc.user_ids) == list(range(1, 1084))
    start = time.perf_counter()
    D._load_split_cached.__wrapped__("citeulike-t", str(data_dir.resolve()), 5, 0)  # uncached parse
    assert time.perf_counter() - start < 2.0


def test_download_end_to_end_from_served_bytes(data_dir, tmp_path, monkeypatch):
    """An empty data dir is filled through the (simulated) download and gives the same split."""
    by_url = {f.url: data_dir / f.path for f in D.FILES.values()}
    monkeypatch.setattr(DL, "urlopen", lambda url: io.BytesIO(by_url[url].read_bytes()))
    s = D.load_split("foursquare-nyc", data_dir=tmp_path)
    assert (s.n_users, s.n_items, s.n_interactions) == SIZES["foursquare-nyc"]
    assert sorted(p.name for p in (tmp_path / "stan-NYC").iterdir()) == ["NYC.npy"]


# ------------------------------------------------------------------------------------------- parsers


def test_users_dat_errors(tmp_path):
    p = tmp_path / "users.dat"
    p.write_text("3 1 2 3\n4 1 2\n")
    with pytest.raises(DataError, match=r"users.dat.*line 2 announces 4 items but holds 2.*delete"):
        D.parse_users_dat(p)
    p.write_text("2 1 x\n")
    with pytest.raises(DataError, match="non-integer"):
        D.parse_users_dat(p)


def write_pickle(path: Path, obj) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def test_restricted_unpickler_refuses_globals(tmp_path):
    for i, evil in enumerate([os.system, OrderedDict(a=1), Path("x")]):
        p = write_pickle(tmp_path / f"evil{i}.pkl", evil)
        with pytest.raises(DataError, match=rf"refusing to load global .* from .*evil{i}\.pkl"):
            D.load_pickle(p)
    p = write_pickle(tmp_path / "ok.pkl", [{0: [[1, 2], [3]]}, {0: 4, "s": (1.5, None, b"x", True)}])
    assert D.load_pickle(p) == [{0: [[1, 2], [3]]}, {0: 4, "s": (1.5, None, b"x", True)}]
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="bad.pkl.*not a valid pickle"):
        D.load_pickle(tmp_path / "bad.pkl")


def test_dchl_sequences(tmp_path):
    train = write_pickle(tmp_path / "train.pkl", [{7: [[1, 2], [2, 3]], 3: [[9]]}, {7: 2, 3: 9}])
    test = write_pickle(tmp_path / "test.pkl", [{3: [[8, 9]], 7: [[4]], 5: [[6]]}, {7: 5, 3: 1, 5: 6}])
    user_ids, rows, items = D.parse_dchl(train, test)
    assert list(user_ids) == [3, 5, 7]  # union, sorted
    seqs = [items[rows == r].tolist() for r in range(3)]
    assert seqs == [[9, 8, 9, 1], [6, 6], [1, 2, 2, 3, 4, 5]]  # train label ignored, test label last
    write_pickle(train, {"not": "a list"})
    with pytest.raises(DataError, match="train.pkl"):
        D.parse_dchl(train, test)


def test_stan_npy_stable_time_order(tmp_path):
    arr = np.array([[2, 10, 5], [1, 20, 9], [2, 11, 1], [1, 21, 9], [1, 22, 3], [2, 12, 5]], dtype=np.int32)
    np.save(tmp_path / "a.npy", arr)
    user_ids, rows, items = D.parse_stan_npy(tmp_path / "a.npy")
    assert list(user_ids) == [1, 2]
    assert [items[rows == r].tolist() for r in range(2)] == [[22, 20, 21], [11, 10, 12]]  # ties keep file order
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy"):
        D.parse_stan_npy(tmp_path / "obj.npy")


# ------------------------------------------------------------------------------------------- checksums and downloads

URL = "https://example.invalid/pinned/users.dat"


def test_checksum_mismatch_refuses_file(tiny_citeulike):
    path = tiny_citeulike / "citeulike-t" / "users.dat"
    path.write_bytes(USERS_DAT.encode() + b"1 5\n")  # tampered
    expected = D.FILES["citeulike-t/users.dat"].sha256
    with pytest.raises(DataError) as e:
        D.load_split("citeulike-t", data_dir=tiny_citeulike)
    msg = str(e.value)
    assert expected in msg and D.FILES["citeulike-t/users.dat"].url in msg and str(path) in msg
    assert sha(path.read_bytes()) in msg and "delete" in msg and "IBD_DATA_DIR" in msg


def test_verification_cache_notices_changes(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"good")
    assert DL.ensure_file(p, URL, sha(b"good")) == p
    assert DL.ensure_file(p, URL, sha(b"good")) == p  # cached
    p.write_bytes(b"evil!")  # new size and mtime -> verified again
    with pytest.raises(DataError, match="checksum mismatch"):
        DL.ensure_file(p, URL, sha(b"good"))


def test_simulated_download_success(tmp_path, monkeypatch):
    payload = os.urandom(3 * DL.CHUNK + 17)  # several chunks
    calls = []
    monkeypatch.setattr(DL, "urlopen", lambda url: calls.append(url) or io.BytesIO(payload))
    dest = tmp_path / "sub" / "file.bin"
    assert DL.ensure_file(dest, URL, sha(payload)) == dest
    assert dest.read_bytes() == payload and calls == [URL]
    assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]  # no temp file left
    DL.ensure_file(dest, URL, sha(payload))
    assert calls == [URL]  # present and verified: no second download


class FailingResponse(io.BytesIO):
    """Serves one chunk, then the connection drops."""

    def read(self, n=-1):
        if self.tell() > 0:
            raise ConnectionResetError("connection reset by peer")
        return super().read(n)


def test_simulated_download_failure_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(DL, "urlopen", lambda url: FailingResponse(b"x" * (2 * DL.CHUNK)))
    dest = tmp_path / "file.bin"
    with pytest.raises(DataError) as e:
        DL.ensure_file(dest, URL, "ab" * 32)
    msg = str(e.value)
    assert URL in msg and str(dest) in msg and "ab" * 32 in msg and "IBD_DATA_DIR" in msg
    assert list(tmp_path.iterdir()) == []

    def refuse(url):
        raise OSError("network is unreachable")

    with pytest.raises(DataError, match="network is unreachable"):
        DL.ensure_file(dest, URL, "ab" * 32, opener=refuse)
    assert list(tmp_path.iterdir()) == []


def test_downloaded_bytes_with_wrong_checksum_are_discarded(tmp_path):
    dest = tmp_path / "file.bin"
    with pytest.raises(DataError, match=rf"expected {'cd' * 32}"):
        DL.ensure_file(dest, URL, "cd" * 32, opener=lambda url: io.BytesIO(b"other bytes"))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_seeded():
    a, b, c = D.synthetic_sequences(0), D.synthetic_sequences(0), D.synthetic_sequences(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[2], c[2])
    start = time.perf_counter()
    s0 = D._load_split_cached.__wrapped__("synthetic", "", 5, 7)
    assert time.perf_counter() - start < 1.0
    s1 = D.load_split("synthetic", seed=7)
    assert torch.equal(s0.train_indices, s1.train_indices) and torch.equal(s0.test, s1.test)
    assert D.load_split("synthetic", seed=7) is s1
    assert not torch.equal(D.load_split("synthetic", seed=8).test, s1.test)


def test_synthetic_split_sane():
    s = D.load_split("synthetic", seed=0)
    assert s.n_users == 300 and 300 <= s.n_items <= 400
    assert (s.train_counts >= 1).all() and (s.train_counts + 2 >= 8).all() and (s.train_counts + 2 <= 40).all()
    assert (s.valid != s.test).all()
    users, items = s.train_pairs()
    assert not (items == s.valid[users]).any() and not (items == s.test[users]).any()


def test_synthetic_has_structure():
    """Item co-occurrence on train finds the validation item far more often than random ranking."""
    s = D.load_split("synthetic", seed=0)
    x = s.train.to_dense()
    users = torch.arange(s.n_users)
    excl = s.exclude_mask(users, "valid")
    scores = (x @ (x.T @ x)).masked_fill(excl, float("-inf"))
    rank = (scores >= scores[users, s.valid][:, None]).sum(1) - 1  # ties count against the target
    hit = (rank < 20).double().mean().item()
    random_hit = (20 / (s.n_items - excl.sum(1)).double()).mean().item()
    assert hit > 2.5 * random_hit
