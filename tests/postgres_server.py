"""A real PostgreSQL for the tests: Debian's `postgresql` binaries (`./dev.sh test` installs the
package when missing), `initdb` in a temporary folder, the server on a free port of 127.0.0.1,
password authentication (scram-sha-256) for the user `docbatch`, stopped by process id.

initdb and postgres refuse to run as root; as root they run as the package's `postgres` user
(through `setpriv`, which execs: the process id the tests stop is the server's own).
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
import uuid
from pathlib import Path

import psycopg

USER = "docbatch"
PASSWORD = "pg-secret-9f3c1d"


def _binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return found[-1] if found else shutil.which(name)


def available() -> bool:
    return _binary("initdb") is not None and _binary("postgres") is not None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """`with PostgresServer() as pg:` a running server; `pg.url(database)` for SQLAlchemy."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="docbatch-pg-"))
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self._as = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]  # execs: the pid is the server's

    def __enter__(self) -> PostgresServer:
        initdb, postgres = _binary("initdb"), _binary("postgres")
        assert initdb and postgres, "PostgreSQL's server binaries are missing: ./dev.sh test installs Debian's postgresql"
        pwfile = self.folder / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as:
            shutil.chown(pwfile, "postgres", "postgres")
        data = self.folder / "data"
        subprocess.run(
            [*self._as, initdb, "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-locale"],
            check=True, capture_output=True, timeout=120,
        )
        self.log = (self.folder / "postgres.log").open("wb")
        self.process = subprocess.Popen(
            [*self._as, postgres, "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.folder)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start:\n{(self.folder / 'postgres.log').read_text()[-2000:]}") from None
                time.sleep(0.2)
        return self

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} password={PASSWORD} dbname={database}"

    def url(self, database: str, *, password: bool = False) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql+psycopg://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        name = f"db_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name

    def stop(self) -> None:
        """Stop the server (a fast shutdown), by process id; the database is gone for its clients."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)
