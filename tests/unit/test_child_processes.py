"""Child processes are started so that Python can vfork: no process of ours asks `subprocess` to switch user or group
or to run code before exec. Those make Python fork() instead, and fork() runs the fork handlers of the libraries
already loaded (the gRPC core's among them), which can abort the child before it runs the program — seen as
PostgreSQL's initdb dying with "Check failed: next_worker->state == KICKED". Ids are dropped by setpriv instead
(`network.postgres_server.as_user`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from consortium.topology import REPO_ROOT
from network import postgres_server

PACKAGES = ["fabric_gateway", "consortium", "ledger", "records", "network", "gateway", "workers", "careledger", "bench"]
FORKING = {"user", "group", "extra_groups", "preexec_fn", "umask"}
STARTERS = {"run", "Popen", "call", "check_call", "check_output"}


def child_process_calls(path: Path) -> list[tuple[int, set[str]]]:
    """(line, forking keywords) of every subprocess call in the file that passes one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        keywords = {k.arg for k in node.keywords if k.arg in FORKING}
        if name in STARTERS and keywords:
            found.append((node.lineno, keywords))
    return found


def test_no_child_process_is_started_in_a_way_that_makes_python_fork() -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line} passes {sorted(keywords)}"
        for package in PACKAGES
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        for line, keywords in child_process_calls(path)
    ]
    assert not offenders, offenders


def test_ids_are_dropped_by_setpriv_in_the_child() -> None:
    argv = ["/usr/lib/postgresql/bin/initdb", "-D", "/x"]
    assert postgres_server.as_user(None, argv) == argv
    try:
        wrapped = postgres_server.as_user("postgres", argv)
    except KeyError:
        pytest.skip("no postgres system user on this machine")
    assert Path(wrapped[0]).name == "setpriv" and "--clear-groups" in wrapped
    assert wrapped[wrapped.index("--") + 1 :] == argv
