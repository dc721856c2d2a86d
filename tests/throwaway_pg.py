"""A PostgreSQL instance of the test's own: initdb into a temp folder, its own port.

For the engine-fault tests (restart, kill, freeze with SIGSTOP), which must never touch the
shared server on 5432. initdb refuses to run as root: as root, the instance is made and run
as the `postgres` system user (runuser).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayPostgres:
    def __init__(self, max_connections: int = 40):
        self.initdb, self.pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if not self.initdb or not self.pg_ctl:
            if os.environ.get("CI") == "true":
                pytest.fail("initdb/pg_ctl are required in CI for the engine-fault tests")
            pytest.skip("initdb/pg_ctl not found")
        self.folder = tempfile.mkdtemp(prefix="ml_pg_")
        self.data = os.path.join(self.folder, "data")
        self.log = os.path.join(self.folder, "log")
        self.port = _free_port()
        self.max_connections = max_connections
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = list(args)
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def create(self) -> "ThrowawayPostgres":
        self._run(self.initdb, "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.folder}'\n"
                       f"max_connections = {self.max_connections}\nfsync = off\nshared_buffers = 16MB\n")
        return self.start()

    def start(self) -> "ThrowawayPostgres":
        self._run(self.pg_ctl, "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", self.data, "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self) -> None:
        self._run(self.pg_ctl, "-D", self.data, "-m", "fast", "-l", self.log, "-w", "-t", "60", "restart")

    def postmaster_pid(self) -> int:
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def _processes(self) -> list[int]:
        """The postmaster and its children (backends included)."""
        root = self.postmaster_pid()
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(root)], capture_output=True, text=True).stdout
        return [root] + [int(p) for p in out.split()]

    def freeze(self) -> list[int]:
        pids = self._processes()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    def thaw(self, pids: list[int]) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def sql(self, statement: str):
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=30) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else None

    def client_connections(self, application_name: str | None = None) -> int:
        """Client backends other than this query's own."""
        where = "backend_type = 'client backend' AND pid <> pg_backend_pid()"
        if application_name is not None:
            where += f" AND application_name = '{application_name}'"
        return self.sql(f"SELECT count(*) FROM pg_stat_activity WHERE {where}")[0][0]

    def destroy(self) -> None:
        try:
            self.thaw(self._processes())
        except (OSError, ValueError):
            pass
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
        time.sleep(0)
