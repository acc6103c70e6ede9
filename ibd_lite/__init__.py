"""ibd_lite: knowledge distillation for top-K recommendation (teachers, students, RD, CD, BD, iBD)."""

from .config import METHODS, PROFILES, Config, make_config
from .data import DATASETS, Split, load_split
from .errors import ConfigError, DataError, IBDError
from .metrics import evaluate, topk_metrics
from .models import MODELS, build_model
from .runner import run

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "DATASETS", "DataError", "IBDError", "METHODS", "MODELS", "PROFILES",
           "Split", "build_model", "evaluate", "load_split", "make_config", "run", "topk_metrics"]
