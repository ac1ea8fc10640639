"""A newcomer's mistakes get a sentence that says what to run, a non-zero exit, and never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

UNUSED_PORT_BASE = "39000"

NOT_SET_UP = [
    (["network", "status"], "the network is not running; run `careledger network up` first"),
    (["network", "check"], "run `careledger network up` first"),
    (["gateway", "start"], "run `careledger network up` first"),
    (["gateway", "serve", "--org", "HospitalOrg"], "run `careledger network up` first"),
    (["gateway", "token", "--org", "HospitalOrg"], "run `careledger network up` first"),
    (["gateway", "token", "--org", "Nope"], "there is no member org 'Nope'; the members are HospitalOrg, ClinicOrg"),
    (["worker", "start"], "run `careledger network up` first"),
    (["worker", "listen", "--org", "InsurerOrg"], "run `careledger network up` first"),
    (["worker", "run", "--org", "InsurerOrg"], "run `careledger network up` first"),
    (["demo"], "run `careledger network up` first"),
]


def careledger(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CARELEDGER_HOME": str(home), "CARELEDGER_PORT_BASE": UNUSED_PORT_BASE}
    return subprocess.run(
        [sys.executable, "-m", "careledger.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(("args", "says"), NOT_SET_UP, ids=[" ".join(a) for a, _ in NOT_SET_UP])
def test_a_command_on_a_machine_without_a_network_says_what_to_run(tmp_path: Path, args: list[str], says: str) -> None:
    done = careledger(tmp_path / "run", *args)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output
    assert says in output
