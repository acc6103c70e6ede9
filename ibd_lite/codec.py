"""Compact, exact storage of per-user integer arrays inside result JSON (zlib-compressed, base64).

A run keeps every user's test and validation rank per model and iBD's per-user round logs; as plain
JSON lists those are megabytes per run, encoded they are a few kilobytes and still one self-contained file.
"""

from __future__ import annotations

import base64
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
