"""Fetch a pinned data file once, verify its SHA-256, and never leave a partial or unverified file behind."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from .errors import DataError

__all__ = ["ensure_file", "sha256_file", "urlopen", "clean_stale_tmp", "pid_alive", "CHUNK"]

CHUNK = 1 << 20
TIMEOUT_S = 60.0

# (resolved path, mtime_ns, size, expected sha256) of files already verified in this process.
_verified: set[tuple[str, int, int, str]] = set()


# This library's temporary files carry their writer's PID: `.name.<pid>.<random>.tmp` (results, probes),
# `.name.<pid>.<random>.part` (downloads), `name.tmp<pid>` (warm-up cache).
_TMP_NAMES = (re.compile(r"^\..+\.(\d+)\.[a-z0-9_]+\.(?:tmp|part)$"), re.compile(r"^.+\.tmp(\d+)$"))


def pid_alive(pid: int) -> bool:
    """Does a process with this PID exist on this machine?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2 ** 31                 # someone else's process (alive) vs. a number no PID can be
    return True


def clean_stale_tmp(folder: "str | os.PathLike") -> list[Path]:
    """Remove this library's temporary files in `folder` whose writing process is gone; return them."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = next((m for p in _TMP_NAMES if (m := p.match(entry.name))), None)
        if m is None or pid_alive(int(m.group(1))) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def urlopen(url: str) -> Any:
    """Open `url` for reading; module-level so tests can monkeypatch it to serve bytes without network."""
    return urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310 (pinned https URLs only)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so big files do not load into memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _key(path: Path, sha256: str) -> tuple[str, int, int, str]:
    """Cache key that changes whenever the file is replaced or rewritten."""
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size, sha256.lower())


def _manual_fix(dest: Path, url: str, sha256: str) -> str:
    """How to supply a file by hand, for error messages."""
    return (
        f"download {url} by hand (any machine with internet) and put it at {dest}, "
        f"or set IBD_DATA_DIR to a folder that holds it at the same relative path; "
        f"its sha256 must be {sha256}"
    )


def _verify_existing(dest: Path, url: str, sha256: str) -> Path:
    """Check an existing file against its checksum (once per process per file version)."""
    try:
        key = _key(dest, sha256)
        if key in _verified:
            return dest
        actual = sha256_file(dest)
    except OSError as e:
        raise DataError(f"cannot read data file {dest}: {e}; check its permissions, or delete it and "
                        f"let it be downloaded again from {url}") from e
    if actual != sha256.lower():
        raise DataError(
            f"checksum mismatch for {dest}: expected sha256 {sha256}, got {actual}. The file is corrupt or "
            f"a different version than the one pinned ({url}). Fix: delete {dest} so it is downloaded again, "
            f"or {_manual_fix(dest, url, sha256)}"
        )
    _verified.add(key)
    return dest


def _content_length(resp: Any) -> int | None:
    """Total size announced by the server, if any (for the progress bar)."""
    n = getattr(resp, "length", None)
    if n is None:
        headers = getattr(resp, "headers", None)
        n = headers.get("Content-Length") if headers is not None else None
    try:
        return int(n) if n is not None else None
    except (TypeError, ValueError):
        return None


def _fetch_to(tmp: Any, url: str, desc: str, opener: Callable[[str], Any]) -> str:
    """Stream `url` into the open temp file `tmp` with a progress bar; return the sha256 of what was written."""
    h = hashlib.sha256()
    with opener(url) as resp, tqdm(total=_content_length(resp), unit="B", unit_scale=True,
                                   desc=desc, leave=False) as bar:
        for block in iter(lambda: resp.read(CHUNK), b""):
            tmp.write(block)
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def _download(dest: Path, url: str, sha256: str, opener: Callable[[str], Any]) -> Path:
    """Download into a temp file beside `dest`, verify, then atomically move it into place."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(dest.parent)            # partial downloads of killed processes
        tmp = tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.{os.getpid()}.", suffix=".part",
                                          delete=False)
    except OSError as e:
        raise DataError(f"cannot create {dest.parent} to download {dest.name} into: {e}; "
                        f"{_manual_fix(dest, url, sha256)}") from e
    tmp_path = Path(tmp.name)
    try:
        with tmp:
            try:
                actual = _fetch_to(tmp, url, dest.name, opener)
            except Exception as e:  # any network/HTTP/IO failure becomes a DataError with the fix
                raise DataError(f"data file {dest} is missing and downloading it from {url} failed "
                                f"({type(e).__name__}: {e}); {_manual_fix(dest, url, sha256)}") from e
        if actual != sha256.lower():
            raise DataError(f"downloaded {url} but its sha256 is {actual}, expected {sha256}; the file was "
                            f"discarded. Upstream may have changed: {_manual_fix(dest, url, sha256)}")
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)
    _verified.add(_key(dest, sha256))
    return dest


def ensure_file(dest: Path, url: str, sha256: str, opener: Callable[[str], Any] | None = None) -> Path:
    """Return `dest` once it holds the pinned file: verify it if present, else download it from `url`."""
    dest = Path(dest)
    if dest.exists():
        return _verify_existing(dest, url, sha256)
    return _download(dest, url, sha256, opener if opener is not None else urlopen)
