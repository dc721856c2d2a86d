"""`metrics-layer report`: one self-contained HTML page about a metric per time bucket and group.

The page holds, drawn as inline SVG by the small chart code below (no JavaScript, no library,
no network, no CDN):

- the metric per bucket, one line per group (e.g. per model version), with its CBPE estimate
  (`<classification>.estimated_<value>`) dashed next to it when the metric has one;
- the label coverage per bucket (`<classification>.coverage`), buckets under the threshold
  (the monitors' min_coverage, else 50 %) hatched in both charts;
- the monitors' states, evaluated once (without recording or notifying), with the last
  evaluation recorded in the history store when there is one;
- every number of the charts in a data table (`data-*` attributes hold the exact values).

Values come from ordinary SemanticQuery runs through MetricsService: the same path as every
door. A bucket the engine returns no row for, or a NULL value, is a gap in the line, never a 0.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from .model.errors import did_you_mean
from .model.types import parse_interval
from .query import GRAINS, DimensionRef, Filter, QueryError, SemanticQuery, parse_timestamp

DEFAULT_MIN_COVERAGE = 0.5
MAX_BUCKETS = 5000  # points per line; more would not be readable (nor small)
_SHORT = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_SHORT_UNITS = {"m": "minute", "min": "minute", "h": "hour", "d": "day", "w": "week"}
_STEPS = {"minute": dt.timedelta(minutes=1), "hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1),
          "week": dt.timedelta(weeks=1)}
# Colour-blind-safe palette (Okabe-Ito), one colour per group.
_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")


def parse_last(text: str) -> dt.timedelta:
    """'7d', '48h', '30m', '2w' or '7 days' -> timedelta; QueryError otherwise."""
    short = _SHORT.match(str(text))
    interval = parse_interval(f"{short.group(1)} {_SHORT_UNITS[short.group(2).lower()]}" if short else text)
    if interval is None:
        raise QueryError(f"--last {text!r} is not a duration; write e.g. 7d, 48h, 90m, 2w or '7 days' "
                         "(units: m, h, d, w, or minute, hour, day, week)")
    return dt.timedelta(seconds=interval.seconds)


@dataclass
class ReportData:
    """Everything the page shows, collected through MetricsService (render() only draws)."""

    metric: str
    description: str | None
    fmt: str | None
    window: str | None
    label_delay: str | None
    by: tuple[str, ...]
    grain: str
    time_dimension: str
    start: dt.datetime
    end: dt.datetime
    as_of: dt.datetime | None
    buckets: list[dt.datetime]
    groups: list[tuple]
    values: dict[tuple, float | None]  # (group, bucket) -> value
    coverage_metric: str | None = None
    coverage_note: str = ""
    coverage: dict[tuple, float | None] = field(default_factory=dict)
    estimate_metric: str | None = None
    estimates: dict[tuple, float | None] = field(default_factory=dict)
    min_coverage: float = DEFAULT_MIN_COVERAGE
    min_coverage_source: str = "default"
    monitors: list[dict] = field(default_factory=list)
    monitors_note: str = ""
    empty_groups: list[tuple] = field(default_factory=list)
    engine: str = ""
    generated_at: dt.datetime = field(default_factory=lambda: _utc_now())
    queries: list[str] = field(default_factory=list)

    def low(self, group: tuple, bucket: dt.datetime) -> bool:
        """True when the group's coverage at the bucket is known and under the threshold."""
        value = self.coverage.get((group, bucket))
        return self.coverage_metric is not None and (value is None or value < self.min_coverage) \
            and self.values.get((group, bucket)) is not None


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _number(value) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def metric_models(model, name: str, seen: set | None = None) -> set[str]:
    """The models whose measures a metric (or model.measure) reads, through derived metrics."""
    seen = set() if seen is None else seen
    if name in seen:
        return set()
    seen.add(name)
    metric = model.metrics.get(name)
    if metric is None:
        return {name.partition(".")[0]} if model.measure(name) is not None else set()
    models = {inp.measure.partition(".")[0] for inp in metric.inputs.values()}
    if metric.expr is not None:
        from sqlglot import exp

        for column in metric.expr.find_all(exp.Column):
            models |= {column.table} if column.table else metric_models(model, column.name, seen)
    for dep in metric.depends_on:
        models |= metric_models(model, dep, seen)
    return models


