"""Hot reload: edit the YAML of a running server; the new metric appears in GraphQL and REST;
a broken edit keeps the old model serving and shows its errors, with file:line, in /health."""

from __future__ import annotations

import httpx
import pytest
import yaml

from http_server import project_over, serve_project, wait_for

NEW_METRIC = {
    "name": "lead_count_twice",
    "description": "Twice the number of leads (added while the server runs).",
    "type": "derived",
    "expr": "2 * leads.lead_count",
}


@pytest.fixture()
def running(tmp_path, demo_duckdb_path):
    folder = project_over(tmp_path, f"duckdb:///{demo_duckdb_path}")
    live = serve_project(folder, watch=True, interval=0.1)
    yield live, folder / "metrics" / "conversion.yml"
    live.stop()


def edit(path, change) -> str:
    document = yaml.safe_load(path.read_text())
    change(document)
    text = yaml.safe_dump(document, sort_keys=False)
    path.write_text(text)
    return text


def add_metric(document, metric=NEW_METRIC):
    document["metrics"].append(dict(metric))
    view = next(v for v in document["views"] if v["name"] == "conversion_monitoring")
    if metric["name"] not in view["metrics"]:
        view["metrics"].append(metric["name"])


def graphql(live, query: str) -> dict:
    return httpx.post(f"{live.url}/graphql", json={"query": query}, timeout=30).json()


def test_a_new_metric_appears_and_a_broken_edit_keeps_the_old_model(running):
    live, conversion = running
    before = graphql(live, "{ conversion_monitoring { lead_count_twice } }")
    assert "Cannot query field 'lead_count_twice'" in before["errors"][0]["message"]

    edit(conversion, add_metric)
    answer = wait_for(lambda: "data" in (doc := graphql(live, "{ conversion_monitoring { lead_count lead_count_twice } }")) and doc,
                      what="the new metric in GraphQL")
    row = answer["data"]["conversion_monitoring"][0]
    assert row["lead_count_twice"] == 2 * row["lead_count"] > 0
    rest = httpx.post(f"{live.url}/api/v1/query", json={"metrics": ["lead_count_twice"]}).json()
    assert rest["rows"] == [{"lead_count_twice": row["lead_count_twice"]}]
    types = graphql(live, '{ __type(name: "ConversionMonitoring") { fields { name description } } }')["data"]["__type"]
    assert {"name": "lead_count_twice", "description": NEW_METRIC["description"]} in types["fields"]
    health = httpx.get(f"{live.url}/health").json()
    assert health["last_reload_errors"] == [] and health["model"]["metrics"] == 62

    # Break it: a metric over a measure that does not exist.
    broken = {"name": "broken_metric", "type": "simple", "measure": "leads.no_such_measure"}
    text = edit(conversion, lambda d: add_metric(d, broken))
    health = wait_for(lambda: (h := httpx.get(f"{live.url}/health").json())["last_reload_errors"] and h,
                      what="the reload error in /health")
    error = health["last_reload_errors"][0]
    lines = text.splitlines()
    bad_line = next(i for i, line in enumerate(lines, 1) if "leads.no_such_measure" in line)
    assert error["file"].endswith("conversion.yml") and "no_such_measure" in error["message"]
    assert abs(error["line"] - bad_line) <= 2, (error, bad_line)  # file:line points at the broken metric
    assert f"conversion.yml:{error['line']}" in error["text"]
    assert health["status"] == "degraded" and "stale" in health["model"]["status"]
    # The old model keeps serving, new metric included.
    still = graphql(live, "{ conversion_monitoring { lead_count_twice } }")
    assert still["data"]["conversion_monitoring"][0]["lead_count_twice"] == row["lead_count_twice"]
    assert "Cannot query field 'broken_metric'" in graphql(live, "{ conversion_monitoring { broken_metric } }")["errors"][0]["message"]

    # Fix it: the errors clear.
    def remove_broken(document):
        document["metrics"] = [m for m in document["metrics"] if m["name"] != "broken_metric"]
        for view in document["views"]:
            view["metrics"] = [m for m in view["metrics"] if m != "broken_metric"]

    edit(conversion, remove_broken)
    wait_for(lambda: httpx.get(f"{live.url}/health").json()["last_reload_errors"] == [], what="the errors to clear")


