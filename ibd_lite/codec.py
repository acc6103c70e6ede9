"""Compact, exact storage of per-user integer arrays inside result JSON (zlib-compressed, base64).

A run keeps every user's test and validation rank per model and iBD's per-user round logs; as plain
JSON lists those are megabytes per run, encoded they are a few kilobytes and still one self-contained file.
"""

from __future__ import annotations

import base64
import math
import zlib
from typing import Any

import numpy as np
import torch


def encode(a: "np.ndarray | torch.Tensor | list") -> dict[str, Any]:
    """Integer array -> {"dtype", "shape", "z"}: int32 little-endian bytes, zlib level 9, base64."""
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"encode() stores integer arrays only, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype="<i4")
    return {"dtype": "int32", "shape": list(arr.shape), "z": base64.b64encode(zlib.compress(arr.tobytes(), 9)).decode()}


def decode(d: dict[str, Any]) -> np.ndarray:
    """Inverse of `encode` (also accepts a plain list, as older result files stored)."""
    if isinstance(d, (list, tuple)):
        return np.asarray(d, dtype=np.int64)
    raw = zlib.decompress(base64.b64decode(d["z"]))
    return np.frombuffer(raw, dtype="<i4").reshape(d["shape"]).astype(np.int64)


# ------------------------------------------------------------------ compact results (written this way)

SIG_DIGITS = 6                    # floats in a stored result's history, timing and metrics
_UNCOMPACTED = ("schema", "config", "provenance", "dataset")
_DEFAULT_GAMMA = 0.5


def round_floats(obj: Any, digits: int = SIG_DIGITS) -> Any:
    """A copy with every float rounded to `digits` significant digits (ints, strings, encodings unchanged)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [round_floats(v, digits) for v in obj]
    return obj


def compact(result: dict, digits: int = SIG_DIGITS) -> dict:
    """A result with its measured floats (history, metrics, timing, round logs) at `digits` significant
    digits; config, provenance and schema stay exact, so the file is still the same finished run. An iBD
    run of the γ sweep (Figure 6, γ other than the defaults) keeps its per-round totals but not the per-user
    round arrays, which no figure uses (they are most of a sweep's size: ~1.3 MB a run on CiteULike-t)."""
    out = {k: v if k in _UNCOMPACTED else round_floats(v, digits) for k, v in result.items()}
    c = result.get("config", {})
    if "rounds" in out and (c.get("gamma_ts"), c.get("gamma_st")) != (_DEFAULT_GAMMA, _DEFAULT_GAMMA):
        out["rounds"] = [{k: v for k, v in _without_per_user(e).items() if not k.endswith("_per_user")
                          and not k.startswith("list_stability_")} for e in out["rounds"]]
    return out


def _without_per_user(entry: dict) -> dict:
    return {k: ({kk: vv for kk, vv in v.items() if kk != "per_user"} if isinstance(v, dict) else v)
            for k, v in entry.items()}
