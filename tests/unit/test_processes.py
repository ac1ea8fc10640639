"""Managed processes: pid files, stopping, log tails, and the fail-fast port check."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consortium.errors import NodeUnhealthy, PortInUse
from consortium.processes import ManagedProcess, ensure_port_free


def managed(tmp_path: Path) -> ManagedProcess:
    return ManagedProcess("sleeper", tmp_path / "pids" / "s.pid", tmp_path / "logs" / "s.log")


def test_start_track_and_stop(tmp_path: Path) -> None:
    proc = managed(tmp_path)
    pid = proc.start([sys.executable, "-c", "import time; time.sleep(60)"], {})
    assert proc.pid() == pid
    assert proc.stop(timeout=5)
    assert proc.pid() is None
    assert not proc.pid_file.exists()
    assert not proc.stop()  # stopping twice is harmless


def test_pid_of_another_program_is_not_ours(tmp_path: Path) -> None:
    proc = managed(tmp_path)
    proc.pid_file.parent.mkdir(parents=True)
    # pid 1 exists but runs another executable: never treat it as ours, never signal it.
    proc.pid_file.write_text("1\n/nonexistent/orderer\n")
    assert proc.pid() is None


def test_a_process_that_dies_reports_its_log(tmp_path: Path) -> None:
    proc = managed(tmp_path)
    proc.start([sys.executable, "-c", "print('config error: no MSP'); raise SystemExit(3)"], {})
    with pytest.raises(NodeUnhealthy) as err:
        proc.wait_until(lambda: False, "healthy", timeout=10)
    assert "the process exited" in str(err.value)
    assert "config error: no MSP" in err.value.log_tail


def test_timeout_names_what_was_awaited(tmp_path: Path) -> None:
    proc = managed(tmp_path)
    proc.start([sys.executable, "-c", "print('still starting', flush=True); import time; time.sleep(30)"], {})
    try:
        with pytest.raises(NodeUnhealthy, match="not healthy after 1s"):
            proc.wait_until(lambda: False, "healthy", timeout=1)
    finally:
        proc.stop()


def test_port_in_use_is_reported_with_the_address() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port} is already in use"):
            ensure_port_free("o1.orderer", "127.0.0.1", port)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2's ip")
def test_a_program_started_through_ip_netns_exec_is_running_from_the_start(tmp_path: Path) -> None:
    """While `ip netns exec` execs the program, /proc shows the launcher's executable and no arguments for a moment;
    that moment is not an exit (seen: a chaincode server declared dead one second before it served)."""
    netns = f"careledger-unit-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        for n in range(30):
            proc = ManagedProcess(f"s{n}", tmp_path / "pids" / f"{n}.pid", tmp_path / "logs" / f"{n}.log")
            proc.start(["/bin/sleep", "30"], {"PATH": "/usr/bin:/bin"}, launcher=["ip", "netns", "exec", netns])
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline:
                assert proc.running(), f"start {n}: seen as not running"
            proc.stop(timeout=5)
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)
