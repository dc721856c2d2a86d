"""YAML -> validated SemanticModel."""

from .errors import ModelError, ValidationFailed
from .types import SemanticModel, parse_interval


def __getattr__(name: str):
    # The loader (YAML parser, validation) only when asked for: a command that reads the model
    # from its on-disk cache (model/cache.py) never imports it.
    if name == "load_model":
        from .load import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["ModelError", "SemanticModel", "ValidationFailed", "load_model", "parse_interval"]
