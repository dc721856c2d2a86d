"""`metrics-layer report`: the numbers on the page against plain Python, offline, in Chromium.

A small project on a real DuckDB file: leads over two days, a prediction per lead (two model
versions, one of them switched off for some hours: gaps), conversions arriving up to 10 hours
late. The metric per hour bucket and version, its label coverage and its CBPE estimate are
computed here in plain Python from the generated rows, at several as_of moments, and compared
with the `data-*` attributes of the page. No timestamp is on a whole hour or minute, so window
edges (whole hours) never meet a row.

Chromium (/usr/bin/chromium) is skipped when missing, except in CI (CI=true), where it must be
installed. METRICS_LAYER_UPDATE_DOCS=1 also writes docs/report.png, the page over the demo.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest

from metrics_layer.project import load_project
from metrics_layer.query import DimensionRef, QueryError, SemanticQuery
from metrics_layer.report import collect, render
from metrics_layer.service import MetricsService

REPO = Path(__file__).resolve().parent.parent
START = dt.datetime(2026, 5, 1)
WINDOW, DELAY = dt.timedelta(hours=3), dt.timedelta(hours=6)
HOUR = dt.timedelta(hours=1)

MODEL = """
models:
  - name: leads
    table: leads
    entities: [{name: lead, type: primary, expr: id}]
    time: created_at
    dimensions: [{name: created_at, type: time}]
    measures: [{name: lead_count, agg: count}]
  - name: predictions
    table: prediction_events
    entities: [{name: lead, type: unique, expr: lead_id}]
    dimensions: [{name: model_version}, {name: label, type: number}, {name: score, type: number}]
    measures: [{name: prediction_count, agg: count}]
  - name: conversions
    table: conversions
    time: converted_at
    entities: [{name: lead, type: unique, expr: lead_id}]
    dimensions: [{name: converted_at, type: time}]
metrics:
  - name: scoring
    type: classification
    entity: leads.lead
    prediction: {label: predictions.label, score: predictions.score, model_version: predictions.model_version}
    ground_truth: conversions
    window: 3 hours
    label_delay: 6 hours
monitors:
  - name: scoring_by_version
    metric: scoring.accuracy
    by: predictions.model_version
    condition: "< 0.5"
    min_coverage: 0.25
    every: 1 hour
"""


def _rows(seed: int = 7):
    """(id, created_at, version, label, score, converted_at or None) over two days."""
    rnd = random.Random(seed)
    rows, moment, i = [], START + dt.timedelta(seconds=17.25), 0
    while moment < START + dt.timedelta(days=2):
        hour = (moment - START) // HOUR
        version = "v2" if rnd.random() < 0.5 else "v1"
        if version == "v1" and 20 <= hour < 26:  # v1 is switched off for six hours: its buckets go empty
            version = "v2"
        score = round(rnd.random(), 6)
        label = 1 if score > 0.5 else 0
        converted = rnd.random() < score  # a calibrated score
        late = dt.timedelta(seconds=rnd.randrange(60, 10 * 3600) + 0.5)
        rows.append((i, moment, version, label, score, moment + late if converted else None))
        moment += dt.timedelta(seconds=rnd.randrange(200, 900) + 0.125)
        i += 1
    return rows


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    rows = _rows()
    with duckdb.connect(str(folder / "data.duckdb")) as con:
        con.execute("CREATE TABLE leads (id INTEGER, created_at TIMESTAMP)")
        con.execute("CREATE TABLE prediction_events (lead_id INTEGER, model_version TEXT, label INTEGER, score DOUBLE)")
        con.execute("CREATE TABLE conversions (lead_id INTEGER, converted_at TIMESTAMP)")
        con.executemany("INSERT INTO leads VALUES (?, ?)", [(r[0], r[1]) for r in rows])
        con.executemany("INSERT INTO prediction_events VALUES (?, ?, ?, ?)", [(r[0], r[2], r[3], r[4]) for r in rows])
        con.executemany("INSERT INTO conversions VALUES (?, ?)", [(r[0], r[5]) for r in rows if r[5] is not None])
    (folder / "metrics").mkdir()
    (folder / "metrics" / "model.yml").write_text(MODEL)
    (folder / "metrics_layer.yml").write_text(f"engine: duckdb:///{folder / 'data.duckdb'}\n")
    return folder, rows


@pytest.fixture(scope="module")
def pg_project(tmp_path_factory):
    """The same rows in a PostgreSQL database of this test's own."""
    import psycopg

    from conftest import postgres_or_skip

    url = postgres_or_skip()
    database = "report_helper_report"
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        con.execute(f"CREATE DATABASE {database}")
    pg = url.rsplit("/", 1)[0] + f"/{database}"
    rows = _rows()
    with psycopg.connect(pg) as con:
        con.execute("CREATE TABLE leads (id INTEGER, created_at TIMESTAMP)")
        con.execute("CREATE TABLE prediction_events (lead_id INTEGER, model_version TEXT, label INTEGER, score DOUBLE PRECISION)")
        con.execute("CREATE TABLE conversions (lead_id INTEGER, converted_at TIMESTAMP)")
        with con.cursor() as cur:
            cur.executemany("INSERT INTO leads VALUES (%s, %s)", [(r[0], r[1]) for r in rows])
            cur.executemany("INSERT INTO prediction_events VALUES (%s, %s, %s, %s)", [(r[0], r[2], r[3], r[4]) for r in rows])
            cur.executemany("INSERT INTO conversions VALUES (%s, %s)", [(r[0], r[5]) for r in rows if r[5] is not None])
    folder = tmp_path_factory.mktemp("report_pg")
    (folder / "metrics").mkdir()
    (folder / "metrics" / "model.yml").write_text(MODEL)
    (folder / "metrics_layer.yml").write_text(f"engine: {pg}\n")
    yield folder, rows
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


