"""Where a result came from: commit, library versions, device and time."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def git_commit() -> dict:
    """HEAD commit of the repository and whether the work tree had uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        # outputs (executed chapters, result files) do not make the code dirty
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".",
                         ":(exclude)book/chapters", ":(exclude)results"))
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
    return f"{cpu} ({torch.get_num_threads()} threads)"


# The commit of the code this process imported: a long grid keeps running the code it started
# with even if HEAD moves on meanwhile, so that is the commit a result must name.
_LOADED = git_commit()


def provenance(device: "torch.device | str" = "cpu") -> dict:
    """A dict to store beside every result and at the end of every chapter (commit = the loaded code)."""
    return {**_LOADED, "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "device_name": device_name(device),
            "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
