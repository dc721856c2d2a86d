"""`monitors:` in the metrics YAML: validated like everything else, with file:line."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .errors import did_you_mean
from .types import Interval, Monitor
from .yaml_source import Location, Node, Seq

if TYPE_CHECKING:
    from .load import _Loader

MONITOR_KEYS = ("name", "description", "metric", "by", "condition", "min_coverage", "every", "notify")
DEFAULT_EVERY = Interval(300, "5 minutes")
# "< 0.8", ">= 100", "change < -0.05" (value minus the group's previous evaluation).
_CONDITION = re.compile(r"^\s*(change\s+)?(<=|>=|<|>)\s*(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)\s*$")


def load_monitor(loader: "_Loader", raw: Any, location: Location, seen: dict[str, Monitor]) -> None:
    node = loader.mapping(raw, location, "monitor", MONITOR_KEYS)
    name = node is not None and loader.name_of(node, "monitor")
    if not name:
        return
    what = f"monitor '{name}'"
    if name in seen:
        loader.error(node.at("name"), f"duplicate {what} (first defined at {seen[name].location})")
        return
    errors = len(loader.errors)
    metric = node.get("metric")
    valid = list(loader.metrics) + loader.all_measures()
    if not isinstance(metric, str) or metric not in valid:
        loader.error(node.at("metric") if "metric" in node else node.location,
                     f"{what} needs metric: a metric name, got {metric!r}{did_you_mean(str(metric), valid, 'metrics')}")
    by = node.get("by")
    by_list = [by] if isinstance(by, str) else list(by) if isinstance(by, Seq) else [] if by is None else None
    dimensions = [d.qualified_name for m in loader.models.values() for d in m.dimensions.values()]
    if by_list is None:
        loader.error(node.at("by"), f"{what} by must be a dimension or a list of dimensions")
        by_list = []
    for dim in by_list:
        if not isinstance(dim, str) or str(dim).partition(":")[0] not in dimensions:
            loader.error(node.at("by"), f"{what} by: unknown dimension {dim!r}{did_you_mean(str(dim), dimensions, 'dimensions')}")
    condition = node.get("condition")
    match = _CONDITION.match(condition) if isinstance(condition, str) else None
    if match is None:
        loader.error(node.at("condition") if "condition" in node else node.location,
                     f"{what} condition {condition!r} is not valid; write an operator and a number: '< 0.8', '>= 100', "
                     "or 'change < -0.05' (the change since the previous evaluation)")
    min_coverage, coverage_metric = node.get("min_coverage"), None
    if min_coverage is not None:
        if isinstance(min_coverage, bool) or not isinstance(min_coverage, (int, float)) or not 0 <= min_coverage <= 1:
            loader.error(node.at("min_coverage"), f"{what} min_coverage must be a share between 0 and 1, got {min_coverage!r}")
        coverage_metric = f"{str(metric).rpartition('.')[0]}.coverage"
        if isinstance(metric, str) and coverage_metric not in loader.metrics:
            with_coverage = sorted(m for m in loader.metrics if m.endswith(".coverage"))
            loader.error(node.at("min_coverage"), f"{what} min_coverage needs a metric of a classification with label_delay "
                                                  f"(which provides <name>.coverage); metrics with coverage: "
                                                  f"{', '.join(with_coverage) or '(none)'}")
    every = loader.interval(node, "every", what) if "every" in node else DEFAULT_EVERY
    notify = node.get("notify")
    notify_list = (["log"] if notify is None else [notify] if isinstance(notify, str)
                   else list(notify) if isinstance(notify, Seq) else None)
    if notify_list is None or not all(isinstance(n, str) and (n == "log" or re.match(r"^https?://\S+$", n)) for n in notify_list):
        loader.error(node.at("notify") if "notify" in node else node.location,
                     f"{what} notify must be a list of: log, or a webhook URL (http:// or https://), got {notify!r}")
    if len(loader.errors) > errors or match is None or every is None:
        return
    seen[name] = Monitor(name, metric, tuple(by_list), match.group(2), float(match.group(3)), bool(match.group(1)),
                         float(min_coverage) if min_coverage is not None else None, coverage_metric, every,
                         tuple(notify_list), node.location)