# ---- the independent computation ------------------------------------------------------------

def expected(rows, bucket: dt.datetime, version: str, as_of: dt.datetime) -> dict:
    """The bucket's values from the rows, by hand: known rows are those at or before as_of."""
    end = bucket + HOUR  # a bucket's windows end at its end
    known = [r for r in rows if r[1] <= as_of and r[2] == version]
    mature = [r for r in known if end - DELAY - WINDOW <= r[1] < end - DELAY]
    recent = [r for r in known if end - DELAY <= r[1] < end]
    since = [r for r in known if end - DELAY - WINDOW <= r[1] < end]

    def positive(r):
        return r[5] is not None and r[5] <= as_of

    correct = sum(1 for r in mature if (r[3] == 1) == positive(r))
    estimate = (sum(r[4] if r[3] == 1 else 1 - r[4] for r in recent) / len(recent)) if recent else None
    return {"value": correct / len(mature) if mature else None,
            "coverage": len(mature) / len(since) if since else None,
            "estimate": estimate}


class _Points(HTMLParser):
    def __init__(self):
        super().__init__()
        self.points = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and attrs.get("class") == "point":
            self.points.append(attrs)


def _points(page: str) -> dict:
    parser = _Points()
    parser.feed(page)
    result = {}
    for p in parser.points:
        (version,) = json.loads(p["data-group"])
        key = (dt.datetime.fromisoformat(p["data-bucket"]), version)
        result[key] = {k: (float(p[f"data-{k}"]) if p[f"data-{k}"] else None) for k in ("value", "coverage", "estimate")}
    return result


@pytest.mark.parametrize("as_of", [
    dt.datetime(2026, 5, 1, 20, 30, 0, 1),   # early: little is mature, labels still arriving
    dt.datetime(2026, 5, 2, 9, 40, 0, 3),    # v1 switched off some hours before
    dt.datetime(2026, 5, 2, 23, 59, 0, 7),   # the end of the data
])
def test_page_numbers_equal_a_plain_python_computation(project, as_of):
    folder, rows = project
    service = MetricsService(load_project(folder))
    data = collect(service, "scoring.accuracy", ("predictions.model_version",), "hour", "30h", as_of=as_of)
    page = render(data)
    points = _points(page)
    assert data.coverage_metric == "scoring.coverage" and data.estimate_metric == "scoring.estimated_accuracy"
    assert data.min_coverage == 0.25 and "min_coverage of monitor scoring_by_version" in page
    last_bucket = max(r[1] for r in rows if r[1] <= as_of).replace(minute=0, second=0, microsecond=0)
    first_bucket = (as_of - dt.timedelta(hours=30)).replace(minute=0, second=0, microsecond=0) + HOUR
    checked = 0
    bucket = first_bucket
    while bucket <= last_bucket:
        for version in ("v1", "v2"):
            want = expected(rows, bucket, version, as_of)
            got = points.get((bucket, version))
            if got is None:  # a bucket the engine has no row for: only when there is nothing to show
                assert want["value"] is None and want["estimate"] is None, (bucket, version, want)
                continue
            for key in ("value", "coverage", "estimate"):
                assert (got[key] is None) == (want[key] is None), (bucket, version, key, got, want)
                if want[key] is not None:
                    assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), (bucket, version, key)
            checked += 1
        bucket += HOUR
    assert checked >= 40
    assert {b for b, _ in points} <= {first_bucket + i * HOUR for i in range(31)}, "no bucket outside --last"
    # v1 was switched off from hour 20 to 26: the windows [b - 8 h, b - 5 h) of buckets 28 to 31 are empty:
    # a gap, not a 0.
    gap = dt.datetime(2026, 5, 2, 5)
    if first_bucket <= gap <= last_bucket:
        assert points.get((gap, "v1"), {"value": None})["value"] is None
        assert points[(gap, "v2")]["value"] is not None