def time_dimension(model, metric: str) -> str:
    """The time dimension the metric's rows are placed by (its model's `time:`)."""
    found = sorted({f"{m}.{model.models[m].time}" for m in metric_models(model, metric)
                    if m in model.models and model.models[m].time in model.models[m].dimensions})
    if len(found) != 1:
        times = [d for d in model.dimension_names() if model.dimension(d).type == "time"]
        why = "reads no model with a `time:` dimension" if not found else f"reads models with several times ({', '.join(found)})"
        raise QueryError(f"metric {metric!r} {why}, so it cannot be charted per time bucket; "
                         f"time dimensions of the project: {', '.join(times) or '(none)'}")
    return found[0]


def companions(model, metric: str, coverage: str | None = None) -> tuple[str | None, str, str | None]:
    """(coverage metric, how it was chosen, estimate metric) for `metric`.

    `<classification>.<value>` has `<classification>.coverage` and, with a score,
    `<classification>.estimated_<value>`. Another metric takes the coverage of the one
    classification with the same window and label delay over the same time, if there is one.
    """
    prefix, _, short = metric.rpartition(".")
    estimate = f"{prefix}.estimated_{short}" if prefix and f"{prefix}.estimated_{short}" in model.metrics else None
    if coverage is not None:
        if coverage not in model.metrics:
            known = [m for m in model.metrics if m.endswith(".coverage")]
            raise QueryError(f"--coverage: unknown metric {coverage!r}{did_you_mean(coverage, known, 'coverage metrics')}", "42703")
        return coverage, "as given (--coverage)", estimate
    if prefix and f"{prefix}.coverage" in model.metrics:
        return f"{prefix}.coverage", f"label coverage of {prefix}", estimate
    own = model.metrics.get(metric)
    if own is None or own.label_delay is None:
        return None, "the metric has no label delay, so no label coverage", estimate
    time = time_dimension(model, metric)
    same = [name for name, m in model.metrics.items() if name.endswith(".coverage") and m.window == own.window
            and m.label_delay == own.label_delay and time_dimension(model, name) == time]
    if len(same) == 1:
        return same[0], (f"label coverage of {same[0].rpartition('.')[0]} (same window {own.window.text} "
                         f"and label delay {own.label_delay.text})"), estimate
    return None, "no classification with the same window and label delay provides a coverage (give --coverage)", estimate


