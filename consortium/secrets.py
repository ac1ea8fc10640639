"""Secret files: created once by the set-up (`careledger network up`), only read by the processes that use them.

Every secret is a file of mode 0600 in a folder of mode 0700. A process that finds one missing stops with a sentence
that says which set-up step makes it, rather than creating a key of its own that no other process would share.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from consortium.errors import NetworkError


class SecretMissing(NetworkError):
    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"{what} is missing ({path}); run `careledger network up` first")
        self.path = path


def read_secret(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SecretMissing(path, what) from None


def private_dir(path: Path, keep: int = 0) -> None:
    """Create `path` and any missing parents; the folder itself is 0700, plus the bits of `keep` it already has."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700 | (path.stat().st_mode & keep))


def replace_secret(path: Path, data: bytes) -> None:
    """Write a secret file (0600, in a 0700 folder), replacing what is there; readers see the old or the new file."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def is_key_file(path: Path) -> bool:
    """Whether a file of a Fabric identity tree (cryptogen's layout) holds a private key."""
    return path.parent.name == "keystore" or path.name.endswith(("_sk", ".key"))


def tighten_tree(root: Path) -> int:
    """Make every folder under `root` (itself included) 0700 and every private key file 0600, for trees that tools
    outside our control write with their own modes (cryptogen). Returns how many modes it changed."""
    changed = 0
    if not root.exists():
        return 0
    for folder, _dirs, files in os.walk(root):
        here = Path(folder)
        if here.stat().st_mode & 0o777 != 0o700:
            here.chmod(0o700)
            changed += 1
        for name in files:
            path = here / name
            if is_key_file(path) and path.stat().st_mode & 0o077:
                path.chmod(0o600)
                changed += 1
    return changed


def write_secret(path: Path, data: bytes) -> bool:
    """Write a secret file (0600, in a 0700 folder) unless it exists; True when written. Safe against a concurrent
    writer: the first file linked into place wins."""
    if path.exists():
        return False
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return True
