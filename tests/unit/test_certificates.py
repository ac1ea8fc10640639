"""The certificate list operators watch (the console's network page): status by days left, each certificate once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consortium import certificates
from consortium import topology as topo


def _write_cert(path: Path, name: str, not_after: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - timedelta(days=365))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_expiring_and_expired_certificates_are_flagged_soonest_first(tmp_path: Path) -> None:
    t = topo.load(home=tmp_path, port_base=40000)
    org = t.org("HospitalOrg")
    now = datetime(2026, 11, 26, tzinfo=UTC)
    org_dir = t.org_dir(org)
    _write_cert(org_dir / "ca" / "ca.hospital-cert.pem", "ca.hospital", now + timedelta(days=3650))
    _write_cert(org_dir / "tlsca" / "tlsca.hospital-cert.pem", "tlsca.hospital", now + timedelta(days=12))
    _write_cert(org_dir / "peers" / "peer0.hospital" / "tls" / "server.crt", "peer0.hospital", now - timedelta(days=2))
    # The same certificate in a second folder is listed once.
    copy = org_dir / "users" / "Admin@hospital" / "msp" / "signcerts" / "Admin-cert.pem"
    copy.parent.mkdir(parents=True)
    copy.write_bytes((org_dir / "ca" / "ca.hospital-cert.pem").read_bytes())

    found = certificates.of_org(t, org, now)

    assert [(c.role, c.subject, c.status) for c in found] == [
        ("peer0 TLS", "peer0.hospital", "expired"),
        ("TLS CA", "tlsca.hospital", "expiring"),
        ("CA", "ca.hospital", "ok"),
    ]
    assert [c.days_left for c in found] == [-2, 12, 3650]
