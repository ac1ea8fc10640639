"""Fabric's admin command-line tools (peer, osnadmin), run with an org admin's identity over mutual TLS."""

from __future__ import annotations

import socket
import subprocess

from consortium.errors import CommandFailed
from consortium.topology import Node, Org, Topology
from network.binaries import FabricBinaries
from network.nodes import base_env

TIMEOUT = 120.0


class Admin:
    def __init__(self, topology: Topology, binaries: FabricBinaries) -> None:
        self.topology = topology
        self.binaries = binaries

    def peer_env(self, org: Org, peer: Node | None = None) -> dict[str, str]:
        """The peer CLI as the org's admin (from the org's home), talking to its own peer unless told another. An
        ordering org's admin has no peer: its env serves commands that only reach orderers (`channel update`)."""
        t = self.topology
        admin_tls = t.user_dir(org) / "tls"
        env = {
            **base_env(self.binaries),
            "FABRIC_LOGGING_SPEC": "warning",
            "CORE_PEER_LOCALMSPID": org.msp_id,
            "CORE_PEER_MSPCONFIGPATH": str(t.user_dir(org) / "msp"),
            "CORE_PEER_TLS_ENABLED": "true",
            "CORE_PEER_TLS_CLIENTAUTHREQUIRED": "true",
            "CORE_PEER_TLS_CLIENTCERT_FILE": str(admin_tls / "client.crt"),
            "CORE_PEER_TLS_CLIENTKEY_FILE": str(admin_tls / "client.key"),
        }
        if peer is None and org.is_orderer:
            return env
        peer = peer or t.peer_of(org)
        env["CORE_PEER_ADDRESS"] = peer.address
        env["CORE_PEER_TLS_ROOTCERT_FILE"] = str(t.tls_ca_cert(peer.org))
        return env

    def orderer_flags(self, org: Org, orderer: Node | None = None) -> list[str]:
        """Flags for peer commands that send a transaction to the ordering service."""
        t = self.topology
        orderer = orderer or self.reachable_orderer()
        admin_tls = t.user_dir(org) / "tls"
        return [
            "-o", orderer.address,
            "--tls", "--cafile", str(t.tls_ca_cert(t.orderer_org)),
            "--clientauth", "--certfile", str(admin_tls / "client.crt"), "--keyfile", str(admin_tls / "client.key"),
        ]  # fmt: skip

    def reachable_orderer(self) -> Node:
        """The first orderer that accepts a connection: the peer CLI takes one endpoint, so fail over here."""
        for orderer in self.topology.orderers:
            try:
                with socket.create_connection((orderer.host, orderer.port), timeout=1):
                    return orderer
            except OSError:
                continue
        return self.topology.orderers[0]

    def peer(self, org: Org, args: list[str], step: str, peer: Node | None = None) -> str:
        argv = [self.binaries.tool("peer"), *args]
        return _run(step, argv, self.peer_env(org, peer))

    def osnadmin(self, orderer: Node, args: list[str], step: str) -> str:
        t = self.topology
        admin_tls = t.user_dir(t.orderer_org) / "tls"
        argv = [
            self.binaries.tool("osnadmin"), *args,
            "-o", f"{orderer.host}:{orderer.second_port}",
            "--ca-file", str(t.tls_ca_cert(t.orderer_org)),
            "--client-cert", str(admin_tls / "client.crt"),
            "--client-key", str(admin_tls / "client.key"),
        ]  # fmt: skip
        return _run(step, argv, base_env(self.binaries))


def _run(step: str, argv: list[str], env: dict[str, str]) -> str:
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise CommandFailed(step, argv, f"timed out after {TIMEOUT:.0f}s") from e
    if proc.returncode != 0:
        raise CommandFailed(step, argv, proc.stdout + proc.stderr)
    return proc.stdout + proc.stderr
