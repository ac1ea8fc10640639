"""Client identities an org issues itself with its own CA, as any member can: a patient's own certificate (a client
marked with OU `patient`), or any other client certificate."""

from __future__ import annotations

import datetime
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consortium import connect
from consortium.topology import Topology
from fabric_gateway import Gateway, Identity, ecdsa_signer

PATIENT_OU = "patient"  # the contracts' mark of a patient's own certificate (chaincode/contracts/caller.go)


def minted(network: Topology, org_name: str, name: str, *, patient: bool = False) -> tuple[Gateway, Identity]:
    """A client certificate issued by the org's CA (NodeOU `client`; with `patient`, also OU `patient`, as a
    custodian issues a patient's own certificate): a Gateway connected to the org's peer that signs as it, and the
    identity (certificate) itself. Close the Gateway when done."""
    org = network.org(org_name)
    ca_dir = network.org_dir(org) / "ca"
    ca_cert = x509.load_pem_x509_certificate(next(ca_dir.glob("*-cert.pem")).read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "priv_sk").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    units = ["client", PATIENT_OU] if patient else ["client"]
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            *(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit) for unit in units),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name}-{secrets.token_hex(4)}@{org.domain}"),
        ]
    )
    # Fabric's MSP checks a chain at the moment one second after the certificate's notBefore, not at the current
    # time; cryptogen rounds its CA's notBefore to the minute (up to 30 s later than five minutes ago), so a
    # certificate issued from "five minutes ago" in the first half-minute of a network's life would predate its CA.
    now = datetime.datetime.now(datetime.UTC)
    not_before = max(now - datetime.timedelta(minutes=5), ca_cert.not_valid_before_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    identity = Identity(org.msp_id, cert.public_bytes(serialization.Encoding.PEM))
    return Gateway(connect.endpoint(network, org), identity, ecdsa_signer(key)), identity


def organizational_units(identity: Identity) -> list[str]:
    cert = x509.load_pem_x509_certificate(identity.certificate_pem)
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]


def fingerprint(identity: Identity) -> str:
    cert = x509.load_pem_x509_certificate(identity.certificate_pem)
    return cert.fingerprint(hashes.SHA256()).hex()
