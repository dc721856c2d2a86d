"""A project: a folder with `metrics_layer.yml` (engine URL, doors, users) and YAML under `metrics/`.

With no project file the bundled demo is used: the demo YAML and a DuckDB file of synthetic
data in the user's data folder. Environment variables override the file:
METRICS_LAYER_PROJECT (folder), METRICS_LAYER_ENGINE (engine URL).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .model.errors import did_you_mean

PROJECT_FILE = "metrics_layer.yml"
PROJECT_KEYS = ("engine", "metrics", "http", "sql", "users", "api_keys", "query_timeout", "result_cache", "pool_size",
                "deploy", "reload")
DEPLOY_KEYS = ("schema", "cluster", "route", "refresh")


class ProjectError(ValueError):
    pass


@dataclass
class Project:
    root: Path
    engine_url: str
    metrics_dir: Path
    is_demo: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def query_timeout(self) -> float | None:
        value = self.settings.get("query_timeout")
        return float(value) if value else None

    @property
    def pool_size(self) -> int | None:
        """Engine connections at most (PostgreSQL-family engines; default engines.postgres_engine.DEFAULT_POOL_SIZE)."""
        value = self.settings.get("pool_size")
        return int(value) if value else None

    @property
    def reload_debounce(self) -> float:
        """Seconds the YAML folder must stay unchanged before a hot reload (`reload: {debounce: 0.5}`)."""
        value = (self.settings.get("reload") or {}).get("debounce")
        return 0.5 if value is None else float(value)

    @property
    def result_cache(self) -> bool:
        """Keep small results of embedded DuckDB queries while the data is unchanged (exact)."""
        return self.settings.get("result_cache", True) is not False


    def tls(self, door: str) -> tuple[Path, Path] | None:
        """(certificate, private key) for `door` ("http" or "sql") from `<door>: {tls_cert, tls_key}`
        (PEM files, relative to the project folder), or None: no TLS of the server's own."""
        section = self.settings.get(door)
        if not isinstance(section, dict) or (section.get("tls_cert") is None and section.get("tls_key") is None):
            return None
        cert, key = section.get("tls_cert"), section.get("tls_key")
        if not cert or not key:
            raise ProjectError(f"{door}: tls_cert and tls_key go together (PEM certificate chain and private key files)")
        paths = []
        for name, value in (("tls_cert", cert), ("tls_key", key)):
            path = (self.root / str(value)).resolve()
            if not path.is_file():
                raise ProjectError(f"{door}.{name}: file {str(path)!r} does not exist")
            paths.append(path)
        return paths[0], paths[1]

    @property
    def deploy(self) -> dict[str, Any]:
        """`deploy:` settings: schema (default metrics_layer), cluster (Materialize), route (read
        deployed materializations, default true), refresh (refresh due ones under serve, default true)."""
        return self.settings.get("deploy") or {}


def data_home() -> Path:
    base = os.environ.get("METRICS_LAYER_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "metrics-layer"
    )
    return Path(base)


def demo_metrics_dir() -> Path:
    """The demo YAML: shipped in the wheel as metrics_layer/demo_metrics, or the repo's metrics/."""
    packaged = Path(__file__).parent / "demo_metrics"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "metrics"


def demo_database() -> Path:
    return data_home() / "demo.duckdb"


def load_project(directory: str | Path | None = None) -> Project:
    """The project in `directory`, else $METRICS_LAYER_PROJECT, else the current folder, else the demo.

    A folder of YAML model files without metrics_layer.yml is a project of its own (default settings).
    """
    chosen = directory or os.environ.get("METRICS_LAYER_PROJECT")
    if chosen is None and Path(PROJECT_FILE).is_file():
        chosen = "."
    engine_override = os.environ.get("METRICS_LAYER_ENGINE")
    if chosen is None:
        return Project(
            root=demo_metrics_dir().parent, engine_url=engine_override or f"duckdb:///{demo_database()}",
            metrics_dir=demo_metrics_dir(), is_demo=True,
        )
    root = Path(chosen).resolve()
    if not root.is_dir():
        raise ProjectError(f"project folder {str(chosen)!r} does not exist")
    project_file = root / PROJECT_FILE
    settings = _read_settings(project_file)
    metrics_dir = root / str(settings.get("metrics", "metrics"))
    if not metrics_dir.is_dir():
        if project_file.is_file():
            raise ProjectError(f"{project_file}: metrics folder {str(metrics_dir)!r} does not exist")
        if not _holds_yaml(root):
            raise ProjectError(
                f"{root} is not a project: it has no {PROJECT_FILE}, no metrics/ folder and no .yml model files; "
                f"pass the folder that holds {PROJECT_FILE} (or metrics/), or a folder of YAML model files")
        # The YAML folder itself was named (e.g. `validate metrics`): load it with default settings.
        metrics_dir = root
    engine_url = engine_override or settings.get("engine") or "duckdb:///:memory:"
    return Project(root=root, engine_url=str(engine_url), metrics_dir=metrics_dir, settings=settings)


def _holds_yaml(folder: Path) -> bool:
    return any(p.suffix in (".yml", ".yaml") and p.is_file() for p in folder.iterdir())


def _read_settings(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml  # only with a project file (a CLI start without one skips the parser)

    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        hint = ""
        if "mapping values are not allowed" in str(e):
            hint = '\nA value ending in ":" or holding ": " must be quoted, e.g. engine: "duckdb:///:memory:"'
        raise ProjectError(f"{path}: invalid YAML: {e}{hint}") from None
    if not isinstance(settings, dict):
        raise ProjectError(f"{path}: must be a mapping with keys: {', '.join(PROJECT_KEYS)}")
    for key in settings:
        if key not in PROJECT_KEYS:
            raise ProjectError(f"{path}: unknown key '{key}'{did_you_mean(str(key), PROJECT_KEYS, 'valid keys')}")
    deploy = settings.get("deploy")
    if deploy is not None:
        if not isinstance(deploy, dict):
            raise ProjectError(f"{path}: deploy must be a mapping with keys: {', '.join(DEPLOY_KEYS)}")
        for key in deploy:
            if key not in DEPLOY_KEYS:
                raise ProjectError(f"{path}: unknown key 'deploy.{key}'{did_you_mean(str(key), DEPLOY_KEYS, 'valid keys')}")
        for key in ("route", "refresh"):
            if not isinstance(deploy.get(key, True), bool):
                raise ProjectError(f"{path}: deploy.{key} must be true or false, got {deploy[key]!r}")
    reload = settings.get("reload")
    if reload is not None:
        if not isinstance(reload, dict) or set(reload) - {"debounce"}:
            raise ProjectError(f"{path}: reload must be a mapping with key debounce (seconds), got {reload!r}")
        debounce = reload.get("debounce")
        if debounce is not None and (isinstance(debounce, bool) or not isinstance(debounce, (int, float)) or not 0 <= debounce <= 60):
            raise ProjectError(f"{path}: reload.debounce must be a number of seconds from 0 to 60, got {debounce!r}")
    if not isinstance(settings.get("result_cache", True), bool):
        raise ProjectError(f"{path}: result_cache must be true or false, got {settings['result_cache']!r}")
    pool_size = settings.get("pool_size")
    if pool_size is not None and (isinstance(pool_size, bool) or not isinstance(pool_size, int) or not 1 <= pool_size <= 1000):
        raise ProjectError(f"{path}: pool_size must be a whole number of connections from 1 to 1000, got {pool_size!r}")
    timeout = settings.get("query_timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
        raise ProjectError(f"{path}: query_timeout must be a number of seconds (0: none), got {timeout!r}")
    return settings
