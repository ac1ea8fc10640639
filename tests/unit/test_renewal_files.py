"""Renewing a node's certificates on disk: the same keys by default (a renewal before expiry), new ones on request."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from consortium import topology as topo
from network import certs, crypto
from tests.unit import made_certs


def _ca(folder: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert, key = made_certs.ca(name)
    folder.mkdir(parents=True)
    (folder / f"{name}-cert.pem").write_bytes(crypto.pem(cert))
    (folder / "priv_sk").write_bytes(crypto.key_pem(key))
    return cert, key


def _spki(cert_file: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(der, spki)


def _serial(cert_file: Path) -> int:
    return x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number


@pytest.mark.parametrize(("new_keys", "same_key"), [(False, True), (True, False)])
def test_a_renewed_node_keeps_its_keys_unless_asked_for_new_ones(
    tmp_path: Path, new_keys: bool, same_key: bool
) -> None:
    t = topo.load(home=tmp_path, port_base=40000)
    node = t.orderers[0]
    org = node.org
    enrol_ca = _ca(t.org_dir(org) / "ca", f"ca.{org.domain}")
    tls_ca = _ca(t.own_tls_ca_cert(org).parent, f"tlsca.{org.domain}")
    d = t.node_dir(node)
    cert, key = crypto.issue(enrol_ca, node.tls_hostname, tls=False, ou=node.kind)
    (d / "msp" / "signcerts").mkdir(parents=True)
    (d / "msp" / "keystore").mkdir(parents=True)
    signcert = d / "msp" / "signcerts" / f"{node.tls_hostname}-cert.pem"
    signcert.write_bytes(crypto.pem(cert))
    (d / "msp" / "keystore" / "priv_sk").write_bytes(crypto.key_pem(key))
    tls_cert, tls_key = crypto.issue(tls_ca, node.tls_hostname, tls=True, san=[node.tls_hostname])
    crypto.write_pair(d / "tls", "server", tls_cert, tls_key)
    before = {p: (_spki(p), _serial(p)) for p in (signcert, d / "tls" / "server.crt")}

    certs._renew_node_files(t, node, new_keys)

    for path, (spki, serial) in before.items():
        assert _serial(path) != serial, f"{path.name} was not re-issued"
        assert (_spki(path) == spki) is same_key, path.name
    # Each certificate matches the key beside it, whichever it is.
    pairs = [(signcert, d / "msp" / "keystore" / "priv_sk"), (d / "tls" / "server.crt", d / "tls" / "server.key")]
    der, spki_format = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    for cert_file, key_file in pairs:
        assert crypto.load_key(key_file).public_key().public_bytes(der, spki_format) == _spki(cert_file)
    renewed = x509.load_pem_x509_certificate(signcert.read_bytes())
    assert renewed.issuer == enrol_ca[0].subject


def test_a_missing_key_is_made_rather_than_renewal_stopping(tmp_path: Path) -> None:
    assert certs._kept_key(tmp_path / "server.key", new_keys=False) is None
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "server.key").write_bytes(crypto.key_pem(key))
    kept = certs._kept_key(tmp_path / "server.key", new_keys=False)
    assert kept is not None and kept.private_numbers() == key.private_numbers()
    assert certs._kept_key(tmp_path / "server.key", new_keys=True) is None
