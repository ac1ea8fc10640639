"""An org's certificates as its operators watch them: which, issued by whom, and how long until each expires.

Read from the org's crypto material in the run folder (public certificates only; no key is opened). Each
certificate is listed once however many folders hold a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from consortium.topology import Org, Topology

WARN_DAYS = 30  # a certificate expiring within this many days is flagged


@dataclass(frozen=True)
class CertificateInfo:
    role: str  # what it is for: "CA", "TLS CA", "peer0 TLS", "User1 signing", ...
    subject: str  # the common name
    issuer: str
    not_after: datetime
    days_left: int
    fingerprint: str  # SHA-256, hex

    @property
    def status(self) -> str:
        if self.days_left < 0:
            return "expired"
        return "expiring" if self.days_left <= WARN_DAYS else "ok"


def _common_name(name: x509.Name) -> str:
    found = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(found[0].value) if found else name.rfc4514_string()


def _role(org_dir: Path, path: Path) -> str:
    """A readable role from where the certificate sits in the org's folder."""
    parts = path.relative_to(org_dir).parts
    if parts[0] == "ca":
        return "CA"
    if parts[0] == "tlsca":
        return "TLS CA"
    if parts[0] == "gateway":
        return "gateway TLS"
    holder = parts[1].split(".")[0].split("@")[0] if len(parts) > 1 else parts[0]
    return f"{holder} {'TLS' if 'tls' in parts else 'signing'}"


def _certificate_files(org_dir: Path) -> list[Path]:
    files = [*org_dir.glob("ca/*-cert.pem"), *org_dir.glob("tlsca/*-cert.pem"), *org_dir.glob("gateway/tls/server.crt")]
    for holder in ("peers", "users"):
        files += org_dir.glob(f"{holder}/*/msp/signcerts/*.pem")
        files += [*org_dir.glob(f"{holder}/*/tls/server.crt"), *org_dir.glob(f"{holder}/*/tls/client.crt")]
    return sorted(files)


def of_org(topology: Topology, org: Org, now: datetime | None = None) -> list[CertificateInfo]:
    """Every certificate of the org, soonest expiry first."""
    now = now or datetime.now(UTC)
    org_dir = topology.org_dir(org)
    seen: dict[str, CertificateInfo] = {}
    for path in _certificate_files(org_dir):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()
        if fingerprint in seen:
            continue
        not_after = cert.not_valid_after_utc
        seen[fingerprint] = CertificateInfo(
            role=_role(org_dir, path),
            subject=_common_name(cert.subject),
            issuer=_common_name(cert.issuer),
            not_after=not_after,
            days_left=(not_after - now).days,
            fingerprint=fingerprint,
        )
    return sorted(seen.values(), key=lambda c: (c.not_after, c.role))
