"""YAML reading that remembers where every mapping and value came from (file:line)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import Location


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


class _Converter:
    """YAML nodes -> Node/Seq/scalars. An alias converts once (no exponential blow-up); an
    alias inside its own anchor (a recursive structure) is an error, not endless recursion."""

    def __init__(self, file: str):
        self.file = file
        self.done: dict[int, Any] = {}
        self.active: set[int] = set()
        self.scalars = yaml.constructor.SafeConstructor()

    def convert(self, node: yaml.Node):
        if id(node) in self.done:
            return self.done[id(node)]
        location = Location(self.file, node.start_mark.line + 1)
        if id(node) in self.active:
            raise YamlSyntaxError(location, "an alias (*name) refers to the anchor that contains it; YAML here cannot be recursive")
        self.active.add(id(node))
        result = self._convert(node, location)
        self.active.discard(id(node))
        self.done[id(node)] = result
        return result

    def _convert(self, node: yaml.Node, location: Location):
        file = self.file
        if isinstance(node, yaml.MappingNode):
            result = Node()
            result.location = location
            result.key_locations = {}
            for key_node, value_node in node.value:
                key = self.convert(key_node)
                if not isinstance(key, str):
                    key = str(key)
                if key in result:
                    raise YamlSyntaxError(
                        Location(file, key_node.start_mark.line + 1),
                        f"duplicate key {key!r} in one mapping (first at line {result.key_locations[key].line})",
                    )
                result[key] = self.convert(value_node)
                result.key_locations[key] = Location(file, key_node.start_mark.line + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            result = Seq(self.convert(item) for item in node.value)
            result.location = location
            result.item_locations = [Location(file, item.start_mark.line + 1) for item in node.value]
            return result
        try:
            return self.scalars.construct_object(node, deep=True)
        except Exception:
            # A plain scalar that only looks like a number or a YAML special ('=', '0b_') is text.
            if node.style is None and _RESOLVER.resolve(yaml.ScalarNode, node.value, (True, False)) == node.tag:
                return node.value
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise YamlSyntaxError(location, f"cannot read {node.value!r} as {tag}: remove the tag or quote the value") from None


# What usually causes PyYAML's less obvious complaints.
_SYNTAX_HINTS = (
    ("expected <block end>", "; check the indentation of this line and the ones above"),
    ("found character '\\t'", "; indent with spaces, not tabs"),
    ("mapping values are not allowed here", "; a value containing ': ' must be quoted"),
)

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<dash>- +)?(?P<key>[\w.-]+):(?P<value>[ \t]+[^#\s].*)?$")


def _over_indented(text: str, index: int) -> str | None:
    """Explain 'mapping values are not allowed here' on a `key:` line indented deeper than the
    `key: value` line above it: YAML reads the deeper line as more of that value's text."""
    lines = text.splitlines()
    here = _KEY_LINE.match(lines[index]) if index < len(lines) else None
    if here is None or here["dash"]:
        return None
    above = next((i for i in range(index - 1, -1, -1) if lines[i].strip() and not lines[i].lstrip().startswith("#")), None)
    parent = _KEY_LINE.match(lines[above]) if above is not None else None
    if parent is None or not parent["value"]:
        return None
    column = len(parent["indent"]) + len(parent["dash"] or "")  # where the key above starts
    if len(here["indent"]) <= column:
        return None
    key, other = here["key"], parent["key"]
    return (f"invalid YAML: '{key}:' is indented more than '{other}:' on line {above + 1}, so YAML reads it as "
            f"more of {other}'s value; indent '{key}:' by {column} spaces, like '{other}:'")


# Resolves the tag YAML gives an untagged plain scalar, to tell it from an explicit tag.
_RESOLVER = yaml.resolver.Resolver()


def load_yaml_file(path: Path, display_name: str) -> Node | None:
    """Parse one YAML file into Nodes. Raises YamlSyntaxError with file:line on bad YAML."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise YamlSyntaxError(Location(display_name, 1), f"cannot read the file: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise YamlSyntaxError(
            Location(display_name, line), f"the file is not UTF-8 text (byte 0x{data[e.start]:02x}); save it as UTF-8"
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        return None if root is None else _Converter(display_name).convert(root)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        message = f"invalid YAML: {e.problem or e}"
        if e.context and e.context_mark and e.problem_mark and e.context_mark.line != e.problem_mark.line:
            message += f" ({e.context} that starts at line {e.context_mark.line + 1})"  # e.g. an unclosed {
        indented = _over_indented(text, mark.line) if mark and "mapping values are not allowed here" in message else None
        if indented:
            message = indented
        else:
            message += next((hint for words, hint in _SYNTAX_HINTS if words in message), "")
        raise YamlSyntaxError(Location(display_name, line), message) from None
    except yaml.reader.ReaderError as e:  # a control character, reported by character position
        line = text[: e.position].count("\n") + 1
        raise YamlSyntaxError(
            Location(display_name, line), f"invalid YAML: control character #x{e.character:02x} is not allowed in YAML text"
        ) from None
    except yaml.YAMLError as e:
        raise YamlSyntaxError(Location(display_name, 1), f"invalid YAML: {e}") from None
    except RecursionError:
        raise YamlSyntaxError(Location(display_name, 1), "invalid YAML: nested too deeply") from None
