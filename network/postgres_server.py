"""The consortium host's PostgreSQL: a private cluster of the run folder, for custodian stores that outgrow SQLite.

Debian's `postgresql` package (scripts/bootstrap installs it) provides the binaries; we do not use its system
cluster. `start` makes a cluster in run/data/postgres with `initdb` on first use (superuser `careledger`, SCRAM
password from the libpq password file `topology.postgres_passfile`, C locale), runs `postgres` in the foreground
on the services host at port base + 301 with no Unix socket, and `wait_ready` creates one database per member org (the
org's name in lower case: `records.settings.org_database`). PostgreSQL refuses to run as root, so when we are root
the server runs as the `postgres` system user the Debian package creates, which must be able to reach the run folder.
It is stopped with SIGINT (fast shutdown: sessions are ended and a checkpoint is written).

A store uses it when its URL says so: `CARELEDGER_STORE_URL=<topology.postgres_url("{org}")>` (see `records.settings`).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import sql

from consortium.errors import NetworkError, ToolMissing
from consortium.processes import ManagedProcess, ensure_port_free
from consortium.secrets import read_secret, write_secret
from consortium.topology import Topology
from records.settings import org_database

NAME = "postgres"
SUPERUSER = "careledger"
OS_USER = "postgres"  # created by Debian's postgresql-common
STOP_SIGNAL = signal.SIGINT


class _Postgres(ManagedProcess):
    """A managed process that can drop root for another system user, as PostgreSQL requires."""

    def start_as(self, user: str | None, argv: list[str], launcher: list[str] | None = None) -> int:
        """Start as `user`; in a network namespace, the launcher enters it as root and setpriv then drops to `user`
        before exec (the pid stays the server's)."""
        if launcher:
            if user is not None:
                launcher = [*launcher, "setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--"]
            argv, user = [*launcher, *argv], None
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n===== start {time.strftime('%Y-%m-%dT%H:%M:%S')} =====\n".encode())
            log.flush()
            proc = subprocess.Popen(
                as_user(user, argv),
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        binary = os.path.realpath(next(a for a in argv if a.endswith("/postgres")))
        _until_exec(proc, binary)
        # The same pid file ManagedProcess writes, so `careledger network down` finds and stops it.
        self.pid_file.write_text(f"{proc.pid}\n{binary}\n")
        return proc.pid

    def stop(self, timeout: float = 30.0, sig: signal.Signals = STOP_SIGNAL) -> bool:
        return super().stop(timeout, sig)


def _until_exec(proc: subprocess.Popen[bytes], binary: str, timeout: float = 10.0) -> None:
    """Return once the child runs `binary` (setpriv has dropped the ids and exec'd it) or has exited: until then the
    pid belongs to setpriv, and a check of the pid file would take the server for one that is not running."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{proc.pid}/exe").removesuffix(" (deleted)") == binary:
                return
        except OSError:
            pass
        time.sleep(0.002)


def as_user(user: str | None, argv: list[str]) -> list[str]:
    """`argv` run as the system `user` (and only its own group), or unchanged for None.

    setpriv drops the ids in the child rather than Python's `subprocess(user=...)`: asking Python to change ids
    makes it fork() instead of vfork(), and fork() runs the fork handlers of libraries already loaded in this
    process (the gRPC core's among them), which can abort the child before it ever runs the program.
    """
    if user is None:
        return argv
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
    if setpriv is None:
        raise ToolMissing("setpriv (util-linux) is not installed")
    account = pwd.getpwnam(user)
    return [setpriv, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups", "--", *argv]


def process(topology: Topology) -> _Postgres:
    return _Postgres(NAME, topology.pid_file(NAME), topology.log_file(NAME))


def bindir() -> Path:
    """Where Debian keeps the server binaries (not on PATH): the newest /usr/lib/postgresql/<version>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    on_path = shutil.which("postgres")
    binary = found[-1] if found else on_path
    if binary is None or not Path(binary).with_name("initdb").exists():
        raise ToolMissing("PostgreSQL is not installed; run scripts/bootstrap (it installs Debian's postgresql)")
    return Path(binary).parent


def _run_as() -> str | None:
    """The system user the server runs as: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        raise ToolMissing(f"there is no {OS_USER!r} system user; run scripts/bootstrap (Debian's postgresql)") from None
    return OS_USER


def _password(topology: Topology) -> str:
    write_secret(topology.postgres_passfile, f"*:*:*:{SUPERUSER}:{secrets.token_hex(24)}\n".encode())
    return read_secret(topology.postgres_passfile, "the PostgreSQL password file").decode().strip().rsplit(":", 1)[1]


def _let_through(topology: Topology, data: Path) -> None:
    """The run folder is private; the PostgreSQL server's own user must still pass through it (and through
    data/) to the folder it owns. Passing through (o+x) is all it gets: it cannot list or read anything else."""
    for folder in (topology.home, data.parent):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(folder.stat().st_mode | stat.S_IXOTH)


def _reachable(path: Path, user: str) -> None:
    """Fail with a sentence when `user` cannot reach `path` (a run folder under /root, say)."""
    account = pwd.getpwnam(user)
    groups = {account.pw_gid} | {g for g in os.getgrouplist(user, account.pw_gid)}
    for parent in reversed(path.parents):
        st = parent.stat()
        if st.st_uid == account.pw_uid:
            continue
        if st.st_mode & stat.S_IXOTH or (st.st_gid in groups and st.st_mode & stat.S_IXGRP):
            continue
        raise NetworkError(
            f"PostgreSQL runs as the {user!r} user, which cannot enter {parent}; put the run folder"
            f" (CARELEDGER_HOME) where that user can reach it, or allow it in: chmod o+x {parent}"
        )


def _initdb(topology: Topology, user: str | None) -> None:
    data = topology.data_dir(NAME)
    if (data / "PG_VERSION").exists():
        return
    password = _password(topology)
    if data.exists():
        shutil.rmtree(data)  # an initdb that did not finish
    data.mkdir(parents=True, mode=0o700)
    pwfile = data.parent / f".{NAME}-initdb-password"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if user is not None:
        _reachable(data, user)
        account = pwd.getpwnam(user)
        for p in (data, pwfile):
            os.chown(p, account.pw_uid, account.pw_gid)
    argv = [
        str(bindir() / "initdb"),
        "-D", str(data),
        f"--username={SUPERUSER}",
        "--auth=scram-sha-256",
        f"--pwfile={pwfile}",
        "--encoding=UTF8",
        "--locale=C",
        "--no-instructions",
    ]  # fmt: skip
    try:
        done = subprocess.run(as_user(user, argv), capture_output=True, text=True, check=False)
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise NetworkError(f"initdb failed for {data}:\n{(done.stdout + done.stderr).strip()[-2000:]}")


def hba_lines(topology: Topology) -> list[str]:
    """Who may connect, every one of them with the SCRAM password: the services host's own networks (`samenet`: its
    loopback, or the subnet its address is on, where the operator's tools dial it from) and every member org's host
    as the consortium definition places it (a routed network is not the same net)."""
    hosts = sorted({topology.services_host, *(o.host for o in topology.member_orgs)})
    lines = ["host all all samenet scram-sha-256"]
    lines += [f"host all all {h}/{128 if ':' in h else 32} scram-sha-256" for h in hosts if h != "localhost"]
    return lines


def _write_hba(topology: Topology, user: str | None) -> None:
    """pg_hba.conf from the consortium definition, on every start (initdb's allows 127.0.0.1 alone)."""
    path = topology.data_dir(NAME) / "pg_hba.conf"
    path.write_text(
        "# written by careledger (network/postgres_server.py) on every start\n" + "\n".join(hba_lines(topology)) + "\n"
    )
    path.chmod(0o600)
    if user is not None:
        account = pwd.getpwnam(user)
        os.chown(path, account.pw_uid, account.pw_gid)


def start(topology: Topology) -> bool:
    """Start the run folder's PostgreSQL unless it runs (making its cluster on first use). True when started."""
    proc = process(topology)
    user = _run_as()
    if user is not None:  # also for a server already running: it opens its files for as long as it runs
        _let_through(topology, topology.data_dir(NAME))
    if proc.running():
        return False
    binaries = bindir()
    _initdb(topology, user)
    _write_hba(topology, user)
    ensure_port_free(NAME, topology.services_host, topology.postgres_port, wait=5)
    argv = [
        str(binaries / "postgres"),
        "-D", str(topology.data_dir(NAME)),
        "-p", str(topology.postgres_port),
        "-c", f"listen_addresses={topology.services_host}",
        "-c", "unix_socket_directories=",
        "-c", "max_connections=200",
    ]  # fmt: skip
    proc.start_as(user, argv, topology.launcher_of(None))
    return True


def url(topology: Topology, database: str = "postgres") -> str:
    return topology.postgres_url(database)


def ready(topology: Topology) -> bool:
    try:
        with psycopg.connect(url(topology), connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def wait_ready(topology: Topology, timeout: float = 30.0) -> None:
    """Wait until the server takes connections, then make sure every member org has its database."""
    process(topology).wait_until(lambda: ready(topology), "accepting connections", timeout)
    ensure_databases(topology, [org_database(o) for o in topology.member_orgs])


def ensure_databases(topology: Topology, names: list[str]) -> list[str]:
    """Create the databases that do not exist yet; returns those created."""
    made = []
    with psycopg.connect(url(topology), autocommit=True) as db:
        for name in names:
            if db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                made.append(name)
    return made


def stop(topology: Topology) -> bool:
    return process(topology).stop()
