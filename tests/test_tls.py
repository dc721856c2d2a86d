"""The server's own TLS: `sql: {tls_cert, tls_key}` and `http: {tls_cert, tls_key}` in the project
file. A real `metrics-layer serve` process with a self-signed certificate made by openssl;
psycopg connects with sslmode=verify-full, httpx over https verifying the certificate."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import time

import httpx
import psycopg
import pytest

from conftest import REPO, make_project


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, demo_duckdb_path):
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificate")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(folder / "server.key"),
                    "-out", str(folder / "server.crt")], check=True, capture_output=True)
    http_port, sql_port = _free_port(), _free_port()
    make_project(folder, f"duckdb:///{demo_duckdb_path}",
                 f"http: {{port: {http_port}, tls_cert: server.crt, tls_key: server.key}}\n"
                 f"sql: {{port: {sql_port}, auth: trust, tls_cert: server.crt, tls_key: server.key}}\n")
    process = subprocess.Popen([sys.executable, "-m", "metrics_layer.cli", "serve", "--project", str(folder)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(REPO))
    url = f"https://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 120  # only against a hang
    while True:
        try:
            if httpx.get(f"{url}/health", verify=ssl.create_default_context(cafile=str(folder / "server.crt")), timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"serve did not start: {process.stdout.read()}")
        time.sleep(0.2)
    yield folder, url, sql_port
    process.terminate()
    process.wait(60)


def test_sql_endpoint_over_tls(tls_server):
    folder, _, sql_port = tls_server
    dsn = (f"host=127.0.0.1 port={sql_port} user=tls dbname=metrics sslmode=verify-full "
           f"sslrootcert={folder / 'server.crt'} connect_timeout=30")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT lead_count FROM conversion_monitoring").fetchone()[0] > 0


def test_http_over_tls(tls_server):
    folder, url, _ = tls_server
    response = httpx.post(f"{url}/api/v1/query", json={"metrics": ["leads.lead_count"]}, verify=ssl.create_default_context(cafile=str(folder / "server.crt")), timeout=30)
    assert response.status_code == 200 and response.json()["rows"][0]["leads.lead_count"] > 0
    with pytest.raises(httpx.TransportError):
        httpx.get(url.replace("https", "http") + "/health", timeout=10)  # plain HTTP is not served on that port


def test_a_missing_key_file_is_a_clear_error(tmp_path):
    make_project(tmp_path, '"duckdb:///:memory:"', "sql: {tls_cert: nope.crt, tls_key: nope.key}\n")
    result = subprocess.run([sys.executable, "-m", "metrics_layer.cli", "serve", "--project", str(tmp_path)],
                            capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert result.returncode != 0
    assert "sql.tls_cert" in result.stderr and "nope.crt" in result.stderr and "Traceback" not in result.stderr, result.stderr
