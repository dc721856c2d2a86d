"""Shared fixtures: demo data in DuckDB and in the local PostgreSQL, and projects over them."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_END = dt.datetime(2026, 3, 1)
DEMO_LEADS = 6_000
PG_URL = os.environ.get("METRICS_LAYER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_or_skip(url: str = PG_URL) -> str:
    """The PostgreSQL URL; in CI a missing server fails the test instead of skipping it."""
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=30).close()
    except psycopg.OperationalError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI and unreachable at {url}: {e}")
        pytest.skip(f"PostgreSQL unreachable at {url}: {e}")
    return url


def make_project(folder: Path, engine_url: str, extra: str = "") -> Path:
    """A project folder: metrics_layer.yml pointing at `engine_url` and a copy of the demo YAML."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "metrics", folder / "metrics", dirs_exist_ok=True)
    (folder / "metrics_layer.yml").write_text(f"engine: {engine_url}\n{extra}")
    return folder


@pytest.fixture(scope="session")
def demo_duckdb_path(tmp_path_factory) -> Path:
    from metrics_layer.demo_data import generate_duckdb

    path = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    generate_duckdb(str(path), leads=DEMO_LEADS, end=DEMO_END, progress=lambda _: None)
    return path


def readme_block(after: str) -> str:
    """The first fenced code block of README.md after the line starting with `after`."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("```", text.index("\n" + after))
    body_start = text.index("\n", start) + 1
    return text[body_start:text.index("\n```", body_start)]


@pytest.fixture(scope="session")
def demo_home_today(tmp_path_factory) -> Path:
    """A METRICS_LAYER_HOME holding the bundled demo's database as a new user gets it today
    (ending today 00:00 UTC), smaller: for running the README's examples as written."""
    from metrics_layer.demo_data import generate_duckdb

    home = tmp_path_factory.mktemp("home")
    generate_duckdb(str(home / "demo.duckdb"), leads=DEMO_LEADS, progress=lambda _: None)
    return home


def demo_env(home: Path) -> dict[str, str]:
    """The environment of a new user's shell: the demo in `home`, no project chosen."""
    env = {k: v for k, v in os.environ.items() if k not in ("METRICS_LAYER_PROJECT", "METRICS_LAYER_ENGINE")}
    return {**env, "METRICS_LAYER_HOME": str(home)}


@pytest.fixture(scope="session")
def demo_postgres_url() -> str:
    """PostgreSQL URL whose search_path is a schema holding the demo tables."""
    from metrics_layer.demo_data import generate_postgres

    url = postgres_or_skip()
    schema = f"ml_test_{os.getpid()}"
    generate_postgres(url, leads=DEMO_LEADS, end=DEMO_END, progress=lambda _: None, schema=schema)
    yield f"{url}?options=-csearch_path%3D{schema}"
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium for the browser tests: skipped when missing, except in CI, where it must be there."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is required in CI (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} not installed")
    return CHROMIUM