def collect(service, metric: str, by: tuple[str, ...] = (), grain: str = "hour", last: str = "7d",
            as_of: dt.datetime | None = None, coverage: str | None = None, min_coverage: float | None = None,
            progress: Callable[[str], None] | None = None, now: dt.datetime | None = None) -> ReportData:
    """Query the metric, its coverage and estimate per bucket and group, and the monitors' states."""
    say = progress or (lambda _message: None)
    model = service.model
    if metric not in model.metric_names():
        raise QueryError(f"unknown metric {metric!r}{did_you_mean(metric, model.metric_names(), 'metrics')}", "42703")
    if grain not in GRAINS:
        raise QueryError(f"--grain {grain!r} is not a grain; valid grains: {', '.join(GRAINS)}")
    span = parse_last(last)
    time_dim = time_dimension(model, metric)
    refs = []
    for text in by:
        name, _, by_grain = text.partition(":")
        if model.dimension(name) is None:
            raise QueryError(f"--by: unknown dimension {name!r}{did_you_mean(name, model.dimension_names(), 'dimensions')}", "42703")
        if name == time_dim:
            raise QueryError(f"--by {text}: the report's x axis is already {time_dim}; choose its bucket with --grain")
        refs.append(DimensionRef(name, by_grain or None))
    if isinstance(as_of, str):
        as_of = parse_timestamp(as_of, "--as-of")
    end = as_of or now or _utc_now()
    start = end - span
    step = _STEPS.get(grain)
    if step is not None and span / step > MAX_BUCKETS:
        raise QueryError(f"--last {last} at --grain {grain} is {span // step:,} buckets, more than a page can show "
                         f"({MAX_BUCKETS:,}); give a shorter --last or a coarser --grain")
    coverage_metric, coverage_note, estimate_metric = companions(model, metric, coverage)
    threshold, source = _threshold(model, metric, coverage_metric, min_coverage)
    own = model.metrics.get(metric)
    data = ReportData(
        metric=metric, description=own.description if own else None, fmt=own.format if own else None,
        window=own.window.text if own and own.window else None,
        label_delay=own.label_delay.text if own and own.label_delay else None,
        by=tuple(r.name for r in refs), grain=grain, time_dimension=time_dim, start=start, end=end, as_of=as_of,
        buckets=[], groups=[], values={}, coverage_metric=coverage_metric, coverage_note=coverage_note,
        estimate_metric=estimate_metric, min_coverage=threshold, min_coverage_source=source, engine=service.dialect)
    dimensions = (*refs, DimensionRef(time_dim, grain))
    filters = (Filter(time_dim, ">=", start.isoformat(sep=" ")), Filter(time_dim, "<=", end.isoformat(sep=" ")))
    wanted = [(metric, data.values), (coverage_metric, data.coverage), (estimate_metric, data.estimates)]
    wanted = [(name, target) for name, target in wanted if name is not None]
    seen_buckets: set[dt.datetime] = set()
    for i, (name, target) in enumerate(wanted, 1):
        t0 = time.monotonic()
        say(f"report: [{i}/{len(wanted) + 1}] {name} by {', '.join([*data.by, f'{time_dim}:{grain}'])} ...")
        query = SemanticQuery(metrics=(name,), dimensions=dimensions, filters=filters, as_of=as_of)
        result = service.run(query)
        data.queries.append(f"{name} by {', '.join(d.name + (':' + d.grain if d.grain else '') for d in dimensions)}")
        width = len(refs)
        for row in result.rows:
            group, bucket = tuple(row[:width]), row[width]
            if not isinstance(bucket, dt.datetime):
                bucket = dt.datetime(bucket.year, bucket.month, bucket.day)
            elif bucket.tzinfo is not None:  # a timestamptz column: UTC, like everything on the page
                bucket = bucket.astimezone(dt.timezone.utc).replace(tzinfo=None)
            target[(group, bucket)] = _number(row[width + 1])
            seen_buckets.add(bucket)
        say(f"report: [{i}/{len(wanted) + 1}] {name}: {len(result.rows)} rows in {time.monotonic() - t0:.1f} s")
    data.buckets = _axis(start, end, grain, seen_buckets)
    groups = sorted({g for g, _ in data.values}, key=lambda g: tuple((v is None, str(v)) for v in g))
    data.groups = [g for g in groups if any(data.values.get((g, b)) is not None for b in data.buckets)]
    data.empty_groups = [g for g in groups if g not in data.groups]
    t0 = time.monotonic()
    say(f"report: [{len(wanted) + 1}/{len(wanted) + 1}] evaluating {len(model.monitors)} monitors ...")
    data.monitors, data.monitors_note = _monitor_rows(service, as_of)
    say(f"report: monitors evaluated in {time.monotonic() - t0:.1f} s")
    return data


def _threshold(model, metric: str, coverage_metric: str | None, given: float | None) -> tuple[float, str]:
    if given is not None:
        if not 0 <= given <= 1:
            raise QueryError(f"--min-coverage must be a share between 0 and 1, got {given!r}")
        return given, "--min-coverage"
    for monitor in model.monitors.values():
        if monitor.min_coverage is not None and monitor.coverage_metric == coverage_metric:
            return monitor.min_coverage, f"min_coverage of monitor {monitor.name}"
    return DEFAULT_MIN_COVERAGE, "default"


def _axis(start: dt.datetime, end: dt.datetime, grain: str, seen: set[dt.datetime]) -> list[dt.datetime]:
    """Every bucket from start to end (fixed-length grains), plus those the engine returned."""
    buckets = {b for b in seen if b <= end}
    step = _STEPS.get(grain)
    if step is not None and seen:
        first = min(seen)  # aligned by the engine's truncation (weeks start on Monday)
        while first - step >= start:
            first -= step
        moment = first
        while moment <= end:
            buckets.add(moment)
            moment += step
    return sorted(buckets)


