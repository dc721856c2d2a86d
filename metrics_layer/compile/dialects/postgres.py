"""PostgreSQL: the base dialect as it is."""

from __future__ import annotations

from .base import Dialect


class Postgres(Dialect):
    name = "postgres"
