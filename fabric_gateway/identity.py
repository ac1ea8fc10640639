"""Who signs: an X.509 identity (MSP id + certificate) and a signer for SHA-256 digests.

Signing is a plain function from digest to DER signature, so a caller can sign anywhere: in process with a key
file (`ecdsa_signer`), in an HSM, or offline with a patient's own key (a proposal, transaction or commit exposes
its `digest`; `Gateway.proposal_from_bytes` and friends take the signature back).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.hashes import SHA256
from fabric_protos.msp import identities_pb2

Signer = Callable[[bytes], bytes]
"""Signs a SHA-256 digest; returns a DER-encoded ECDSA signature."""

# Order of the P-256 group. Fabric rejects "high-S" signatures (s > n/2), which OpenSSL emits half the time.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_HALF_ORDER = P256_ORDER // 2


@dataclass(frozen=True)
class Identity:
    msp_id: str
    certificate_pem: bytes

    @cached_property
    def creator(self) -> bytes:
        """The serialized identity Fabric puts in signature headers and requests."""
        serialized = identities_pb2.SerializedIdentity(mspid=self.msp_id, id_bytes=self.certificate_pem)
        return bytes(serialized.SerializeToString())


def digest(message: bytes) -> bytes:
    return hashlib.sha256(message).digest()


def ecdsa_signer(private_key: ec.EllipticCurvePrivateKey) -> Signer:
    """Sign digests with a P-256 key, as Fabric wants: DER, low-S."""
    if not isinstance(private_key.curve, ec.SECP256R1):
        raise ValueError(f"only P-256 keys are supported, got {private_key.curve.name}")
    algorithm = ec.ECDSA(Prehashed(SHA256()))  # built once: building it costs a third of a signature

    def sign(message_digest: bytes) -> bytes:
        der = private_key.sign(message_digest, algorithm)
        s_at = 4 + der[3]  # DER: 0x30 len, 0x02 rlen r, 0x02 slen s (short lengths: P-256 fits)
        s = int.from_bytes(der[s_at + 2 :], "big")
        if s <= P256_HALF_ORDER:
            return der
        return _der(der[4:s_at], P256_ORDER - s)

    return sign


def _der(r: bytes, s: int) -> bytes:
    """SEQUENCE { INTEGER r, INTEGER s } with r already encoded (as it came) and s positive and minimal."""
    s_bytes = s.to_bytes((s.bit_length() + 8) // 8, "big")  # one bit more: a leading 0x00 when the top bit is set
    body = b"\x02" + bytes((len(r),)) + r + b"\x02" + bytes((len(s_bytes),)) + s_bytes
    return b"\x30" + bytes((len(body),)) + body


def load_private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the private key is not an EC key")
    return key


def load_msp(msp_dir: Path, msp_id: str) -> tuple[Identity, Signer]:
    """An identity and signer from an MSP folder laid out by cryptogen or fabric-ca (signcerts/, keystore/)."""
    certs = sorted((msp_dir / "signcerts").glob("*.pem"))
    keys = sorted((msp_dir / "keystore").glob("*"))
    if len(certs) != 1 or len(keys) != 1:
        raise ValueError(f"{msp_dir}: want exactly one certificate in signcerts/ and one key in keystore/")
    identity = Identity(msp_id, certs[0].read_bytes())
    return identity, ecdsa_signer(load_private_key(keys[0].read_bytes()))
