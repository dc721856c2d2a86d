"""A PostgreSQL wire-protocol (v3) server in front of a pluggable SQL backend.

The protocol layer knows nothing about metrics: it hands each SQL statement to a `Backend`
session (see `backend.py` for the contract) and does everything else itself.

    from metrics_layer.serve.pgwire import serve_pgwire
    server = await serve_pgwire(my_backend, port=15432, users={"analyst": "secret"})
"""

from .auth import AUTH_METHODS, scram_verifier
from .backend import Backend, BackendError, ColumnDesc, Described, Notice, Outcome, Session
from .server import BackgroundServer, PgWireServer, serve_pgwire
from .values import OID

__all__ = [
    "AUTH_METHODS",
    "Backend",
    "BackendError",
    "BackgroundServer",
    "ColumnDesc",
    "Described",
    "Notice",
    "OID",
    "Outcome",
    "PgWireServer",
    "Session",
    "scram_verifier",
    "serve_pgwire",
]
