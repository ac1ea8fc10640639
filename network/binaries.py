"""Fabric's binaries, built from the Go module proxy at the version pinned in fabric_build/go.mod.

The build lands in a cache folder outside the work tree (so a fresh clone on the same machine reuses it), named by
a stamp over everything that decides its content: go.mod, go.sum, our chaincode builder's source and the Go version.
A changed pin therefore builds afresh instead of reusing stale binaries.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from consortium.errors import BuildFailed, ToolMissing

BUILD_MODULE = Path(__file__).with_name("fabric_build")
FABRIC_COMMANDS = ("peer", "orderer", "osnadmin", "configtxgen", "configtxlator", "cryptogen")
BUILDER_PHASES = ("detect", "build", "release")
MIN_GO = (1, 24)


@dataclass(frozen=True)
class FabricBinaries:
    root: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def builder_dir(self) -> Path:
        """The external builder folder the peer is pointed at: bin/detect, bin/build, bin/release."""
        return self.root / "ccaas_builder"

    @property
    def sampleconfig(self) -> Path:
        return self.root / "sampleconfig"

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)


def cache_root() -> Path:
    explicit = os.environ.get("CARELEDGER_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "careledger"


def go_version() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolMissing("Go is not installed (need Go >= 1.24 on PATH to build Fabric)")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()
    parts = out.removeprefix("go").split(".")
    if tuple(int(p) for p in parts[:2]) < MIN_GO:
        raise ToolMissing(f"{out} is too old to build Fabric; need go{MIN_GO[0]}.{MIN_GO[1]} or newer")
    return out


def stamp(go: str) -> str:
    h = hashlib.sha256(go.encode())
    for path in sorted(BUILD_MODULE.rglob("*")):
        if path.is_file() and not path.name.endswith("_test.go"):
            h.update(path.relative_to(BUILD_MODULE).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cached() -> FabricBinaries | None:
    """The binaries if this exact version is built already; never builds."""
    target = cache_root() / f"fabric-{stamp(go_version())}"
    return FabricBinaries(target) if (target / ".complete").exists() else None


def ensure(progress: Callable[[str], None] = print) -> FabricBinaries:
    """Return the cached binaries, building them first when the cache lacks this exact version."""
    go = go_version()
    target = cache_root() / f"fabric-{stamp(go)}"
    binaries = FabricBinaries(target)
    if (target / ".complete").exists():
        return binaries
    progress(f"building Fabric binaries with {go} (first run only; a few minutes)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="fabric-build-", dir=target.parent))
    try:
        _build(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (target / ".complete").write_text(go + "\n")
    return binaries


def _build(out: Path) -> None:
    bin_dir = out / "bin"
    bin_dir.mkdir(parents=True)
    pkgs = [f"github.com/hyperledger/fabric/cmd/{c}" for c in FABRIC_COMMANDS]
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
    _go(["build", "-trimpath", "-o", str(bin_dir) + "/", "./ccaasbuilder", *pkgs], env)
    builder_bin = out / "ccaas_builder" / "bin"
    builder_bin.mkdir(parents=True)
    for phase in BUILDER_PHASES:
        shutil.copy2(bin_dir / "ccaasbuilder", builder_bin / phase)
    # Fabric's own sampleconfig, from the downloaded module: the base every node's env overrides apply to.
    module_dir = _go(["list", "-m", "-f", "{{.Dir}}", "github.com/hyperledger/fabric"], env).strip()
    shutil.copytree(Path(module_dir) / "sampleconfig", out / "sampleconfig")
    for path in (out / "sampleconfig").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _go(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(["go", *args], cwd=BUILD_MODULE, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildFailed(f"go {' '.join(args[:2])} failed:\n{proc.stderr.strip()[-4000:]}")
    return proc.stdout
