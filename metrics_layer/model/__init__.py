"""YAML -> validated SemanticModel."""

from .errors import ModelError, ValidationFailed
from .load import load_model, parse_interval
from .types import SemanticModel

__all__ = ["ModelError", "SemanticModel", "ValidationFailed", "load_model", "parse_interval"]
