"""A loaded SemanticModel kept on disk, so that a repeated CLI command skips YAML parsing.

The key is a hash of everything the loaded model depends on: the YAML files' names (as error
locations show them) and bytes, the package and sqlglot versions, and the size and mtime of
this package's model code (a changed dataclass must not unpickle into stale objects). Any
change gives a new key; a cache file that cannot be read is ignored and written again. Only
a model that validated is stored: a failing load raises before anything is written, so its
errors are always reported from the YAML itself.

The cache lives in the user's own data folder (METRICS_LAYER_HOME): pickle is trusted there
as the installed code is.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tempfile
from pathlib import Path

from .types import SemanticModel

# Counts what happened, for tests and `--verbose`-style diagnostics: hits, misses, unreadable.
stats = {"hit": 0, "miss": 0, "unreadable": 0}

_KEEP = 16  # cache files kept per folder (oldest removed)


def load_model_cached(directory: str | Path, cache_dir: str | Path) -> SemanticModel:
    """load_model(directory), from `cache_dir` when the same files were loaded before."""
    from .files import display_path, yaml_files

    directory = Path(directory)
    files = yaml_files(directory) if directory.is_dir() else []
    if not files:
        return _load(directory)  # its own clear error
    path = Path(cache_dir) / f"model-{_key(files, display_path):s}.pickle"
    try:
        with open(path, "rb") as f:
            model = pickle.load(f)
        if isinstance(model, SemanticModel):
            stats["hit"] += 1
            return model
        stats["unreadable"] += 1
    except FileNotFoundError:
        pass
    except Exception:  # truncated, corrupt or from other code: load again and rewrite
        stats["unreadable"] += 1
    stats["miss"] += 1
    model = _load(directory)
    _store(path, model)
    return model


def _load(directory: Path) -> SemanticModel:
    from .load import load_model  # the YAML parser and validation: only on a miss

    return load_model(directory)


def _key(files: list[Path], display) -> str:
    from .. import __version__
    import sqlglot

    digest = hashlib.sha256()
    digest.update(f"{__version__}\0{sqlglot.__version__}\0{sys.version}\0".encode())
    for code in sorted(Path(__file__).parent.glob("*.py")):
        st = code.stat()
        digest.update(f"{code.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    for file in files:
        data = file.read_bytes()
        digest.update(f"{display(file)}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:32]


def _store(path: Path, model: SemanticModel) -> None:
    """Write atomically (a reader never sees half a file); a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".model-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        old = sorted(path.parent.glob("model-*.pickle"), key=lambda p: p.stat().st_mtime)[:-_KEEP]
        for stale in old:
            stale.unlink(missing_ok=True)
    except (OSError, pickle.PicklingError, TypeError, AttributeError, RecursionError):
        pass
