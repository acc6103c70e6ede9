"""Base recommenders (SPEC §3): CDAE, NeuMF and BPR-MF behind one interface (`base.Recommender`).

Each model lives in its own module, so that a result's code fingerprint covers only the model it trained
(`provenance.code_fingerprint(model)`): work on NeuMF does not invalidate the CDAE results.
"""

from __future__ import annotations

from ..errors import choice_error
from .base import Recommender, bpr_loss, eval_mode, pointwise_bce, rows
from .bprmf import BPRMF
from .cdae import CDAE
from .neumf import NeuMF

MODELS: tuple[str, ...] = ("cdae", "neumf", "bprmf")
ALIASES = {"bpr": "bprmf", "bpr-mf": "bprmf", "mf": "bprmf"}

# Per-model defaults from SPEC §3 and §5: negatives per positive, BD temperature τ, BD ε_t.
NEG_PER_POS = {"cdae": 5, "neumf": 4, "bprmf": 1}
BD_TAU = {"cdae": 2.0, "neumf": 5.0, "bprmf": 5.0}
BD_EPS_T = {"cdae": 1e-4, "neumf": 1e-2, "bprmf": 1e-2}


def resolve_model(name: str) -> str:
    """Canonical model name; an unknown one is a ConfigError listing the valid names."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in MODELS:
        raise choice_error("model", name, list(MODELS) + list(ALIASES))
    return key


def build_model(name: str, split, dim: int) -> Recommender:
    """Instantiate a base model for a split with hidden size / embedding dim `dim`."""
    kind = resolve_model(name)
    if kind == "cdae":
        return CDAE(split.n_users, split.n_items, dim, split.train_indptr, split.train_indices)
    if kind == "neumf":
        return NeuMF(split.n_users, split.n_items, dim)
    return BPRMF(split.n_users, split.n_items, dim)


__all__ = ["ALIASES", "BD_EPS_T", "BD_TAU", "BPRMF", "CDAE", "MODELS", "NEG_PER_POS", "NeuMF", "Recommender",
           "bpr_loss", "build_model", "eval_mode", "pointwise_bce", "resolve_model", "rows"]
