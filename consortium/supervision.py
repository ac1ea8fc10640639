"""The long-running processes of the member orgs — FHIR gateways, chain-event listeners, Celery workers — run under
supervisord (the `supervisor` package), which restarts any that dies.

One supervisord per run folder, started on first use by `careledger gateway start` or `careledger worker start` and
stopped by `careledger network down` (which stops its programs first). Its files are in `<run>/supervisor/`: the
configuration, its control socket (0700 folder), and one program file per process, written when the process is
started and read by supervisord then. Programs are restarted whenever they exit (`autorestart`); one that keeps
dying within START_SECS of its start is retried after 1 s, 2 s, 3 s, ... and given up on (FATAL) after START_RETRIES
tries. Their output goes to `<run>/logs/<name>.log`, as before.

`Supervised` has the interface `ManagedProcess` has (pid, running, stop, wait_until, log_tail), so callers and
tests do not care who keeps a process alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import signal
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consortium.errors import NetworkError, NodeUnhealthy
from consortium.processes import ManagedProcess
from consortium.secrets import private_dir, replace_secret
from consortium.topology import REPO_ROOT, Topology

NAME = "supervisord"
START_SECS = 3  # a program that lives this long has started; one that dies sooner is retried with backoff
START_RETRIES = 20  # waits of 1 + 2 + ... + 20 s: about three and a half minutes before giving up
STOP_WAIT_S = 30  # a worker finishes its running tasks; then KILL
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")  # plus every CARELEDGER_* variable

# supervisord's process states (supervisor.states.ProcessStates), by name
UP_STATES = {"STARTING", "RUNNING"}
DOWN_STATES = {"STOPPED", "EXITED", "FATAL", "UNKNOWN"}


class SupervisorError(NetworkError):
    """supervisord could not be started or did not do what it was asked."""


@dataclass(frozen=True)
class Program:
    name: str  # e.g. worker-InsurerOrg
    argv: list[str]
    env: dict[str, str]
    cwd: Path = REPO_ROOT

    def launcher(self, topology: Topology) -> list[str]:
        """Programs are named <kind>-<Org> (gateway-HospitalOrg): each runs where its org's processes run (its
        network namespace, if the consortium definition gives it one)."""
        _kind, _, org = self.name.partition("-")
        return topology.launcher_of(topology.org(org)) if org and topology.has_org(org) else []

    def conf(self, topology: Topology) -> str:
        for key, value in self.env.items():
            if any(c in value for c in '"\n\r'):
                raise SupervisorError(f"{self.name}: the environment variable {key} has a quote or newline")
        env = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(self.env.items()))
        log = topology.log_file(self.name)
        return "\n".join(
            [
                f"[program:{self.name}]",
                f"command={_escape(shlex.join([*self.launcher(topology), *self.argv]))}",
                f"directory={_escape(str(self.cwd))}",
                f"environment={env}",
                "autostart=false",
                "autorestart=true",
                f"startsecs={START_SECS}",
                f"startretries={START_RETRIES}",
                "stopsignal=TERM",
                f"stopwaitsecs={STOP_WAIT_S}",
                "stopasgroup=true",
                "killasgroup=true",
                "redirect_stderr=true",
                f"stdout_logfile={_escape(str(log))}",
                "stdout_logfile_maxbytes=50MB",
                "stdout_logfile_backups=3",
                "",
            ]
        )


def _escape(value: str) -> str:
    """supervisord expands %(name)s in its configuration: a literal % is %%."""
    return value.replace("%", "%%")


def program_env(topology: Topology, **extra: str) -> dict[str, str]:
    """What a program inherits: the caller's CARELEDGER_* settings and locale, and the run folder and port base."""
    keep = {k: v for k, v in os.environ.items() if k in PASSED_ENV or k.startswith("CARELEDGER_")}
    return {
        **keep,
        "PYTHONUNBUFFERED": "1",  # log lines reach the log file as they are written
        "CARELEDGER_HOME": str(topology.home),
        "CARELEDGER_PORT_BASE": str(topology.port_base),
        **extra,
    }


# ----- supervisord itself ---------------------------------------------------------------------------------------


def _socket(topology: Topology) -> Path:
    return topology.supervisor_dir / "supervisor.sock"


def _programs_dir(topology: Topology) -> Path:
    return topology.supervisor_dir / "programs"


def daemon(topology: Topology) -> ManagedProcess:
    return ManagedProcess(NAME, topology.pid_file(NAME), topology.log_file(NAME))


def _main_conf(topology: Topology) -> str:
    d = topology.supervisor_dir
    return "\n".join(
        [
            "[unix_http_server]",
            f"file={_escape(str(_socket(topology)))}",
            "chmod=0700",
            "",
            "[supervisord]",
            "nodaemon=true",
            "silent=true",  # its own log file only, not also on stdout
            f"logfile={_escape(str(topology.log_file(NAME)))}",
            "logfile_maxbytes=10MB",
            f"pidfile={_escape(str(d / 'supervisord.pid'))}",
            f"childlogdir={_escape(str(topology.log_file(NAME).parent))}",
            f"directory={_escape(str(REPO_ROOT))}",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[include]",
            f"files={_escape(str(_programs_dir(topology)))}/*.conf",
            "",
        ]
    )


def _proxy(topology: Topology) -> Any:
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{_socket(topology)}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def _answers(topology: Topology) -> bool:
    try:
        return bool(_proxy(topology).getState()["statename"] == "RUNNING")
    except (OSError, xmlrpc.client.Error):
        return False


