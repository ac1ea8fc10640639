"""A private folder is 0700; bringing the network up again keeps the passage PostgreSQL's own user has through it."""

from __future__ import annotations

import stat
from pathlib import Path

from consortium.secrets import private_dir
from consortium.topology import load


def test_a_private_folder_keeps_only_the_bits_asked_for(tmp_path: Path) -> None:
    home = tmp_path / "run"
    private_dir(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    home.chmod(0o755)
    private_dir(home, keep=stat.S_IXOTH)  # others lose read; the passage (o+x) a running server needs stays
    assert stat.S_IMODE(home.stat().st_mode) == 0o701
    private_dir(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    private_dir(home, keep=stat.S_IXOTH)  # keeping is not granting
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_the_run_folder_keeps_the_passage_and_each_org_home_is_closed(tmp_path: Path) -> None:
    topology = load(tmp_path / "run", port_base=40000)
    topology.home.mkdir(mode=0o711)
    topology.make_private()
    assert stat.S_IMODE(topology.home.stat().st_mode) == 0o701
    for org in topology.all_orgs:
        assert stat.S_IMODE(topology.org_home(org).stat().st_mode) == 0o700
