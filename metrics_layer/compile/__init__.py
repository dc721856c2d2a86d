"""SemanticQuery -> SQL, built as sqlglot expressions and rendered per dialect."""

from .compiler import compile_query
from .dialects import DIALECTS

__all__ = ["DIALECTS", "compile_query"]