def ensure_daemon(topology: Topology) -> Any:
    """supervisord for this run folder, started if it is not running; returns its RPC interface. Two commands
    starting it at once (`gateway start` and `worker start`) start one: the second waits on a lock."""
    proc = daemon(topology)
    private_dir(topology.supervisor_dir)
    with (topology.supervisor_dir / "start.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not proc.running():
            private_dir(_programs_dir(topology))
            conf = topology.supervisor_dir / "supervisord.conf"
            replace_secret(conf, _main_conf(topology).encode())
            _socket(topology).unlink(missing_ok=True)
            argv = [sys.executable, "-m", "supervisor.supervisord", "--configuration", str(conf)]
            env = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
            proc.start(argv, env, cwd=REPO_ROOT)
        proc.wait_until(lambda: _answers(topology), "answering on its socket", timeout=20)
    return _proxy(topology)


def running(topology: Topology) -> bool:
    return daemon(topology).running() and _answers(topology)


def shutdown(topology: Topology, timeout: float = 3 * STOP_WAIT_S) -> bool:
    """Stop every program (each gets STOP_WAIT_S to finish), then supervisord. True when it was running."""
    proc = daemon(topology)
    if not proc.running():
        proc.stop()
        return False
    with contextlib.suppress(OSError, xmlrpc.client.Error):
        _proxy(topology).stopAllProcesses(True)
    return proc.stop(timeout=timeout)


def all_programs(topology: Topology) -> list[dict[str, Any]]:
    """supervisord's view of every program: name, statename, pid, description... ([] when it is not running)."""
    if not running(topology):
        return []
    try:
        return list(_proxy(topology).getAllProcessInfo())
    except (OSError, xmlrpc.client.Error):
        return []


# ----- one supervised program -----------------------------------------------------------------------------------


class Supervised:
    """A program under supervisord, with ManagedProcess's interface."""

    def __init__(self, topology: Topology, name: str) -> None:
        self.topology = topology
        self.name = name
        self.log_file = topology.log_file(name)

    def info(self) -> dict[str, Any] | None:
        """supervisord's record of the program, or None (supervisord not running, or the program never added)."""
        if not daemon(self.topology).running():
            return None
        try:
            return dict(_proxy(self.topology).getProcessInfo(self.name))
        except (OSError, xmlrpc.client.Error):
            return None

    def state(self) -> str:
        info = self.info()
        return str(info["statename"]) if info else "NOT STARTED"

    def pid(self) -> int | None:
        info = self.info()
        return int(info["pid"]) if info and info["statename"] in UP_STATES and info["pid"] else None

    def running(self) -> bool:
        return self.state() in UP_STATES

    def start(self, program: Program) -> bool:
        """Add (or refresh) the program and start it unless it runs; True when started. Does not wait for health."""
        state = self.state()
        if state in UP_STATES:
            return False
        rpc = ensure_daemon(self.topology)
        if state == "BACKOFF":  # failing to start: stop it, so the new program file applies
            with contextlib.suppress(xmlrpc.client.Fault):
                rpc.stopProcess(self.name, True)
        replace_secret(_programs_dir(self.topology) / f"{self.name}.conf", program.conf(self.topology).encode())
        [[added, changed, _removed]] = rpc.reloadConfig()
        if self.name in changed:
            with contextlib.suppress(xmlrpc.client.Fault):
                rpc.removeProcessGroup(self.name)
        if self.name in added or self.name in changed:
            try:
                rpc.addProcessGroup(self.name)
            except xmlrpc.client.Fault as e:
                if "ALREADY_ADDED" not in e.faultString:
                    raise SupervisorError(f"supervisord did not add {self.name}: {e.faultString}") from e
        try:
            rpc.startProcess(self.name, False)
        except xmlrpc.client.Fault as e:
            if "ALREADY_STARTED" not in e.faultString:
                raise SupervisorError(f"supervisord did not start {self.name}: {e.faultString}") from e
        return True

    def stop(self, timeout: float = STOP_WAIT_S, sig: signal.Signals = signal.SIGTERM) -> bool:
        """Stop the program and keep it stopped (supervisord sends TERM, then KILL after STOP_WAIT_S). True when
        it was running. `timeout` and `sig` are ManagedProcess's; supervisord's settings decide instead."""
        del timeout, sig
        if not self.running():
            return False
        try:
            _proxy(self.topology).stopProcess(self.name, True)
        except xmlrpc.client.Fault as e:
            if "NOT_RUNNING" not in e.faultString:
                raise SupervisorError(f"supervisord did not stop {self.name}: {e.faultString}") from e
        return True

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> int:
        """Signal the program's process directly, as a crash would; supervisord restarts it. Returns the pid."""
        pid = self.pid()
        if pid is None:
            raise SupervisorError(f"{self.name} is not running")
        os.kill(pid, sig)
        return pid

    def log_tail(self, lines: int = 40) -> str:
        return ManagedProcess(self.name, Path(os.devnull), self.log_file).log_tail(lines)

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll check() until it holds; fail with the log tail if the program stops or keeps failing to start."""
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            state = self.state()
            if state in DOWN_STATES or state == "BACKOFF":
                raise NodeUnhealthy(self.name, f"supervisord reports it {state}", self.log_tail())
            if time.monotonic() > deadline:
                raise NodeUnhealthy(self.name, f"not {what} after {timeout:.0f}s", self.log_tail())
            time.sleep(0.1)
