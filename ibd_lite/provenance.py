"""Where a result came from: commit, a fingerprint of the code that shapes training, library versions,
device and time."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(__file__).resolve().parent
# The modules whose code decides what a trained model is (SPEC §8): a result or cached warm-up made by other
# versions of them is not reused. (runner, cli, config's defaults, ... are covered by the config itself.)
# Each base model's own module counts only for runs of that model, so work on one model leaves the others'
# results valid.
TRAINING_MODULES: tuple[str, ...] = ("data.py", "models/__init__.py", "models/base.py", "sampling.py", "bd.py",
                                     "methods.py", "train.py", "metrics.py", "sparse.py")
MODEL_MODULES: dict[str, str] = {"cdae": "models/cdae.py", "neumf": "models/neumf.py", "bprmf": "models/bprmf.py"}


def _fingerprint(folder: Path = PACKAGE, names: tuple[str, ...] = TRAINING_MODULES) -> str:
    """Short sha256 over the names and source bytes of the given modules."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return h.hexdigest()[:12]


def git_commit() -> dict:
    """HEAD commit of the repository and whether the work tree had uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        # outputs (executed chapters and reproduction pages, result files) do not make the code dirty
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".",
                         ":(exclude)book/chapters", ":(exclude)book/reproduced", ":(exclude)results"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {"commit": commit or "unknown", "dirty": dirty}


def device_name(device: "torch.device | str") -> str:
    """Human-readable name of the device: the GPU's model, or the CPU's model and thread count."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = torch.get_num_threads()
    return f"{cpu} ({n} thread{'' if n == 1 else 's'})"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_average() -> float | None:
    """The machine's 1-minute load average (runnable processes), None where the OS does not report it."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


# The commit of the code this process imported: a long grid keeps running the code it started
# with even if HEAD moves on meanwhile, so that is the commit a result must name.
_LOADED = git_commit()
_FINGERPRINTS = {kind: _fingerprint(names=TRAINING_MODULES + (mod,)) for kind, mod in MODEL_MODULES.items()}
_FINGERPRINTS[None] = _fingerprint(names=TRAINING_MODULES + tuple(MODEL_MODULES.values()))


def code_fingerprint(model: str | None = None) -> str:
    """Fingerprint of the training code this process imported (computed once, at import) that shapes a run
    of base model `model`: the shared training modules plus that model's module (all models when None)."""
    try:
        return _FINGERPRINTS[model]
    except KeyError:
        raise ValueError(f"no fingerprint for model {model!r}: expected one of {sorted(MODEL_MODULES)}") from None


def provenance(device: "torch.device | str" = "cpu", model: str | None = None) -> dict:
    """A dict to store beside every result (`model`: its base model) and at the end of every chapter
    (commit = the loaded code)."""
    return {**_LOADED, "code_fingerprint": code_fingerprint(model), "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(device), "device_name": device_name(device),
            "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
