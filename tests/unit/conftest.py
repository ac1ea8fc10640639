"""Store backends for unit tests: every test that takes `stores` runs once on SQLite and once on PostgreSQL.

PostgreSQL is the project's own private cluster (`network.postgres_server`), started once per session in a folder
under /tmp on a free port, with one database for the session and a schema per store. It is skipped only when
PostgreSQL is not installed at all; scripts/test runs scripts/bootstrap, which installs it.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consortium import topology as topo
from consortium.errors import ToolMissing
from network import org_secrets, postgres_server, redis_server
from records.store import Store

BACKENDS = ["sqlite", "postgresql"]
UNIT_DATABASE = "unit"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres() -> Iterator[topo.Topology]:
    """The project's PostgreSQL for this test session."""
    try:
        postgres_server.bindir()
    except ToolMissing as e:
        pytest.skip(str(e))
    home = Path(tempfile.mkdtemp(prefix="careledger-unit-postgres-"))
    home.chmod(0o711)  # the server runs as the postgres user when we are root: it must reach home/data/postgres
    t = topo.load(home=home, port_base=free_port() - topo.POSTGRES_PORT)
    postgres_server.start(t)
    try:
        postgres_server.process(t).wait_until(lambda: postgres_server.ready(t), "accepting connections", 60)
        postgres_server.ensure_databases(t, [UNIT_DATABASE])
        yield t
    finally:
        postgres_server.stop(t)
        shutil.rmtree(home, ignore_errors=True)


class Stores:
    """Store locations of one backend for one test: a file per name (SQLite) or a schema per name (PostgreSQL)."""

    def __init__(self, backend: str, tmp_path: Path, pg: topo.Topology | None) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.pg = pg
        self.schemas: list[str] = []
        self._suffix = uuid.uuid4().hex[:10]

    def location(self, name: str = "store") -> str:
        if self.pg is None:
            return f"sqlite://{self.tmp_path / f'{name}.sqlite'}"
        schema = f"t_{self._suffix}_{name.lower()}"
        if schema not in self.schemas:
            with psycopg.connect(self.pg.postgres_url(UNIT_DATABASE), autocommit=True) as db:
                db.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            self.schemas.append(schema)
        return f"{self.pg.postgres_url(UNIT_DATABASE)}&options=-csearch_path%3D{schema}"

    def open(self, key: bytes = b"m" * 32, name: str = "store") -> Store:
        return Store(self.location(name), key)

    def sql(self, statement: str, args: tuple[Any, ...] = (), name: str = "store") -> list[tuple[Any, ...]]:
        """Run SQL on the store's database behind its back (`?` placeholders); the rows it returns."""
        if self.pg is None:
            db = sqlite3.connect(self.tmp_path / f"{name}.sqlite")
            try:
                rows = db.execute(statement, args).fetchall()
                db.commit()
                return rows
            finally:
                db.close()
        with psycopg.connect(self.location(name), autocommit=True) as pg:
            cur = pg.execute(statement.replace("?", "%s"), args)
            return cur.fetchall() if cur.description else []

    def cleanup(self) -> None:
        if self.pg is None or not self.schemas:
            return
        with psycopg.connect(self.pg.postgres_url(UNIT_DATABASE), autocommit=True) as db:
            for schema in self.schemas:
                db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    pg = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    found = Stores(request.param, tmp_path, pg)
    yield found
    found.cleanup()


@pytest.fixture(scope="module")
def redis_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[topo.Topology]:
    """A real Redis of its own, on a free port, for the tests of one module, with the org users' passwords."""
    t = topo.load(home=tmp_path_factory.mktemp("redis"), port_base=free_port() - topo.REDIS_PORT)
    org_secrets.ensure(t)
    redis_server.start(t)
    redis_server.wait_ready(t)
    yield t
    redis_server.process(t).stop()
