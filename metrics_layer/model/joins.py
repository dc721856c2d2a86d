"""Join paths between models, following shared entities without fanning rows out.

A step from model A to model B through entity e is safe when B holds at most one row per
e (B's entity is primary/unique, or B is deduped on it): every row of A then meets at most
one row of B, so sums and counts over A stay exact. Any other step would repeat A's rows
and is refused with a message that names the path.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class JoinStep:
    left: str  # model already in the query
    right: str  # model joined in
    entity: str


class JoinError(ValueError):
    pass


def _neighbours(models: dict, name: str):
    model = models[name]
    for other_name, other in models.items():
        if other_name == name:
            continue
        for entity in model.entities:
            if entity in other.entities:
                yield other_name, entity, other.unique_on(entity)


def join_path(models: dict, start: str, target: str) -> list[JoinStep]:
    """Shortest safe path of joins from `start` to `target`; JoinError says why there is none."""
    if start == target:
        return []
    previous: dict[str, JoinStep | None] = {start: None}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        for other, entity, safe in _neighbours(models, current):
            if safe and other not in previous:
                previous[other] = JoinStep(current, other, entity)
                if other == target:
                    return _unwind(previous, target)
                queue.append(other)
    raise JoinError(_explain_unreachable(models, start, target, previous))


def _unwind(previous: dict, target: str) -> list[JoinStep]:
    steps = []
    node = target
    while previous[node] is not None:
        step = previous[node]
        steps.append(step)
        node = step.left
    return steps[::-1]


def _explain_unreachable(models: dict, start: str, target: str, reached: dict) -> str:
    # Find a fan-out step that would have reached the target, to name the path.
    for node in reached:
        for other, entity, safe in _neighbours(models, node):
            if other == target and not safe:
                path = " -> ".join(_path_names(reached, node) + [target])
                return (
                    f"joining {path} through entity '{entity}' would fan out: '{target}' can hold "
                    f"many rows per '{entity}', which would repeat rows of '{start}' and inflate "
                    f"its measures. Declare '{entity}' primary/unique on '{target}', or add "
                    f"`dedupe: {{key: [...], keep: latest, by: ...}}` to '{target}'"
                )
    shared = ", ".join(sorted(models[target].entities)) or "none"
    return (
        f"model '{target}' cannot be reached from '{start}': they share no entity path "
        f"('{target}' has entities: {shared})"
    )


def _path_names(reached: dict, node: str) -> list[str]:
    names = [node]
    while reached[node] is not None:
        node = reached[node].left
        names.append(node)
    return names[::-1]


def join_plan(models: dict, base: str, needed) -> list[JoinStep]:
    """The joins that bring every model in `needed` into a query over `base`, in order."""
    steps: list[JoinStep] = []
    joined = {base}
    for target in sorted(set(needed) - {base}):
        for step in join_path(models, base, target):
            if step.right not in joined:
                joined.add(step.right)
                steps.append(step)
    return steps
