"""One long-lived, mutually authenticated gRPC channel per Gateway peer endpoint, and what both drivers take from
a channel (its callables, bytes in and out) or from a Gateway stub (its methods, protobuf messages in and out)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2

from fabric_gateway.commits import DELIVER_FILTERED

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


# Each unary stage's Gateway method, and the request type a stub (rather than a channel) takes.
METHODS: Final[dict[str, tuple[str, Any]]] = {
    "evaluate": ("/gateway.Gateway/Evaluate", gateway_pb2.EvaluateRequest),
    "endorse": ("/gateway.Gateway/Endorse", gateway_pb2.EndorseRequest),
    "submit": ("/gateway.Gateway/Submit", gateway_pb2.SubmitRequest),
    "commit_status": ("/gateway.Gateway/CommitStatus", gateway_pb2.SignedCommitStatusRequest),
}
EVENTS_METHOD: Final = "/gateway.Gateway/ChaincodeEvents"


def unary_calls(channel: Any) -> dict[str, Any]:
    """A grpc.Channel's or grpc.aio.Channel's callables for the Gateway's unary methods, bytes in and out."""
    return {stage: channel.unary_unary(path, _registered_method=True) for stage, (path, _) in METHODS.items()}


def events_call(channel: Any) -> Any:
    """The channel's callable for the chaincode events stream, bytes in and out."""
    return channel.unary_stream(EVENTS_METHOD, _registered_method=True)


def deliver_call(channel: Any) -> Any:
    """The channel's callable for the peer's filtered-block stream (see `commits`), bytes in and out."""
    return channel.stream_stream(DELIVER_FILTERED, _registered_method=True)


def envelopes(requests: Iterable[bytes]) -> Iterator[Any]:
    """What a stub's DeliverFiltered takes."""
    return (common_pb2.Envelope.FromString(request) for request in requests)


def binding_hash(connection: Any, given: bytes | None) -> bytes | None:
    """What binds a block stream request to the connection's mutual TLS: given, or the Endpoint's client
    certificate's; unknown (None: no block stream) for a channel opened elsewhere; not checked by a stub."""
    if given is not None:
        return given
    if isinstance(connection, Endpoint):
        return connection.tls_cert_hash
    if isinstance(connection, (grpc.Channel, grpc.aio.Channel)):
        return None
    return b""


def stub_methods(stub: Any) -> dict[str, tuple[Any, Any]]:
    """A Gateway stub's method for each unary stage, with the request type it takes."""
    return {stage: (getattr(stub, path.rsplit("/", 1)[1]), request) for stage, (path, request) in METHODS.items()}


def events_request_message(request: bytes) -> Any:
    """What a stub's ChaincodeEvents takes."""
    return gateway_pb2.SignedChaincodeEventsRequest.FromString(request)
