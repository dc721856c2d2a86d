"""SemanticQuery -> SQL, built as sqlglot expressions and rendered per dialect."""

from .compiler import Compiled, compile_query, explain_query
from .routing import Route
from .dialects import DIALECTS

__all__ = ["DIALECTS", "Compiled", "Route", "compile_query", "explain_query"]
