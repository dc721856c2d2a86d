"""The YAML files of a model folder, and how a path is shown in messages (no YAML parser needed)."""

from __future__ import annotations

from pathlib import Path


def yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())


def display_path(path: Path) -> str:
    """The path relative to the working folder where it lies below it (as error locations show files)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
