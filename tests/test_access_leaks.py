"""With API keys set, what is served without a key (the GraphiQL page, /health) holds nothing
a key protects: no view or field names, no project folder, no engine URL."""

from __future__ import annotations

import pytest

from http_server import project_over, serve_project
from metrics_layer.serve.auth import ApiKeys, hash_key

httpx = pytest.importorskip("httpx")

KEY = "k-very-secret-1"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, demo_duckdb_path):
    folder = project_over(tmp_path_factory.mktemp("keyed_secret_folder"), f"duckdb:///{demo_duckdb_path}")
    live = serve_project(folder, keys=ApiKeys([hash_key(KEY)]))
    yield live, folder
    live.stop()


def _names(live) -> list[str]:
    from metrics_layer.views import public_views

    model = live.service.model
    views = public_views(model)
    names = list(views)
    for view in views.values():
        names += [f.name for f in view.dimensions] + [f.name for f in view.metrics]
    return sorted(set(names), key=len, reverse=True)


def test_graphiql_page_without_a_key_names_no_view_or_field(keyed):
    live, _ = keyed
    page = httpx.get(f"{live.url}/graphql", headers={"Accept": "text/html"}, timeout=30)
    assert page.status_code == 200 and "GraphiQL" in page.text
    leaked = [n for n in _names(live) if len(n) > 4 and n in page.text]
    assert leaked == [], leaked
    assert httpx.post(f"{live.url}/graphql", json={"query": "{ catalog { views { name } } }"}, timeout=30).status_code == 401


def test_health_without_a_key_shows_no_folder_or_engine(keyed, demo_duckdb_path):
    live, folder = keyed
    public = httpx.get(f"{live.url}/health", timeout=30)
    assert public.status_code == 200 and public.json()["status"] == "ok"
    for secret in (str(folder), str(demo_duckdb_path), "duckdb:", "keyed_secret_folder"):
        assert secret not in public.text, secret
    assert public.json()["engine"] == {"reachable": True}
    full = httpx.get(f"{live.url}/health", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert full.json()["model"]["directory"].startswith(str(folder))
    wrong = httpx.get(f"{live.url}/health", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert "directory" not in wrong.text


def test_without_keys_health_and_graphiql_stay_detailed(tmp_path, demo_duckdb_path):
    live = serve_project(project_over(tmp_path, f"duckdb:///{demo_duckdb_path}"))
    try:
        assert "directory" in httpx.get(f"{live.url}/health", timeout=30).json()["model"]
        page = httpx.get(f"{live.url}/graphql", headers={"Accept": "text/html"}, timeout=30).text
        assert any(name in page for name in _names(live))
    finally:
        live.stop()
