"""Background processes the network owns: started detached, tracked by pid file, stopped by pid.

A pid file records the pid and the executable path; a pid whose /proc entry names another executable is treated
as gone (pid reuse after a reboot), so `down` never signals a stranger.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from consortium.errors import NodeUnhealthy, PortInUse


class ManagedProcess:
    def __init__(self, name: str, pid_file: Path, log_file: Path) -> None:
        self.name = name
        self.pid_file = pid_file
        self.log_file = log_file

    def pid(self) -> int | None:
        """The running process's pid, or None when it is not running."""
        try:
            pid_text, exe = self.pid_file.read_text().split("\n", 1)
            pid = int(pid_text)
        except (FileNotFoundError, ValueError):
            return None
        state = _state(pid)
        if state is None or state == "exited":
            return None
        if state == "exiting":
            return pid  # its main thread has gone, other threads still hold files and sockets
        try:
            running = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return None
        if os.path.realpath(exe.strip()) != running.removesuffix(" (deleted)"):
            # Just started through a launcher (`ip netns exec`) that has not exec'ed the program yet?
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                return None
            if not any(cmdline):
                return pid  # in the middle of the launcher's exec of the program: /proc shows no arguments then
            real = os.path.realpath(exe.strip())
            # The program may be named by a link (a virtualenv's python): compare where each argument leads.
            if not any(os.path.realpath(a.decode(errors="replace")) == real for a in cmdline if a.startswith(b"/")):
                return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def start(
        self, argv: list[str], env: Mapping[str, str], cwd: Path | None = None, launcher: Sequence[str] = ()
    ) -> int:
        """Start `argv` detached, its output appended to the log file. `launcher` is a prefix that execs the program
        in place (`ip netns exec <ns>`), so the pid is the program's own; the pid file names the program, not it."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n===== start {time.strftime('%Y-%m-%dT%H:%M:%S')} =====\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [*launcher, *argv],
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the CLI that started it
            )
        self.pid_file.write_text(f"{proc.pid}\n{os.path.realpath(argv[0])}\n")
        return proc.pid

    def stop(self, timeout: float = 15.0, sig: signal.Signals = signal.SIGTERM) -> bool:
        """Stop the process (TERM, then KILL after timeout). Returns True when something was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _signal(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.05)
        if self.pid() is not None:
            _signal(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll check() until it holds; fail with the log tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            if not self.running():
                raise NodeUnhealthy(self.name, "the process exited", self.log_tail())
            if time.monotonic() > deadline:
                raise NodeUnhealthy(self.name, f"not {what} after {timeout:.0f}s", self.log_tail())
            time.sleep(0.1)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _state(pid: int) -> str | None:
    """'running', 'exiting', 'exited' (a zombie, reaped here if it is our child), or None when there is no pid.

    A multi-threaded program (every Go binary) shows its main thread as a zombie while its other threads are
    still exiting and holding sockets, so the process only counts as exited once no thread is left but the main one.
    """
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None
    if state != "Z":
        return "running"
    if threads > 1:
        return "exiting"
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return "exited"


def ensure_port_free(owner: str, host: str, port: int, wait: float = 0.0) -> None:
    """Fail, naming the port, when another process listens where a node is about to.

    `wait` gives a process we just stopped that long to let go of the port before it counts as taken.
    """
    deadline = time.monotonic() + wait
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
                return
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:
                    # The address is another host's or another network namespace's: ask it instead.
                    if not accepts(host, port):
                        return
                elif e.errno != errno.EADDRINUSE:
                    raise
        if time.monotonic() >= deadline:
            raise PortInUse(owner, f"{host}:{port}")
        time.sleep(0.1)


def accepts(host: str, port: int) -> bool:
    """Something accepts TCP connections on host:port (within a second)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (VmRSS), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
