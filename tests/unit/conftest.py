"""Store backends for unit tests: every test that takes `stores` runs once on SQLite and once on PostgreSQL.

PostgreSQL is the project's own private cluster (`network.postgres_server`), started once per session in a folder
under /tmp on a free port, with one database for the session and a schema per store. It is skipped only when
PostgreSQL is not installed at all; scripts/test runs scripts/bootstrap, which installs it.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from consortium import topology as topo
from consortium.errors import ToolMissing
from network import org_secrets, postgres_server, redis_server
from tests.stores import Stores

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


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    pg = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    found = Stores(request.param, tmp_path, pg, UNIT_DATABASE)
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
