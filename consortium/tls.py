"""TLS between member gateways: each presents the gateway certificate its org's TLS CA issued, and trusts the TLS CAs
of every member (the CAs in the channel configuration, as each org published them). The CA that issued a caller's
certificate names its org.

Membership and certificates change while gateways and workers run. Every context made here (and any server
context handed to `trust_members`) is remembered; when `refresh_members` finds the consortium definition changed,
it adds the new members' TLS CAs to each of them, so new connections trust a new member without a restart (OpenSSL
reads the context's trust store at each handshake). Likewise a renewed TLS pair of the org's own (`present`) is
loaded into the contexts that present it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import weakref
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from consortium.topology import Org, Topology

_lock = threading.Lock()
_followed: weakref.WeakKeyDictionary[ssl.SSLContext, set[str]] = weakref.WeakKeyDictionary()
_synced: weakref.WeakKeyDictionary[Topology, int] = weakref.WeakKeyDictionary()


def member_cas(topology: Topology) -> str:
    """Every member org's TLS CA certificate, as one PEM bundle."""
    paths = [topology.tls_ca_cert(o) for o in topology.member_orgs]
    return "".join(p.read_text() for p in paths if p.exists())


def _fingerprints(topology: Topology) -> dict[str, str]:
    """Member TLS CA certificates by SHA-256 fingerprint (PEM)."""
    out: dict[str, str] = {}
    for org in topology.member_orgs:
        path = topology.tls_ca_cert(org)
        if path.exists():
            pem = path.read_text()
            fp = x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()
            out[fp] = pem
    return out


def trust_members(ctx: ssl.SSLContext, topology: Topology) -> ssl.SSLContext:
    """Make `ctx` trust every member's TLS CA now, and every new member's once `refresh_members` sees it."""
    with _lock:
        known = _followed.setdefault(ctx, set())
        for fp, pem in _fingerprints(topology).items():
            if fp not in known:
                ctx.load_verify_locations(cadata=pem)
                known.add(fp)
    return ctx


_own: weakref.WeakKeyDictionary[ssl.SSLContext, tuple[Path, Path, int]] = weakref.WeakKeyDictionary()


def present(ctx: ssl.SSLContext, cert: Path, key: Path) -> ssl.SSLContext:
    """Load the org's own TLS pair into `ctx`, and again whenever `refresh_members` sees it renewed."""
    with _lock:
        ctx.load_cert_chain(cert, key)
        _own[ctx] = (cert, key, cert.stat().st_mtime_ns)
    return ctx


def _reload_own() -> None:
    with _lock:
        for ctx, (cert, key, seen) in list(_own.items()):
            with contextlib.suppress(OSError):
                now = cert.stat().st_mtime_ns
                if now != seen:
                    ctx.load_cert_chain(cert, key)  # new handshakes present the renewed certificate
                    _own[ctx] = (cert, key, now)


def refresh_members(topology: Topology) -> bool:
    """Re-read the consortium definition; if it changed since the contexts were last brought up to date (here or
    by a lookup of an unknown name), every followed context trusts the current members' CAs. True when it changed."""
    topology.refresh()
    _reload_own()
    with _lock:
        if _synced.get(topology, 0) == topology.generation:
            return False
        _synced[topology] = topology.generation
    cas = _fingerprints(topology)
    with _lock:
        for ctx, known in list(_followed.items()):
            for fp, pem in cas.items():
                if fp not in known:
                    ctx.load_verify_locations(cadata=pem)
                    known.add(fp)
    return True


async def follow_members(topology: Topology, every_s: float = 2.0) -> None:
    """Refresh forever (a gateway runs this as a background task)."""
    while True:
        with contextlib.suppress(OSError, ValueError):
            refresh_members(topology)
        await asyncio.sleep(every_s)


def member_client_context(topology: Topology, org: Org) -> ssl.SSLContext:
    """For calling other members' gateways as `org`: trust every member's TLS CA, present the org's certificate."""
    tls = topology.gateway_tls_dir(org)
    ctx = ssl.create_default_context(cadata=member_cas(topology))
    present(ctx, tls / "server.crt", tls / "server.key")
    return trust_members(ctx, topology)


def member_url(topology: Topology, msp: str) -> str:
    """The base URL of a member's gateway (an org not known yet makes the definition be read again)."""
    org = topology.org(msp)
    refresh_members(topology)  # a new member's URL: its CA must be trusted by the time it is called
    return topology.gateway_url(org)
