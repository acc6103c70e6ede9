"""Datasets and the leave-one-out split (SPEC section 1): parse, de-duplicate, filter, split, re-index.

`load_split` caches its result per process and returns the same `Split` object for the same
arguments: callers must treat a Split and its tensors as read-only (copy before changing them).
"""

from __future__ import annotations

import functools
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .download import ensure_file
from .sparse import csr_gather
from .errors import ConfigError, DataError, choice_error

__all__ = [
    "DATASETS", "ALIASES", "FILES", "DATASET_FILES", "RemoteFile", "Split",
    "resolve_dataset", "data_dir", "load_split", "split_sequences", "synthetic_sequences",
]

DATASETS: tuple[str, ...] = ("citeulike-t", "citeulike-a", "foursquare-tky", "foursquare-nyc", "synthetic")
ALIASES: dict[str, str] = {"citeulike": "citeulike-t"}
MIN_USER_INTERACTIONS = 3  # one train, one validation and one test item at least


@dataclass(frozen=True)
class RemoteFile:
    """A pinned upstream file: where it lives in the data dir, where it comes from, and its checksum."""

    path: str
    url: str
    sha256: str


_GH = "https://raw.githubusercontent.com"
_CITE_T = f"{_GH}/js05212/citeulike-t/4f103c6ea0fe407b23be230837b65517e613c34a"
_CITE_A = f"{_GH}/js05212/citeulike-a/91b603922d7f2d3db18071d4798bf78c9c5d1680"
_DCHL = f"{_GH}/icmpnorequest/SIGIR2024_DCHL/307cadf4fca7d49d71c14ebcb535da7953a51439"
_STAN = f"{_GH}/yingtaoluo/Spatial-Temporal-Attention-Network-for-POI-Recommendation/8b82f2840e7f435a25398e1d42a835fc4129a4e2"

FILES: dict[str, RemoteFile] = {f.path: f for f in (
    RemoteFile("citeulike-t/users.dat", f"{_CITE_T}/users.dat",
               "02d5d429b2c0362e0ed79f6ef204666b4092563d21493abf4dfb521e8a7078bf"),
    RemoteFile("citeulike-t/README.md", f"{_CITE_T}/README.md",
               "95f3adeeb88ad36bb689b9945db95759784f77cf15440324a602a62f783b3453"),
    RemoteFile("citeulike-a/users.dat", f"{_CITE_A}/users.dat",
               "53211d82c14ff261e595634d285ed9fbf8049cf81dcb751d924d695b9612a02c"),
    RemoteFile("citeulike-a/README.md", f"{_CITE_A}/README.md",
               "733c83b5a7dfc2183a9fbbc085c2dc4d8b07f2e74898f3f996dc9ce2cf201259"),
    RemoteFile("dchl-TKY/train_poi_zero.txt", f"{_DCHL}/datasets/TKY/train_poi_zero.txt",
               "eab018a6be77bceb6036f5885356eacc7422624f39c719ec31484ad6dcf20808"),
    RemoteFile("dchl-TKY/test_poi_zero.txt", f"{_DCHL}/datasets/TKY/test_poi_zero.txt",
               "cbc5b95c428991686fb3ac1b56baefabae82cb2fc3426485fbfc7fdd80371dea"),
    RemoteFile("dchl-TKY/LICENSE", f"{_DCHL}/LICENSE",
               "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"),
    RemoteFile("dchl-NYC/train_poi_zero.txt", f"{_DCHL}/datasets/NYC/train_poi_zero.txt",
               "17e8b2843c12a2e176a8bf19afa65e6b8ccaca3cc70d56b813a4fb22e580a191"),
    RemoteFile("dchl-NYC/test_poi_zero.txt", f"{_DCHL}/datasets/NYC/test_poi_zero.txt",
               "fa70a5844e7942ea875365b0f1f17aa685a4cd076a150063b03d6ecacbf5520e"),
    RemoteFile("dchl-NYC/LICENSE", f"{_DCHL}/LICENSE",
               "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"),
    RemoteFile("stan-NYC/NYC.npy", f"{_STAN}/data/NYC.npy",
               "9e28b974a52d233e201ff9e82e1c076818c90b1e8f25f4ef93daaf1d7e8ddf55"),
)}

# Files each dataset parses (README/LICENSE files are registered for completeness, not needed to load).
DATASET_FILES: dict[str, tuple[str, ...]] = {
    "citeulike-t": ("citeulike-t/users.dat",),
    "citeulike-a": ("citeulike-a/users.dat",),
    "foursquare-tky": ("dchl-TKY/train_poi_zero.txt", "dchl-TKY/test_poi_zero.txt"),
    "foursquare-nyc": ("stan-NYC/NYC.npy",),
    "synthetic": (),
}