def _monitor_rows(service, as_of: dt.datetime | None) -> tuple[list[dict], str]:
    from .monitors import Monitors, _plain

    monitors = Monitors(service, record=False)
    try:
        recorded = monitors.history()
        note = ""
    except Exception as e:  # noqa: BLE001 - no history yet (never recorded) is not an error of the report
        recorded, note = [], f"no recorded history ({str(e).splitlines()[0][:120]})"
    last: dict[tuple[str, str], dict] = {}
    for row in recorded:
        last[(row["monitor"], row["group_key"])] = row
    rows = []
    for monitor in service.model.monitors.values():
        for state in monitors.check(monitor, as_of=as_of):
            before = last.get((monitor.name, state.key))
            rows.append({
                "monitor": monitor.name, "metric": monitor.metric,
                "group": ", ".join(f"{k}={'NULL' if v is None else _plain(v)}" for k, v in state.group.items()) or "(all)",
                "condition": f"{'change ' if monitor.change else ''}{monitor.op} {monitor.threshold:g}",
                "min_coverage": monitor.min_coverage, "value": state.value,
                "format": getattr(service.model.metrics.get(monitor.metric), "format", None), "coverage": state.coverage,
                "state": state.state, "message": state.message,
                "recorded": f"{before['state']} at {_plain(before['at'])}" if before else "",
            })
    return rows, note


# ---- rendering --------------------------------------------------------------------------------

def render(data: ReportData) -> str:
    colours = {g: _PALETTE[i % len(_PALETTE)] for i, g in enumerate(data.groups)}
    stamp = data.as_of or data.end
    title = f"{data.metric}" + (f" by {', '.join(data.by)}" if data.by else "")
    facts = [f"{_ADJECTIVE[data.grain]} buckets of {data.time_dimension} (UTC), {_when(data.start)} to {_when(data.end)}"]
    if data.window:
        facts.append(f"trailing window {data.window}" + (f", label delay {data.label_delay}" if data.label_delay else ""))
    facts.append(f"engine {data.engine}")
    parts = [
        f"<header><h1>{_e(title)}</h1>",
        f"<p class='asof'>as of <strong>{_when(stamp)} UTC</strong>"
        f"{' (as_of)' if data.as_of else ' (now)'} · generated {_when(data.generated_at)} UTC</p>",
        f"<p class='facts'>{_e(' · '.join(facts))}</p>",
        f"<p class='desc'>{_e(' '.join((data.description or '').split()))}</p></header>",
        _cards(data, colours),
        _metric_section(data, colours),
        _coverage_section(data, colours),
        _monitor_section(data),
        _data_section(data),
        "<footer>Every value comes from a SemanticQuery through the metrics layer: "
        + "; ".join(_e(q) for q in data.queries)
        + (f" and every monitor, as of {_when(data.as_of)}" if data.as_of else "")
        + ". A missing bucket or a NULL value is a gap, not a zero.</footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)} — metrics-layer report</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")


_ADJECTIVE = {"minute": "per-minute", "hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly",
              "quarter": "quarterly", "year": "yearly"}


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _when(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


def _format(value: float | None, fmt: str | None) -> str:
    if value is None:
        return "–"
    if fmt == "percent":
        return f"{value * 100:.1f} %"
    if fmt == "integer":
        return f"{value:,.0f}"
    if fmt == "currency":
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:.4g}"


def _group_label(data: ReportData, group: tuple) -> str:
    if not data.by:
        return data.metric
    return ", ".join("NULL" if v is None else str(v) for v in group)


def _latest(data: ReportData, values: dict, group: tuple) -> tuple[dt.datetime | None, float | None]:
    for bucket in reversed(data.buckets):
        value = values.get((group, bucket))
        if value is not None:
            return bucket, value
    return None, None


def _cards(data: ReportData, colours: dict) -> str:
    cards = []
    for group in data.groups:
        bucket, value = _latest(data, data.values, group)
        extra = []
        if data.estimate_metric:
            extra.append(f"estimate {_format(_latest(data, data.estimates, group)[1], data.fmt)}")
        if data.coverage_metric:
            cov = data.coverage.get((group, bucket))
            extra.append(f"coverage {_format(cov, 'percent')}" + (" · low" if data.low(group, bucket) else ""))
        cards.append(
            f"<div class='card' style='border-top-color:{colours[group]}'><div class='k'>{_e(_group_label(data, group))}</div>"
            f"<div class='v'>{_format(value, data.fmt)}</div>"
            f"<div class='s'>latest bucket {_when(bucket)}{' · ' if extra else ''}{_e(' · '.join(extra))}</div></div>")
    states = [m["state"] for m in data.monitors]
    if states:
        worst = next((s for s in ("alerting", "error", "low_coverage", "no_data", "ok") if s in states), "ok")
        cards.append(f"<div class='card'><div class='k'>monitors</div><div class='v'><span class='state {worst}'>{worst}</span></div>"
                     f"<div class='s'>{sum(s == 'alerting' for s in states)} alerting of {len(states)} groups, "
                     f"{len({m['monitor'] for m in data.monitors})} monitors</div></div>")
    if not data.groups:
        cards.insert(0, "<div class='card'><div class='k'>no data</div><div class='v'>–</div>"
                     "<div class='s'>the metric has no value in this range</div></div>")
    return f"<section class='cards'>{''.join(cards)}</section>"


