"""Failed logins are rate-limited per client address and per user name (issue 13 item 9).

Real server process, real psycopg. A burst of wrong passwords from one address: the first ones
(the configured burst, plus what refilled while the test ran) are answered 28P01 as usual, every
one beyond is refused with 53300 "too many failed login attempts"; a correct login from another
address still works; a known and an unknown user name are treated alike. The outcomes are
counted, no timing is asserted. Other addresses are real: a loopback relay in the test connects
to the server from 127.0.0.2, 127.0.0.3...
"""

from __future__ import annotations

import math
import socket
import threading
import time

import psycopg
import pytest

from conftest import make_project
from test_sql_endpoint import Endpoint

BURST = 5
PER_MINUTE = 2.0
USER_BURST = 12

PROJECT = f"""
sql:
  auth: scram-sha-256
  failed_logins:
    per_address: {{burst: {BURST}, per_minute: {PER_MINUTE}}}
    per_user: {{burst: {USER_BURST}, per_minute: {PER_MINUTE}}}
    max_delay: 0
users:
  analyst: {{password: right-pw}}
  other: {{password: other-pw}}
"""


class Relay:
    """Accepts on 127.0.0.1:<port> and forwards each connection to the server from `source`."""

    def __init__(self, source: str, target_port: int):
        self.source, self.target_port = source, target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), source_address=(self.source, 0))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_duckdb_path):
    folder = make_project(tmp_path_factory.mktemp("login_rate"), f"duckdb:///{demo_duckdb_path}", PROJECT)
    ep = Endpoint(folder).start()
    yield ep
    ep.stop()


def _dsn(port: int, user: str, password: str) -> str:
    return f"host=127.0.0.1 port={port} user={user} password={password} dbname=metrics connect_timeout=60"


def _attempt(port: int, user: str, password: str) -> str:
    """'ok', 'wrong' (28P01, password authentication failed) or 'limited' (53300)."""
    try:
        with psycopg.connect(_dsn(port, user, password)) as conn:
            conn.execute("SELECT 1")
        return "ok"
    except psycopg.OperationalError as e:
        text = str(e)
        if "too many failed login attempts" in text:
            return "limited"
        if "password authentication failed" in text:
            return "wrong"
        raise


def _burst(port: int, user: str, n: int = 60) -> tuple[dict[str, int], float]:
    started = time.monotonic()
    outcomes = [_attempt(port, user, "wrong-pw") for _ in range(n)]
    elapsed = time.monotonic() - started
    return {k: outcomes.count(k) for k in ("ok", "wrong", "limited")}, elapsed


def _allowance(elapsed: float) -> int:
    """Failures the bucket can have let through: the burst plus what refilled meanwhile."""
    return BURST + math.ceil(elapsed * PER_MINUTE / 60) + 1


def test_a_burst_of_wrong_passwords_is_refused_beyond_the_allowance(server):
    counts, elapsed = _burst(server.port, "analyst")
    assert counts["ok"] == 0
    assert BURST <= counts["wrong"] <= _allowance(elapsed), counts
    assert counts["limited"] == 60 - counts["wrong"] and counts["limited"] >= 60 - _allowance(elapsed), counts
    # This address stays refused for a while, even with the right password...
    assert _attempt(server.port, "analyst", "right-pw") == "limited"
    # ...while a correct login from another address works at once, as the same user.
    relay = Relay("127.0.0.2", server.port)
    try:
        assert _attempt(relay.port, "analyst", "right-pw") == "ok"
        with psycopg.connect(_dsn(relay.port, "analyst", "right-pw"), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").fetchone()[0] >= 2
    finally:
        relay.close()


def test_known_and_unknown_user_names_are_limited_alike(server):
    results = {}
    for source, user in (("127.0.0.3", "other"), ("127.0.0.4", "nobody_by_that_name")):
        relay = Relay(source, server.port)
        try:
            counts, elapsed = _burst(relay.port, user, 20)
            results[user] = counts
            assert counts["ok"] == 0 and BURST <= counts["wrong"] <= _allowance(elapsed), (user, counts)
            assert counts["limited"] == 20 - counts["wrong"], (user, counts)
        finally:
            relay.close()
    assert results["other"]["wrong"] - results["nobody_by_that_name"]["wrong"] in (-1, 0, 1), results


def test_a_user_name_attacked_from_many_addresses_is_limited(server):
    """Per user: failures from several addresses add up; beyond the user's burst (max_delay: 0
    here, so no delay is allowed) the attempts are refused, whatever the address."""
    wrong = limited = 0
    started = time.monotonic()
    for i in range(5):
        relay = Relay(f"127.0.1.{i + 1}", server.port)
        try:
            counts = {k: 0 for k in ("ok", "wrong", "limited")}
            for _ in range(BURST):
                counts[_attempt(relay.port, "victim", "wrong-pw")] += 1
            wrong += counts["wrong"]
            limited += counts["limited"]
        finally:
            relay.close()
    elapsed = time.monotonic() - started
    assert wrong <= USER_BURST + math.ceil(elapsed * PER_MINUTE / 60) + 1, (wrong, limited)
    assert wrong + limited == 5 * BURST and limited >= 5 * BURST - USER_BURST - math.ceil(elapsed * PER_MINUTE / 60) - 1


def test_the_limits_are_checked_in_the_project_file(tmp_path):
    from metrics_layer.project import load_project
    from metrics_layer.project import ProjectError
    from metrics_layer.serve.pgwire.endpoint import login_throttle_config

    folder = make_project(tmp_path, "\"duckdb:///:memory:\"", "sql:\n  failed_logins: {per_address: {burst: 0}}\n")
    with pytest.raises(ProjectError, match=r"sql.failed_logins.per_address.burst: must be a whole number of at least 1, got 0"):
        login_throttle_config(load_project(folder))
    (folder / "metrics_layer.yml").write_text("engine: \"duckdb:///:memory:\"\nsql:\n  failed_logins: {per_adress: {burst: 3}}\n")
    with pytest.raises(ProjectError, match="unknown key"):
        login_throttle_config(load_project(folder))
    (folder / "metrics_layer.yml").write_text("engine: \"duckdb:///:memory:\"\nsql:\n  failed_logins: {per_user: {burst: 3, per_minute: 1}}\n")
    throttle = login_throttle_config(load_project(folder))
    assert (throttle.users.burst, throttle.users.rate * 60, throttle.addresses.burst) == (3, 1.0, 10)


def test_parallel_wrong_passwords_cannot_all_pass_before_the_first_failure_counts(server):
    from concurrent.futures import ThreadPoolExecutor

    relay = Relay("127.0.2.1", server.port)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(30) as pool:
            outcomes = list(pool.map(lambda _: _attempt(relay.port, "parallel_user", "wrong-pw"), range(30)))
        elapsed = time.monotonic() - started
    finally:
        relay.close()
    assert outcomes.count("ok") == 0
    assert outcomes.count("wrong") <= _allowance(elapsed), outcomes
    assert outcomes.count("limited") == 30 - outcomes.count("wrong")


def test_a_pool_opening_many_connections_at_once_logs_in(server):
    """Only failures use the allowance: 4 x the burst of correct logins at once all succeed."""
    from concurrent.futures import ThreadPoolExecutor

    relay = Relay("127.0.3.1", server.port)
    try:
        with ThreadPoolExecutor(4 * BURST) as pool:
            outcomes = list(pool.map(lambda _: _attempt(relay.port, "other", "other-pw"), range(4 * BURST)))
    finally:
        relay.close()
    assert outcomes == ["ok"] * (4 * BURST), outcomes