def test_page_numbers_on_postgresql_equal_plain_python(pg_project):
    folder, rows = pg_project
    as_of = dt.datetime(2026, 5, 2, 9, 40, 0, 3)
    service = MetricsService(load_project(folder))
    try:
        points = _points(render(collect(service, "scoring.accuracy", ("predictions.model_version",), "hour", "30h", as_of=as_of)))
    finally:
        service.engine.close()
    assert len(points) >= 40
    for (bucket, version), got in points.items():
        want = expected(rows, bucket, version, as_of)
        for key in ("value", "coverage", "estimate"):
            assert (got[key] is None) == (want[key] is None), (bucket, version, key)
            if want[key] is not None:
                assert got[key] == pytest.approx(want[key], rel=1e-12), (bucket, version, key)


def test_coverage_per_bucket_as_of_several_moments_equals_plain_python(project):
    """The coverage companion sliced by hour (as any door asks it) at several as_of moments."""
    folder, rows = project
    service = MetricsService(load_project(folder))
    for as_of in (dt.datetime(2026, 5, 1, 12, 0, 0, 5), dt.datetime(2026, 5, 1, 22, 15, 0, 9), dt.datetime(2026, 5, 2, 18, 0, 0, 11)):
        result = service.run(SemanticQuery(("scoring.coverage", "scoring.mature", "scoring.coverage_predictions"),
                                           (DimensionRef("predictions.model_version"), DimensionRef("leads.created_at", "hour")),
                                           as_of=as_of))
        seen = 0
        for version, bucket, coverage, mature, since in result.rows:
            if version is None:
                continue
            want = expected(rows, bucket, version, as_of)
            if want["coverage"] is None:
                assert coverage is None and not since, (as_of, bucket, version)
                continue
            assert coverage == pytest.approx(want["coverage"], rel=1e-12), (as_of, bucket, version)
            seen += 1
        assert seen >= 10, as_of


def test_page_is_self_contained(project):
    from metrics_layer.monitors import Monitors

    folder, _ = project
    service = MetricsService(load_project(folder))
    (recorded, *_) = Monitors(service).evaluate(service.model.monitors["scoring_by_version"],
                                                now=dt.datetime(2026, 5, 3, 0, 0, 0, 123))
    page = render(collect(service, "scoring.accuracy", ("predictions.model_version",), "hour", "2d",
                          as_of=dt.datetime(2026, 5, 2, 23, 59)))
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()
    assert "<svg" in page and "as of <strong>2026-05-02 23:59 UTC</strong>" in page
    assert "scoring_by_version" in page  # the monitors' table
    now = render(collect(service, "scoring.accuracy", ("predictions.model_version",), "hour", "2d"))
    assert recorded.state == "no_data" and recorded.group == {}  # nothing in the trailing window today
    assert "no_data at 2026-05-03 00:00:00.000123" in now, "the last recorded evaluation is shown"


@pytest.mark.parametrize("args,error", [
    (["--metric", "scoring.acuracy"], "unknown metric 'scoring.acuracy'; did you mean 'scoring.accuracy'"),
    (["--metric", "scoring.accuracy", "--by", "predictions.model_versio"], "unknown dimension 'predictions.model_versio'"),
    (["--metric", "scoring.accuracy", "--last", "7 parsecs"], "--last '7 parsecs' is not a duration; write e.g. 7d"),
    (["--metric", "scoring.accuracy", "--grain", "fortnight"], "--grain 'fortnight' is not a grain"),
    (["--metric", "scoring.accuracy", "--by", "leads.created_at"], "the report's x axis is already leads.created_at"),
    (["--metric", "scoring.accuracy", "--grain", "minute", "--last", "30d"], "is 43,200 buckets, more than a page can show"),
])
def test_cli_errors_are_clear(project, tmp_path, args, error):
    folder, _ = project
    cli = [sys.executable, "-m", "metrics_layer.cli", "report", "--project", str(folder), "--out", str(tmp_path / "r.html"), *args]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and error in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "r.html").exists()


