"""Identities: each org makes its own, in its own home, and nobody else ever holds its keys.

An org's CA, TLS CA, nodes, admin and users come from cryptogen run for that org alone (`<home>/crypto`). Further
TLS identities of the org — its FHIR gateway and its chaincode server — are issued here from the org's own TLS CA, and
so are renewed certificates (network/certs.py): CA code of our own on `cryptography`.

NodeOUs are on, so a certificate's OU says its role (admin, peer, client, orderer) and policies can name roles.
Every TLS certificate carries the org's host (an IP SAN when it is an address), so clients dial nodes by address.
cryptogen writes its folders world-readable; every `up` tightens the tree (folders 0700, private keys 0600).
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from consortium.errors import CommandFailed, NetworkError
from consortium.secrets import private_dir, replace_secret, tighten_tree
from consortium.topology import Org, Topology
from network.binaries import FabricBinaries

USERS = 2  # User1: the org's applications (gateway, workers); User2: in tests, another plain client


def sans(org: Org) -> list[str]:
    return [org.host, "localhost"]


def cryptogen_config(topology: Topology, org: Org) -> dict[str, Any]:
    """cryptogen's input for one org: its nodes (with the org's host as SAN), its admin and users."""
    hosts = [n.short for n in topology.nodes_of(org)]
    entry = {
        "Name": org.name,
        "Domain": org.domain,
        "EnableNodeOUs": True,
        "Specs": [{"Hostname": h, "SANS": sans(org)} for h in hosts],
        "Users": {"Count": 0 if org.is_orderer else USERS},
    }
    return {"OrdererOrgs": [entry]} if org.is_orderer else {"PeerOrgs": [entry]}


def ensure_org(topology: Topology, binaries: FabricBinaries, org: Org) -> bool:
    """Generate the org's identities in its own home unless they exist. Returns True when it generated. Either way,
    no private key is left readable by anyone but its owner."""
    out = topology.crypto_dir(org)
    marker = out / ".complete"
    if marker.exists():
        tighten_tree(out)
        return False
    private_dir(topology.org_home(org))
    private_dir(out)
    config = out / "crypto-config.yaml"
    config.write_text(yaml.safe_dump(cryptogen_config(topology, org), sort_keys=False))
    argv = [binaries.tool("cryptogen"), "generate", f"--config={config}", f"--output={out}"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CommandFailed(f"cryptogen for {org.name}", argv, proc.stdout + proc.stderr)
    tighten_tree(out)
    marker.write_text("ok\n")
    return True


def ensure(topology: Topology, binaries: FabricBinaries) -> list[Org]:
    """Every org's identities (each in its own home); returns the orgs generated now."""
    return [org for org in topology.all_orgs if ensure_org(topology, binaries, org)]


# ----- issuing from an org's own CAs --------------------------------------------------------------------------


def load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A cryptogen CA folder (ca/ or tlsca/): its certificate and its key (priv_sk)."""
    cert_file = next(p for p in sorted(ca_dir.glob("*-cert.pem")))
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return cert, load_key(ca_dir / "priv_sk")


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An unencrypted PEM EC private key, as cryptogen and `write_pair` write them."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise NetworkError(f"{path} does not hold an EC private key")
    return key


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def issue(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    common_name: str,
    *,
    tls: bool,
    san: list[str] | None = None,
    ou: str | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    not_after: datetime.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate from one of the org's CAs, in cryptogen's profile: an enrolment certificate (digital
    signature, the NodeOU role as OU) or a TLS certificate (server and client auth, SANs). A new P-256 key unless
    `key` is given. Valid until `not_after` (default: ten years, never past the CA's own expiry)."""
    ca_cert, ca_key = ca
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC).replace(second=0, microsecond=0)
    end = min(not_after or now + datetime.timedelta(days=3650), ca_cert.not_valid_after_utc)
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "California"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "San Francisco"),
    ]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    try:  # name the CA's own key identifier (cryptogen's CAs use SHA-256 of the key, not RFC 5280's SHA-1)
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    builder = builder.add_extension(aki, critical=False)
    if tls:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(_general_names(san)), critical=False)
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    encoding, fmt = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, fmt, serialization.NoEncryption())


def write_pair(out: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """<stem>.key (0600) then <stem>.crt, each replaced atomically: a reader sees the old or the new file."""
    private_dir(out)
    replace_secret(out / f"{stem}.key", key_pem(key))
    tmp = out / f".{stem}.crt.new"
    tmp.write_bytes(pem(cert))
    tmp.replace(out / f"{stem}.crt")


def _ensure_tls_pair(topology: Topology, org: Org, out: Path, name: str, stem: str = "server") -> bool:
    if (out / f"{stem}.crt").exists() and (out / f"{stem}.key").exists():
        return False
    ca = load_ca(topology.own_tls_ca_cert(org).parent)
    cert, key = issue(ca, name, tls=True, san=[name, *sans(org)])
    write_pair(out, stem, cert, key)
    return True


def ensure_gateway_tls(topology: Topology, org: Org) -> bool:
    """Issue the org's gateway TLS certificate from the org's own TLS CA, unless it exists. Returns True when issued.

    One key pair serves both directions: the gateway's HTTPS server, and the client side of mutual TLS when it calls
    another member's gateway. Other members trust it because it chains to the org's TLS CA in the channel config.
    """
    return _ensure_tls_pair(topology, org, topology.gateway_tls_dir(org), f"gateway.{org.domain}")


def chaincode_tls_dir(topology: Topology, org: Org) -> Path:
    return topology.chaincode_home(org) / "tls"


def ensure_chaincode_tls(topology: Topology, org: Org) -> bool:
    """The org's chaincode server's TLS pair, and the client pair its peer dials it with (carried in the package,
    so that renewing the peer's own certificates does not change the package), from the org's own TLS CA."""
    out = chaincode_tls_dir(topology, org)
    made = _ensure_tls_pair(topology, org, out, f"chaincode.{org.domain}")
    return _ensure_tls_pair(topology, org, out, f"chaincode-client.{org.domain}", stem="client") or made