def _legend(items: list[tuple[str, str, object]]) -> str:
    """Legend entries (label, colour, kind): kind False a line, True a dashed line, "hollow" a
    hollow point, "hatch" a hatched bucket."""
    spans = []
    for label, colour, kind in items:
        if kind == "hollow":
            mark = f"<circle cx='13' cy='5' r='3.2' fill='#fff' stroke='{colour}' stroke-width='1.4'/>"
        elif kind == "hatch":
            mark = ("<rect x='4' y='0' width='18' height='10' fill='#f1f3f4' stroke='#c4c7cc'/>"
                    + "".join(f"<line x1='{x}' y1='10' x2='{x + 6}' y2='0' stroke='#c4c7cc' stroke-width='2'/>" for x in (4, 10, 16)))
        else:
            dash = " stroke-dasharray='5 3'" if kind else ""
            mark = f"<line x1='0' y1='5' x2='26' y2='5' stroke='{colour}' stroke-width='2.5'{dash}/>"
        spans.append(f"<span><svg width='26' height='10' aria-hidden='true'>{mark}</svg>{_e(label)}</span>")
    return f"<div class='legend'>{''.join(spans)}</div>"


def _metric_section(data: ReportData, colours: dict) -> str:
    series, legend = [], []
    for group in data.groups:
        label = _group_label(data, group)
        series.append((label, colours[group], False, [data.values.get((group, b)) for b in data.buckets],
                       [data.low(group, b) for b in data.buckets]))
        legend.append((f"{label}: realized", colours[group], False))
        if data.estimate_metric:
            series.append((f"{label} (estimate)", colours[group], True,
                           [data.estimates.get((group, b)) for b in data.buckets], None))
            legend.append((f"{label}: estimate (CBPE)", colours[group], True))
    if data.coverage_metric:
        legend.append((f"coverage under {data.min_coverage:.0%}", "#5f6368", "hollow"))
        legend.append(("every line's coverage under it", "#9aa0a6", "hatch"))
    note = ""
    if data.estimate_metric:
        note = (f"<p class='note'>Dashed: {_e(data.estimate_metric)}, a confidence-based estimate (CBPE) over the "
                f"predictions younger than the label delay, assuming a calibrated score; solid: the realized "
                f"{_e(data.metric)} over the mature predictions.</p>")
    if data.empty_groups:
        empty = "; ".join(", ".join(f"{d} = {'NULL' if v is None else v}" for d, v in zip(data.by, g)) for g in data.empty_groups)
        note += f"<p class='note'>No value in this range (not drawn): {_e(empty)}.</p>"
    chart = _line_chart("m", data, series, data.fmt, y_label=data.metric, hatched=_hatched(data))
    return f"<section><h2>{_e(data.metric)} per {data.grain}</h2>{_legend(legend)}{chart}{note}</section>"


def _hatched(data: ReportData) -> list[bool]:
    if data.coverage_metric is None:
        return [False] * len(data.buckets)
    hatched = []
    for bucket in data.buckets:
        drawn = [g for g in data.groups if data.values.get((g, bucket)) is not None]
        hatched.append(bool(drawn) and all(data.low(g, bucket) for g in drawn))
    return hatched


def _coverage_section(data: ReportData, colours: dict) -> str:
    if data.coverage_metric is None:
        return (f"<section><h2>Label coverage</h2><p class='note'>Not shown: {_e(data.coverage_note)}.</p></section>")
    series = [(_group_label(data, g), colours[g], False, [data.coverage.get((g, b)) for b in data.buckets], None)
              for g in data.groups]
    legend = [(_group_label(data, g), colours[g], False) for g in data.groups]
    legend.append((f"threshold {data.min_coverage:.0%} ({data.min_coverage_source})", "#c62828", True))
    chart = _line_chart("c", data, series, "percent", y_label=data.coverage_metric, hatched=_hatched(data),
                        y_range=(0.0, 1.0), threshold=data.min_coverage)
    return (f"<section><h2>Label coverage per {data.grain}</h2>{_legend(legend)}{chart}"
            f"<p class='note'>{_e(data.coverage_metric)}: {_e(data.coverage_note)}. Each bucket's value is the share of the "
            f"predictions since its window's start that are older than the label delay, at the bucket's end. "
            f"A point under {data.min_coverage:.0%} is hollow (its value rests on few mature labels); a bucket where every line's is, hatched.</p></section>")