def test_yaml_syntax_error_and_a_new_file(running):
    live, conversion = running
    original = conversion.read_text()
    conversion.write_text(original + "\n  - name: [unclosed\n")
    health = wait_for(lambda: (h := httpx.get(f"{live.url}/health").json())["last_reload_errors"] and h,
                      what="the syntax error in /health")
    assert health["last_reload_errors"][0]["file"].endswith("conversion.yml") and health["last_reload_errors"][0]["line"]
    assert graphql(live, "{ conversion_monitoring { lead_count } }")["data"]["conversion_monitoring"][0]["lead_count"] > 0
    conversion.write_text(original)
    extra = conversion.parent / "extra.yml"
    extra.write_text(yaml.safe_dump({"metrics": [{"name": "lead_total", "type": "simple", "measure": "leads.lead_count",
                                                  "description": "All leads."}]}))
    wait_for(lambda: any(m["name"] == "lead_total" for m in httpx.get(f"{live.url}/api/v1/catalog").json()["metrics"]),
             what="the metric of a new file in the catalog")
    assert httpx.get(f"{live.url}/health").json()["last_reload_errors"] == []


# ---- an editor's save: a file written in pieces, truncated then rewritten (issue 13 item 8) ----

def _clients(live, stop, outcomes: list, errors: list) -> list:
    import threading

    def run(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                try:
                    if i % 2:
                        r = client.post(f"{live.url}/graphql", json={"query": "{ conversion_monitoring { model_version accuracy lead_count } }"})
                        ok = r.status_code == 200 and "errors" not in r.json() and r.json()["data"]["conversion_monitoring"]
                    else:
                        r = client.post(f"{live.url}/api/v1/query", json={"metrics": ["accuracy", "leads.lead_count"]})
                        ok = r.status_code == 200 and r.json()["rows"][0]["leads.lead_count"] > 0
                except Exception as e:  # noqa: BLE001 - every failure counts
                    ok, r = False, e
                outcomes.append(bool(ok))
                if not ok:
                    errors.append(getattr(r, "text", repr(r))[:300])

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    return threads


def _write_slowly(path, text: str, pieces: int, pause: float) -> None:
    """Truncate `path`, then write `text` in `pieces` flushed parts with a pause between them."""
    import os
    import time

    size = -(-len(text) // pieces)
    with open(path, "w", encoding="utf-8") as f:  # truncates: for a moment the file is empty
        f.flush()
        time.sleep(pause)
        for start in range(0, len(text), size):
            f.write(text[start:start + size])
            f.flush()
            os.fsync(f.fileno())
            time.sleep(pause)


def test_a_file_written_slowly_in_pieces_is_never_served_half_written(tmp_path, demo_duckdb_path):
    """Clients query in a loop while conversion.yml is truncated and rewritten in ten pieces,
    with pauses longer than a poll (the old one-poll settle loaded the half-written file): no
    client ever sees an error, and the new metric appears once the file is complete."""
    import threading

    from http_server import LiveServer
    from metrics_layer.project import load_project
    from metrics_layer.serve.http import create_app
    from metrics_layer.serve.reload import ModelWatcher
    from metrics_layer.service import MetricsService

    folder = project_over(tmp_path, f"duckdb:///{demo_duckdb_path}", "reload: {debounce: 1.0}\n")
    conversion = folder / "metrics" / "conversion.yml"
    service = MetricsService(load_project(folder))
    watcher = ModelWatcher(service, interval=0.1).start()
    assert watcher.debounce == 1.0  # from the project file
    live = LiveServer(create_app(service, watcher=watcher), service, watcher).start()
    stop, outcomes, errors = threading.Event(), [], []
    threads = _clients(live, stop, outcomes, errors)
    try:
        document = yaml.safe_load(conversion.read_text())
        add_metric(document)
        new_text = yaml.safe_dump(document, sort_keys=False)
        wait_for(lambda: len(outcomes) >= 8, what="clients running")
        _write_slowly(conversion, new_text, pieces=10, pause=0.15)
        answer = wait_for(lambda: "data" in (doc := graphql(live, "{ conversion_monitoring { lead_count lead_count_twice } }")) and doc,
                          what="the new metric once the file is complete")
        row = answer["data"]["conversion_monitoring"][0]
        assert row["lead_count_twice"] == 2 * row["lead_count"] > 0
        reloads = watcher.reloads
        # An editor's save again: truncate, pause, write everything back (the original file).
        _write_slowly(conversion, new_text.replace("lead_count_twice", "lead_count_doubled"), pieces=3, pause=0.15)
        wait_for(lambda: "data" in graphql(live, "{ conversion_monitoring { lead_count_doubled } }"),
                 what="the renamed metric")
        seen = len(outcomes)
        wait_for(lambda: len(outcomes) >= seen + 8, what="more client requests after the reloads")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        live.stop()
    assert errors == [], (len(errors), errors[:3])
    assert len(outcomes) >= 16 and all(outcomes)
    # One reload per complete save: no half-written state was ever loaded as a model.
    assert watcher.reloads == reloads + 1 and reloads == 1, (reloads, watcher.reloads)
    assert watcher.last_reload_errors == []
