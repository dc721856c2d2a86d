"""YAML reading that remembers where every mapping and value came from (file:line)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Location:
    file: str
    line: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class Node(dict):
    """A YAML mapping that knows its own location and the location of each key."""

    location: Location
    key_locations: dict[str, Location]

    def at(self, key: str) -> Location:
        return self.key_locations.get(key, self.location)


class Seq(list):
    """A YAML sequence that knows its location and each item's location."""

    location: Location
    item_locations: list[Location]


class YamlSyntaxError(Exception):
    def __init__(self, location: Location, message: str):
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


def _convert(node: yaml.Node, file: str):
    location = Location(file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result = Node()
        result.location = location
        result.key_locations = {}
        for key_node, value_node in node.value:
            key = _convert(key_node, file)
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                raise YamlSyntaxError(
                    Location(file, key_node.start_mark.line + 1), f"duplicate key {key!r} in one mapping"
                )
            result[key] = _convert(value_node, file)
            result.key_locations[key] = Location(file, key_node.start_mark.line + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        result = Seq(_convert(item, file) for item in node.value)
        result.location = location
        result.item_locations = [Location(file, item.start_mark.line + 1) for item in node.value]
        return result
    return _SCALARS.construct_object(node, deep=True)


# A loader used only to turn scalar nodes into Python values with YAML's safe rules.
_SCALARS = yaml.SafeLoader("")


def load_yaml_file(path: Path, display_name: str) -> Node | None:
    """Parse one YAML file into Nodes. Raises YamlSyntaxError with file:line on bad YAML."""
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlSyntaxError(Location(display_name, line), f"invalid YAML: {e.problem or e}") from None
    if root is None:
        return None
    return _convert(root, display_name)
