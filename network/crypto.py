"""Identities for every org, node and admin, generated once per run folder with cryptogen.

NodeOUs are on, so a certificate's OU says its role (admin, peer, client, orderer) and policies can name roles.
Every TLS certificate carries the IP SAN of the node's host, so clients can dial 127.0.0.1 without overrides.
cryptogen writes its folders world-readable; every `up` tightens the tree (folders 0700, private keys 0600).
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from consortium.errors import CommandFailed
from consortium.secrets import private_dir, tighten_tree, write_secret
from consortium.topology import Org, Topology
from network.binaries import FabricBinaries


def _sans(topology: Topology) -> list[str]:
    return [topology.host, "localhost"]


def cryptogen_config(topology: Topology) -> dict[str, Any]:
    sans = _sans(topology)

    def org_entry(org: Org, hosts: list[str], users: int) -> dict[str, Any]:
        return {
            "Name": org.name,
            "Domain": org.domain,
            "EnableNodeOUs": True,
            "Specs": [{"Hostname": h, "SANS": sans} for h in hosts],
            "Users": {"Count": users},
        }

    orderer_hosts = [n.short for n in topology.orderers]
    # Each member org gets User1 (its applications: gateway, workers) and User2 (in tests, another plain client).
    peer_orgs = [org_entry(org, ["peer0"], 2) for org in topology.member_orgs]
    # The chaincode server's TLS identity: server cert for the chaincode process, Admin's TLS cert as the client
    # certificate peers present when they dial it.
    peer_orgs.append(org_entry(topology.chaincode_tls_org, ["server"], 0))
    return {
        "OrdererOrgs": [org_entry(topology.orderer_org, orderer_hosts, 0)],
        "PeerOrgs": peer_orgs,
    }


def ensure(topology: Topology, binaries: FabricBinaries) -> bool:
    """Generate crypto material unless the run folder has it already. Returns True when it generated. Either way,
    no private key is left readable by anyone but its owner."""
    marker = topology.crypto_dir / ".complete"
    if marker.exists():
        tighten_tree(topology.crypto_dir)
        return False
    private_dir(topology.crypto_dir)
    config = topology.generated_config_dir / "crypto-config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(cryptogen_config(topology), sort_keys=False))
    argv = [binaries.tool("cryptogen"), "generate", f"--config={config}", f"--output={topology.crypto_dir}"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CommandFailed("cryptogen", argv, proc.stdout + proc.stderr)
    tighten_tree(topology.crypto_dir)
    marker.write_text("ok\n")
    return True


def ensure_gateway_tls(topology: Topology, org: Org) -> bool:
    """Issue the org's gateway TLS certificate from the org's own TLS CA, unless it exists. Returns True when issued.

    One key pair serves both directions: the gateway's HTTPS server, and the client side of mutual TLS when it calls
    another member's gateway. Other members trust it because it chains to the org's TLS CA in the channel config.
    """
    out = topology.gateway_tls_dir(org)
    if (out / "server.crt").exists():
        return False
    ca_dir = topology.tls_ca_cert(org).parent
    ca_cert = x509.load_pem_x509_certificate(topology.tls_ca_cert(org).read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "priv_sk").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    name = f"gateway.{org.domain}"
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(name), x509.DNSName("localhost")]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(topology.host)))
    except ValueError:
        sans.append(x509.DNSName(topology.host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, org.domain),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(ca_cert.not_valid_after_utc)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_dir(out.parent)
    (out / "server.key").unlink(missing_ok=True)  # a key without its certificate is from an interrupted run
    write_secret(out / "server.key", key_pem)
    (out / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return True