# ----------------------------------------------------------------------------------------------- Split


@dataclass(eq=False)
class Split:
    """Leave-one-out split of one dataset: CSR training items per user plus one validation and one test item."""

    name: str
    n_users: int
    n_items: int
    train_indptr: torch.Tensor
    train_indices: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    item_ids: np.ndarray
    user_ids: np.ndarray

    @functools.cached_property
    def train_counts(self) -> torch.Tensor:
        """|I_u+|: number of training items of each user."""
        return self.train_indptr.diff()

    @property
    def n_train(self) -> int:
        """Number of training interactions."""
        return int(self.train_indices.numel())

    @property
    def n_interactions(self) -> int:
        """Training plus validation plus test interactions."""
        return self.n_train + 2 * self.n_users

    @functools.cached_property
    def _train_rows(self) -> torch.Tensor:
        """User index of every training interaction (aligned with train_indices)."""
        return torch.repeat_interleave(torch.arange(self.n_users), self.train_counts)

    @functools.cached_property
    def train(self) -> torch.Tensor:
        """Training matrix as a float32 sparse CSR tensor of ones (columns sorted within each row)."""
        order = np.lexsort((self.train_indices.numpy(), self._train_rows.numpy()))
        cols = self.train_indices[torch.from_numpy(order)]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(self.train_indptr, cols, torch.ones(self.n_train, dtype=torch.float32),
                                           size=(self.n_users, self.n_items), check_invariants=True)

    def train_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(users, items) of every training interaction, grouped by user in sequence order."""
        return self._train_rows, self.train_indices

    def train_mask(self, users: Any) -> torch.Tensor:
        """Bool [len(users), n_items], True on each user's training items (for excluding them from rankings)."""
        users = torch.as_tensor(users, dtype=torch.long).reshape(-1)
        rows, cols, _ = csr_gather(self.train_indptr, self.train_indices, users)
        mask = torch.zeros(users.numel(), self.n_items, dtype=torch.bool)
        mask.index_put_((rows, cols), torch.tensor(True))
        return mask

    def exclude_mask(self, users: Any, part: str) -> torch.Tensor:
        """Items to exclude when ranking for `part`: training items plus the other held-out item."""
        if part not in ("valid", "test"):
            raise choice_error("part", part, ("valid", "test"))
        users = torch.as_tensor(users, dtype=torch.long).reshape(-1)
        mask = self.train_mask(users)
        other = self.valid if part == "test" else self.test
        mask[torch.arange(users.numel()), other[users]] = True
        return mask

    def summary(self) -> dict[str, Any]:
        """Headline statistics of the split (for logs and the book's dataset table)."""
        per_user = (self.train_counts + 2).numpy()
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "train": self.n_train,
            "density": self.n_interactions / max(self.n_users * self.n_items, 1),
            "mean_items_per_user": float(per_user.mean()) if per_user.size else 0.0,
            "median_items_per_user": float(np.median(per_user)) if per_user.size else 0.0,
        }


# ----------------------------------------------------------------------------------------------- split rule


