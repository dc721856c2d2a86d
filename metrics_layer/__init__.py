"""metrics-layer: a semantic metrics layer served over PostgreSQL wire, GraphQL and REST."""

__version__ = "0.1.0"
