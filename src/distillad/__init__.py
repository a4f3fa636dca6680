"""distillad: unsupervised anomaly detection and localisation by teacher–student distillation."""

__version__ = "0.2.0"

from .registry import create_model, list_models  # noqa: E402
from . import models  # noqa: E402,F401  (each method file registers itself, timm's way)

__all__ = ["create_model", "list_models", "__version__"]