def _first_occurrences(rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Positions (sorted) of the first occurrence of each (row, item) pair in the flattened sequences."""
    if rows.size == 0:
        return np.zeros(0, dtype=np.int64)
    span = int(items.max()) - int(items.min()) + 1
    key = rows.astype(np.int64) * span + (items.astype(np.int64) - int(items.min()))
    _, first = np.unique(key, return_index=True)
    return np.sort(first)


def _split_flat(name: str, user_ids: np.ndarray, rows: np.ndarray, items: np.ndarray,
                min_user_interactions: int) -> Split:
    """SPEC split on flattened sequences (`rows[k]` = index into user_ids of entry k, entries in sequence order)."""
    order = np.argsort(rows, kind="stable")  # group by user, keep sequence order within a user
    rows, items = rows[order], items[order]
    keep_pos = _first_occurrences(rows, items)
    rows, items = rows[keep_pos], items[keep_pos]
    counts = np.bincount(rows, minlength=len(user_ids))
    kept_users = np.flatnonzero(counts >= min_user_interactions)
    if kept_users.size == 0:
        raise ConfigError(f"no user has at least {min_user_interactions} distinct items in {name}; the largest has "
                          f"{int(counts.max()) if counts.size else 0}: lower min_user_interactions "
                          "(--min-user-interactions)")
    sel = counts[rows] >= min_user_interactions
    rows, items, counts = rows[sel], items[sel], counts[kept_users]
    item_ids, new_items = np.unique(items, return_inverse=True)
    ends = np.cumsum(counts)
    is_test = np.zeros(rows.size, dtype=bool)
    is_test[ends - 1] = True
    is_valid = np.zeros(rows.size, dtype=bool)
    is_valid[ends - 2] = True
    indptr = np.concatenate([[0], np.cumsum(counts - 2)])
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
    return Split(name=name, n_users=int(kept_users.size), n_items=int(item_ids.size),
                 train_indptr=t(indptr), train_indices=t(new_items[~(is_test | is_valid)]),
                 valid=t(new_items[is_valid]), test=t(new_items[is_test]),
                 item_ids=item_ids, user_ids=np.asarray(user_ids)[kept_users])


def split_sequences(name: str, user_ids: Sequence[Any], sequences: Sequence[Sequence[int]],
                    min_user_interactions: int = 5) -> Split:
    """Apply the SPEC split to per-user item sequences (same rule as the real datasets; for tests and new data)."""
    _check_min(min_user_interactions)
    if len(user_ids) != len(sequences):
        raise ConfigError(f"user_ids and sequences must have the same length, got {len(user_ids)} "
                          f"and {len(sequences)}")
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    items = np.fromiter((i for s in sequences for i in s), dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(np.arange(len(sequences)), lengths)
    return _split_flat(name, np.asarray(user_ids), rows, items, min_user_interactions)


def _check_min(min_user_interactions: int) -> None:
    """Reject a minimum that cannot give every user a train, a validation and a test item."""
    m = min_user_interactions
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < MIN_USER_INTERACTIONS:
        raise ConfigError(f"min_user_interactions must be an integer >= {MIN_USER_INTERACTIONS} (each user "
                          f"needs at least one training, one validation and one test item); got {m!r}")


# ----------------------------------------------------------------------------------------------- parsers

Flat = tuple[np.ndarray, np.ndarray, np.ndarray]  # (user_ids, rows, items), entries in sequence order per row


def _corrupt(path: Path, what: str) -> DataError:
    """Error for a file that does not parse, with the fix."""
    return DataError(f"cannot parse data file {path}: {what}. The file is corrupt or not the pinned version: "
                     f"delete it and download it again (see data/README.md), or point IBD_DATA_DIR at a good copy")


def _read_text(path: Path) -> str:
    """Read a text data file, turning I/O and encoding problems into DataError."""
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e


def parse_users_dat(path: Path) -> Flat:
    """CiteULike users.dat: line u = user u, a count n then n item ids, in file order."""
    lines = _read_text(path).splitlines()
    ntok = np.fromiter((len(line.split()) for line in lines), dtype=np.int64, count=len(lines))
    try:
        tokens = np.array(" ".join(lines).split(), dtype=np.int64)
    except (ValueError, OverflowError) as e:
        raise _corrupt(path, f"non-integer token ({e})") from e
    if (ntok == 0).any():
        raise _corrupt(path, f"line {int(np.argmax(ntok == 0)) + 1} is empty")
    starts = np.concatenate([[0], np.cumsum(ntok)[:-1]])
    bad = tokens[starts] != ntok - 1
    if bad.any():
        line = int(np.argmax(bad))
        raise _corrupt(path, f"line {line + 1} announces {tokens[starts[line]]} items but holds {ntok[line] - 1}")
    is_item = np.ones(tokens.size, dtype=bool)
    is_item[starts] = False
    rows = np.repeat(np.arange(len(lines)), ntok - 1)
    return np.arange(len(lines)), rows, tokens[is_item]


class _BuiltinsOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global, so a data file can hold only builtin lists/dicts/ints/str."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        """Refuse to import anything: a data file must never run code."""
        raise DataError(f"refusing to load global {module}.{name} from {self._path}: data pickles must hold "
                        f"builtin containers only; delete the file and download the pinned version again")


def load_pickle(path: Path) -> Any:
    """Load a builtins-only pickle safely (DataError on any global or corruption)."""
    try:
        with open(path, "rb") as f:
            return _BuiltinsOnlyUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... all mean a bad file
        raise _corrupt(path, f"not a valid pickle ({type(e).__name__}: {e})") from e


def _sessions_file(path: Path) -> tuple[dict, dict]:
    """Load and validate one DCHL file: [sessions: user -> list of lists of POIs, labels: user -> POI]."""
    obj = load_pickle(path)
    if not (isinstance(obj, (list, tuple)) and len(obj) == 2 and all(isinstance(d, dict) for d in obj)):
        raise _corrupt(path, "expected a pickled [sessions dict, labels dict]")
    sessions, labels = obj
    if not all(isinstance(s, list) and all(isinstance(x, list) for x in s) for s in sessions.values()):
        raise _corrupt(path, "sessions must map each user to a list of lists of POI ids")
    return sessions, labels


def parse_dchl(train_path: Path, test_path: Path) -> Flat:
    """Foursquare (DCHL): train sessions flattened, then test sessions flattened, then the test label."""
    train, _ = _sessions_file(train_path)
    test, test_labels = _sessions_file(test_path)
    users = sorted(set(train) | set(test) | set(test_labels))
    seqs = []
    for u in users:
        seq = [p for s in train.get(u, ()) for p in s] + [p for s in test.get(u, ()) for p in s]
        seqs.append(seq + ([test_labels[u]] if u in test_labels else []))
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    try:
        items = np.fromiter((p for s in seqs for p in s), dtype=np.int64, count=int(lengths.sum()))
    except (TypeError, ValueError, OverflowError) as e:
        raise _corrupt(test_path, f"POI ids must be integers ({e})") from e
    return np.asarray(users), np.repeat(np.arange(len(users)), lengths), items


def parse_stan_npy(path: Path) -> Flat:
    """STAN NYC.npy: int rows (user, POI, minutes); each user's check-ins in time order (stable sort)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # ValueError (bad header / pickled object), OSError, EOFError
        raise _corrupt(path, f"not a readable .npy array ({type(e).__name__}: {e})") from e
    if arr.ndim != 2 or arr.shape[1] != 3 or not np.issubdtype(arr.dtype, np.integer):
        raise _corrupt(path, f"expected an integer array of shape (n, 3), got {arr.dtype} {arr.shape}")
    user, poi, minutes = (arr[:, k].astype(np.int64) for k in range(3))
    order = np.argsort(minutes, kind="stable")
    order = order[np.argsort(user[order], kind="stable")]
    user_ids, rows = np.unique(user[order], return_inverse=True)
    return user_ids, rows, poi[order]


# ----------------------------------------------------------------------------------------------- synthetic

SYN_USERS, SYN_ITEMS, SYN_DIM = 300, 400, 8
SYN_MIN_LEN, SYN_MAX_LEN, SYN_TEMP = 8, 40, 0.5


def synthetic_sequences(seed: int) -> Flat:
    """Latent-factor data: each user's 8-40 distinct items drawn without replacement from softmax(u·v/T + pop)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((SYN_USERS, SYN_DIM)) / np.sqrt(SYN_DIM)
    v = rng.standard_normal((SYN_ITEMS, SYN_DIM))
    popularity = rng.standard_normal(SYN_ITEMS)
    logits = u @ v.T / SYN_TEMP + popularity
    gumbel = -np.log(-np.log(rng.random(logits.shape)))
    order = np.argsort(-(logits + gumbel), axis=1)  # Gumbel-top-k = sequential sampling without replacement
    lengths = rng.integers(SYN_MIN_LEN, SYN_MAX_LEN + 1, size=SYN_USERS)
    take = np.arange(SYN_ITEMS)[None, :] < lengths[:, None]
    rows = np.repeat(np.arange(SYN_USERS), lengths)
    return np.arange(SYN_USERS), rows, order[take].astype(np.int64)


# ----------------------------------------------------------------------------------------------- public API


def resolve_dataset(name: str) -> str:
    """Canonical dataset name (aliases resolved); unknown names raise a ConfigError listing the valid ones."""
    if name in DATASETS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise choice_error("dataset", name, DATASETS + tuple(ALIASES))


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """Data folder: the argument, else $IBD_DATA_DIR, else <repo>/data."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("IBD_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "data"


def _fetch(name: str, root: Path) -> list[Path]:
    """Make sure every file of a dataset is present and verified in `root`; return their paths."""
    return [ensure_file(root / rel, FILES[rel].url, FILES[rel].sha256) for rel in DATASET_FILES[name]]


def _parse(name: str, root: Path, seed: int) -> Flat:
    """Per-user sequences of a dataset, flattened."""
    if name == "synthetic":
        return synthetic_sequences(seed)
    paths = _fetch(name, root)
    if name in ("citeulike-t", "citeulike-a"):
        return parse_users_dat(paths[0])
    if name == "foursquare-tky":
        return parse_dchl(*paths)
    return parse_stan_npy(paths[0])


@functools.lru_cache(maxsize=32)
def _load_split_cached(name: str, root: str, min_user_interactions: int, seed: int) -> Split:
    """Parse and split once per (name, dir, min, seed) in this process."""
    user_ids, rows, items = _parse(name, Path(root), seed)
    return _split_flat(name, user_ids, rows, items, min_user_interactions)


def load_split(name: str, data_dir: str | os.PathLike | None = None, min_user_interactions: int = 5,
               seed: int = 0) -> Split:
    """Leave-one-out split of a dataset, cached per process: the returned Split is shared, do not mutate it."""
    name = resolve_dataset(name)
    _check_min(min_user_interactions)
    if name == "synthetic":
        root, seed = "", int(seed)
    else:
        root, seed = str(_data_dir(data_dir).resolve()), 0
    return _load_split_cached(name, root, int(min_user_interactions), seed)


_data_dir = data_dir  # load_split's parameter shadows the function name