def _monitor_section(data: ReportData) -> str:
    if not data.monitors:
        return "<section><h2>Monitors</h2><p class='note'>The project has no monitors.</p></section>"
    rows = []
    for m in data.monitors:
        message = f"<div class='msg'>{_e(m['message'][:300])}</div>" if m["message"] else ""
        mine = " class='mine'" if m["metric"] == data.metric else ""
        minimum = f" (min coverage {m['min_coverage']:.0%})" if m["min_coverage"] is not None else ""
        rows.append(
            f"<tr{mine}><td>{_e(m['monitor'])}</td><td>{_e(m['metric'])}</td><td>{_e(m['group'])}</td>"
            f"<td>{_e(m['condition'])}{_e(minimum)}</td>"
            f"<td class='n'>{_e(_format(m['value'], m['format']))}</td><td class='n'>{_e(_format(m['coverage'], 'percent'))}</td>"
            f"<td><span class='state {_e(m['state'])}'>{_e(m['state'])}</span>{message}</td><td>{_e(m['recorded'])}</td></tr>")
    when = f"as of {_when(data.as_of)}" if data.as_of else "now"
    note = f"<p class='note'>{_e(data.monitors_note)}</p>" if data.monitors_note else ""
    return (f"<section><h2>Monitors</h2><p class='note'>Evaluated once for this page ({when}); not recorded, nothing "
            f"notified. Last recorded: the newest row of the monitor history.</p><table class='monitors'><thead><tr>"
            "<th>monitor</th><th>metric</th><th>group</th><th>condition</th><th>value</th><th>coverage</th><th>state</th>"
            f"<th>last recorded</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{note}</section>")


def _data_section(data: ReportData) -> str:
    head = ["bucket (UTC)", *data.by, data.metric]
    if data.estimate_metric:
        head.append(data.estimate_metric)
    if data.coverage_metric:
        head.append(data.coverage_metric)
    rows = []
    for bucket in data.buckets:
        for group in data.groups:
            key = (group, bucket)
            if key not in data.values and key not in data.coverage and key not in data.estimates:
                continue
            attrs = {"bucket": bucket.isoformat(sep=" "), "group": json.dumps([_json(v) for v in group]),
                     "value": _exact(data.values.get(key))}
            cells = [_when(bucket), *("NULL" if v is None else str(v) for v in group), _format(data.values.get(key), data.fmt)]
            if data.estimate_metric:
                attrs["estimate"] = _exact(data.estimates.get(key))
                cells.append(_format(data.estimates.get(key), data.fmt))
            if data.coverage_metric:
                attrs["coverage"] = _exact(data.coverage.get(key))
                cells.append(_format(data.coverage.get(key), "percent"))
            attributes = " ".join(f"data-{k}='{_e(v)}'" for k, v in attrs.items())
            rows.append(f"<tr class='point' {attributes}>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return (f"<section><details><summary>Data: {len(rows)} rows (bucket × group)</summary><table class='data'><thead><tr>"
            + "".join(f"<th>{_e(h)}</th>" for h in head) + f"</tr></thead><tbody>{''.join(rows)}</tbody></table></details></section>")


def _json(value):
    return value.isoformat(sep=" ") if isinstance(value, (dt.datetime, dt.date)) else value


def _exact(value: float | None) -> str:
    return "" if value is None else repr(float(value))


# ---- the chart ----------------------------------------------------------------------------------

_W, _H = 1120, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 74, 16, 14, 46


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + (abs(low) * 0.1 or 1.0)
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    tick = first
    while tick <= high + step * 1e-9:
        ticks.append(round(tick, 12))
        tick += step
    if ticks[-1] < high:
        ticks.append(round(tick, 12))
    return ticks


