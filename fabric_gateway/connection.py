"""One long-lived, mutually authenticated gRPC channel per Gateway peer endpoint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

# Fabric peers close connections that ping more often than every 60 s (peer.keepalive.minInterval).
_OPTIONS = [
    ("grpc.keepalive_time_ms", 120_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_send_message_length", 100 * 1024 * 1024),
    ("grpc.max_receive_message_length", 100 * 1024 * 1024),
]


@dataclass(frozen=True)
class Endpoint:
    """A Gateway peer: its address, the CA that signed its TLS certificate, and our TLS client credentials."""

    address: str
    tls_root_cert: bytes
    client_cert: bytes
    client_key: bytes
    server_name: str | None = None  # TLS name to verify, when it differs from the address host

    @classmethod
    def from_files(
        cls, address: str, tls_root_cert: Path, client_cert: Path, client_key: Path, server_name: str | None = None
    ) -> Endpoint:
        return cls(address, tls_root_cert.read_bytes(), client_cert.read_bytes(), client_key.read_bytes(), server_name)

    @property
    def tls_cert_hash(self) -> bytes:
        """SHA-256 of our TLS client certificate (DER): peers that require mutual TLS bind block stream requests to
        it."""
        der = x509.load_pem_x509_certificate(self.client_cert).public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).digest()

    def _credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.tls_root_cert, self.client_key, self.client_cert)

    def _options(self) -> list[tuple[str, object]]:
        extra = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return [*_OPTIONS, *extra]

    def channel(self) -> grpc.Channel:
        return grpc.secure_channel(self.address, self._credentials(), options=self._options())

    def aio_channel(self) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(self.address, self._credentials(), options=self._options())
