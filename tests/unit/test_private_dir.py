"""A private folder is 0700; bringing the network up again keeps the passage PostgreSQL's own user has through it."""

from __future__ import annotations

import stat
from pathlib import Path

from consortium.secrets import private_dir


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