def _time_ticks(buckets: list[dt.datetime]) -> list[tuple[int, str]]:
    """(index, label) for the x axis: days at midnight for spans of days, else hours."""
    if not buckets:
        return []
    span = buckets[-1] - buckets[0]
    if span >= dt.timedelta(days=2):
        days = [i for i, b in enumerate(buckets) if b.hour == 0 and b.minute == 0]
        every = max(1, math.ceil(len(days) / 12))
        return [(i, buckets[i].strftime("%b %d")) for i in days[::every]]
    hours = [i for i, b in enumerate(buckets) if b.minute == 0]
    every = max(1, math.ceil(len(hours) / 12))
    return [(i, buckets[i].strftime("%b %d %H:%M" if buckets[i].hour == 0 or i == hours[0] else "%H:%M"))
            for i in hours[::every]]


def _line_chart(key: str, data: ReportData, series: list, fmt: str | None, y_label: str, hatched: list[bool],
                y_range: tuple[float, float] | None = None, threshold: float | None = None) -> str:
    n = len(data.buckets)
    width, height = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    values = [v for s in series for v in s[3] if v is not None]
    if y_range is None:
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        pad = (high - low) * 0.08 or abs(high) * 0.05 or 0.05
        share = fmt == "percent" and 0 <= low and high <= 1  # a share stays within 0 to 100 %
        positive = low >= 0  # counts, costs: the axis stops at 0
        low, high = low - pad, high + pad
        ticks = _nice_ticks(low, high)
        if positive:
            ticks = [t for t in ticks if t >= 0]  # 0 is a multiple of the step: still a tick
        if share:
            ticks = [t for t in ticks if t <= 1] or [0.0, 1.0]
            if ticks[-1] < high and ticks[-1] < 1:
                ticks.append(1.0)
        if len(ticks) < 2:
            ticks = [0.0, 1.0]
    else:
        ticks = _nice_ticks(*y_range)
    low, high = ticks[0], ticks[-1]

    def x(i: int) -> float:
        return _LEFT + (width * (i + 0.5) / n if n else 0)

    def y(v: float) -> float:
        return _TOP + height - (v - low) / (high - low) * height

    out = [f"<svg class='chart' viewBox='0 0 {_W} {_H}' width='{_W}' height='{_H}' role='img' "
           f"aria-label='{_e(y_label)} per {data.grain}'>",
           f"<defs><pattern id='hatch-{key}' patternUnits='userSpaceOnUse' width='7' height='7' "
           "patternTransform='rotate(45)'><rect width='7' height='7' fill='#f1f3f4'/>"
           "<line x1='0' y1='0' x2='0' y2='7' stroke='#c4c7cc' stroke-width='3'/></pattern></defs>",
           f"<rect x='{_LEFT}' y='{_TOP}' width='{width}' height='{height}' fill='#ffffff' stroke='#dadce0'/>"]
    slot = width / n if n else 0
    run_start = None
    for i, flag in enumerate([*hatched, False]):
        if flag and run_start is None:
            run_start = i
        elif not flag and run_start is not None:
            out.append(f"<rect class='low' x='{_LEFT + slot * run_start:.1f}' y='{_TOP}' width='{slot * (i - run_start):.1f}' "
                       f"height='{height}' fill='url(#hatch-{key})'/>")
            run_start = None
    for tick in ticks:
        out.append(f"<line x1='{_LEFT}' x2='{_LEFT + width}' y1='{y(tick):.1f}' y2='{y(tick):.1f}' stroke='#eceef0'/>"
                   f"<text class='yt' x='{_LEFT - 8}' y='{y(tick) + 4:.1f}'>{_e(_format(tick, fmt) if fmt != 'percent' else f'{tick * 100:g} %')}</text>")
    for i, label in _time_ticks(data.buckets):
        out.append(f"<line x1='{x(i):.1f}' x2='{x(i):.1f}' y1='{_TOP}' y2='{_TOP + height}' stroke='#f3f4f5'/>"
                   f"<line x1='{x(i):.1f}' x2='{x(i):.1f}' y1='{_TOP + height}' y2='{_TOP + height + 5}' stroke='#80868b'/>"
                   f"<text class='xt' x='{x(i):.1f}' y='{_TOP + height + 18}'>{_e(label)}</text>")
    out.append(f"<text class='axis' x='{_LEFT + width / 2:.0f}' y='{_H - 6}'>{_e(data.time_dimension)} "
               f"({data.grain}, UTC)</text>")
    out.append(f"<text class='axis' transform='translate(14 {_TOP + height / 2:.0f}) rotate(-90)'>{_e(y_label)}"
               f"{' (%)' if fmt == 'percent' else ''}</text>")
    if threshold is not None:
        out.append(f"<line x1='{_LEFT}' x2='{_LEFT + width}' y1='{y(threshold):.1f}' y2='{y(threshold):.1f}' "
                   "stroke='#c62828' stroke-width='1.5' stroke-dasharray='6 4'/>")
    dots = n <= 240
    for label, colour, dashed, points, hollow in series:
        segment: list[str] = []
        segments = []
        for i, v in enumerate(points + [None]):
            if v is None:
                if segment:
                    segments.append(segment)
                segment = []
            else:
                segment.append(f"{x(i):.1f},{y(v):.1f}")
        dash = " stroke-dasharray='5 3' opacity='0.85'" if dashed else ""
        for seg in segments:
            if len(seg) == 1:
                out.append(f"<circle cx='{seg[0].split(',')[0]}' cy='{seg[0].split(',')[1]}' r='2.5' fill='{colour}'/>")
            else:
                out.append(f"<polyline fill='none' stroke='{colour}' stroke-width='{1.6 if dashed else 2}' "
                           f"stroke-linejoin='round' points='{' '.join(seg)}'{dash}/>")
        if dots and not dashed:
            for i, v in enumerate(points):
                if v is None:
                    continue
                low_cov = hollow is not None and hollow[i]
                fill = "#ffffff" if low_cov else colour
                out.append(f"<circle cx='{x(i):.1f}' cy='{y(v):.1f}' r='2.6' fill='{fill}' stroke='{colour}' stroke-width='1.2'>"
                           f"<title>{_e(label)} · {_when(data.buckets[i])} · {_e(_format(v, fmt))}"
                           f"{' · low coverage' if low_cov else ''}</title></circle>")
    if not values:
        out.append(f"<text class='axis' x='{_LEFT + width / 2:.0f}' y='{_TOP + height / 2:.0f}'>no value in this range</text>")
    out.append("</svg>")
    return "".join(out)


_CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #f6f7f9; color: #202124; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1160px; margin: 0 auto; padding: 22px 20px 40px; }
header h1 { font-size: 22px; margin: 0 0 2px; font-weight: 600; }
.asof { margin: 0; color: #3c4043; }
.facts, .desc { margin: 2px 0; color: #5f6368; }
section { background: #fff; border: 1px solid #e0e3e7; border-radius: 8px; padding: 14px 16px; margin-top: 14px; }
h2 { font-size: 15px; margin: 0 0 6px; font-weight: 600; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; background: none; border: none; padding: 0; }
.card { flex: 1 1 200px; background: #fff; border: 1px solid #e0e3e7; border-top: 4px solid #5f6368; border-radius: 8px; padding: 10px 14px; }
.card .k { color: #5f6368; font-size: 12.5px; font-weight: 600; }
.card .v { font-size: 26px; font-weight: 600; margin: 2px 0; }
.card .s { color: #5f6368; font-size: 12px; }
.legend { display: flex; flex-wrap: wrap; gap: 16px; font-size: 12.5px; color: #3c4043; margin: 2px 0 4px; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
svg.chart { display: block; max-width: 100%; height: auto; }
svg text { font: 11.5px -apple-system, "Segoe UI", Roboto, Arial, sans-serif; fill: #5f6368; }
svg text.yt { text-anchor: end; }
svg text.xt { text-anchor: middle; }
svg text.axis { text-anchor: middle; fill: #3c4043; font-size: 12px; }
.note { color: #5f6368; font-size: 12.5px; margin: 6px 0 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eceef0; vertical-align: top; }
th { color: #5f6368; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.mine td:first-child { font-weight: 600; }
.state { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; background: #e6f4ea; color: #137333; }
.state.alerting { background: #fce8e6; color: #c5221f; }
.state.error { background: #fce8e6; color: #a50e0e; }
.state.low_coverage { background: #fef7e0; color: #8d5b00; }
.state.no_data { background: #f1f3f4; color: #5f6368; }
.msg { color: #a50e0e; font-size: 12px; margin-top: 2px; }
details summary { cursor: pointer; color: #3c4043; }
table.data td { font-variant-numeric: tabular-nums; }
footer { color: #80868b; font-size: 12px; margin-top: 14px; }
"""