def test_cli_writes_the_page_with_progress_on_stderr(project, tmp_path):
    folder, rows = project
    out = tmp_path / "r.html"
    cli = [sys.executable, "-m", "metrics_layer.cli", "report", "--project", str(folder), "--metric", "scoring.accuracy",
           "--by", "predictions.model_version", "--last", "1d", "--as-of", "2026-05-02T23:59:00.000007", "--out", str(out)]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "report: [1/4] scoring.accuracy" in done.stderr and f"written to {out}" in done.stderr and done.stdout == ""
    points = _points(out.read_text(encoding="utf-8"))
    bucket = dt.datetime(2026, 5, 2, 20)
    assert points[(bucket, "v2")]["value"] == pytest.approx(expected(rows, bucket, "v2", dt.datetime(2026, 5, 2, 23, 59, 0, 7))["value"])


def test_collect_refuses_bad_input_without_a_query(project):
    folder, _ = project
    service = MetricsService(load_project(folder))
    with pytest.raises(QueryError, match="metric 'predictions.prediction_count' reads no model with a `time:` dimension"):
        collect(service, "predictions.prediction_count", (), "hour", "1d")
    with pytest.raises(QueryError, match="--coverage: unknown metric 'scoring.coverag'"):
        collect(service, "scoring.accuracy", (), "hour", "1d", coverage="scoring.coverag")


# ---- in a real browser ------------------------------------------------------------------------

def _screenshot(chromium: str, page: Path, shot: Path, profile: Path, height: int = 1500) -> None:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
               f"--window-size=1200,{height}", "--hide-scrollbars", f"--screenshot={shot}", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]


def _png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit non-interlaced PNG, as Chromium writes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw, stride, rows, previous = zlib.decompress(idat), width * (3 if colour == 2 else 4), [], bytearray(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(r[i:i + 3]) for r in rows for i in range(0, stride, bpp)]


def test_page_renders_in_headless_chromium(chromium, project, tmp_path):
    folder, _ = project
    service = MetricsService(load_project(folder))
    page = tmp_path / "report.html"
    page.write_text(render(collect(service, "scoring.accuracy", ("predictions.model_version",), "hour", "2d",
                                   as_of=dt.datetime(2026, 5, 2, 23, 59))), encoding="utf-8")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0 and dom.stdout.count("<polyline") >= 4, dom.stderr[-2000:]  # value + estimate, 2 versions
    shot = tmp_path / "report.png"
    _screenshot(chromium, page, shot, tmp_path / "profile")
    width, height, pixels = _png_pixels(shot)
    colours = set(pixels)
    assert width == 1200 and len(colours) > 50, "the screenshot is blank"
    # The charts' line colours (the first two of the palette) are drawn.
    assert bytes.fromhex("0072B2") in colours and bytes.fromhex("D55E00") in colours


def test_docs_screenshot_over_the_demo(chromium, tmp_path):
    """The page over the demo data (as in docs/monitoring.md); METRICS_LAYER_UPDATE_DOCS=1 keeps it."""
    from conftest import DEMO_END, make_project

    from metrics_layer.demo_data import generate_duckdb

    generate_duckdb(str(tmp_path / "demo.duckdb"), leads=100_000, end=DEMO_END, progress=lambda _: None)
    folder = make_project(tmp_path / "demo", f"duckdb:///{tmp_path / 'demo.duckdb'}")
    service = MetricsService(load_project(folder))
    data = collect(service, "conversion_3h.accuracy", ("predictions.model_version",), "hour", "7d",
                   as_of=DEMO_END - dt.timedelta(days=11), min_coverage=0.1)
    assert len(data.groups) == 2, "the demo's v1 and v2 overlap in this range"
    page = tmp_path / "report.html"
    page.write_text(render(data), encoding="utf-8")
    shot = tmp_path / "report.png"
    _screenshot(chromium, page, shot, tmp_path / "profile", height=1420)
    assert len(set(_png_pixels(shot)[2])) > 50
    if os.environ.get("METRICS_LAYER_UPDATE_DOCS") == "1":
        shutil.copy(shot, REPO / "docs" / "report.png")
