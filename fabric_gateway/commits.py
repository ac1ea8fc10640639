"""Commit statuses from one filtered-block stream per channel, instead of one CommitStatus call per transaction.

Why: `Contract.submit` waits for the commit. Asking the Gateway's CommitStatus for each transaction costs a signature
and a gRPC call, which in Python is about a third of the client's CPU per transaction; at high concurrency that CPU
is what limits the client. The peer's Deliver service sends each block's transaction ids and validation codes
(a FilteredBlock) once for all the transactions in it; one such stream per channel answers every submit waiting on
that channel. It is the same peer and the same ledger the Gateway's CommitStatus reads, so the same answer.

How: before a transaction is sent for ordering, the channel's stream is running and has delivered the newest block,
so the transaction's block comes after it. Each block's statuses are kept for a while, so a submit that starts
waiting after its block arrived still finds it. When the stream cannot be opened (a stub without it, a peer that
refuses) or breaks, the waiting submits fall back to CommitStatus calls, and the stream is tried again only after
`RETRY_AFTER` seconds. `Commit.status()` and `Network.commit_status()` always call CommitStatus, like the official
clients.

The drivers own the stream (a thread, or an asyncio task) and the waiting (a threading.Event or an asyncio future);
everything else is here.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

from fabric_protos.common import common_pb2
from fabric_protos.orderer import ab_pb2
from fabric_protos.peer import events_pb2
from google.protobuf import timestamp_pb2

from fabric_gateway import messages as m
from fabric_gateway.identity import Identity, digest

DELIVER_FILTERED = "/protos.Deliver/DeliverFiltered"
RETRY_AFTER = 30.0  # seconds before a channel's stream is tried again after it failed
READY_WITHIN = 5.0  # seconds a new stream has to deliver its first block
KEEP = 10_000  # statuses of recent transactions kept, for submits that wait after their block arrived

W = TypeVar("W")  # what a waiting submit blocks on: a threading.Event-like object or an asyncio future


def seek_request(
    identity: Identity,
    sign: Callable[[bytes], bytes],
    channel: str,
    tls_cert_hash: bytes,
    start_block: int | None = None,
) -> bytes:
    """The signed Envelope asking for filtered blocks from the newest one on (or from `start_block`), for ever.
    Mutual TLS binds the request to the connection: `tls_cert_hash` is the SHA-256 of the client's TLS certificate
    (DER)."""
    nonce = os.urandom(m.NONCE_BYTES)
    timestamp = timestamp_pb2.Timestamp()
    timestamp.GetCurrentTime()
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.HeaderType.DELIVER_SEEK_INFO,
        channel_id=channel,
        tx_id=digest(nonce + identity.creator).hex(),
        timestamp=timestamp,
        tls_cert_hash=tls_cert_hash,
    )
    seek = ab_pb2.SeekInfo(
        start=(
            ab_pb2.SeekPosition(newest=ab_pb2.SeekNewest())
            if start_block is None
            else ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=start_block))
        ),
        stop=ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=2**64 - 1)),
        behavior=ab_pb2.SeekInfo.BLOCK_UNTIL_READY,
    )
    payload = common_pb2.Payload(
        header=common_pb2.Header(
            channel_header=channel_header.SerializeToString(),
            signature_header=common_pb2.SignatureHeader(creator=identity.creator, nonce=nonce).SerializeToString(),
        ),
        data=seek.SerializeToString(),
    ).SerializeToString()
    return bytes(common_pb2.Envelope(payload=payload, signature=sign(digest(payload))).SerializeToString())


class CommitWatch(Generic[W]):
    """One channel's stream, seen from the submits: whether it is ready, who waits for which transaction, and the
    statuses it delivered lately. `guard` serialises access when the stream and the submits run on different threads.
    """

    def __init__(
        self,
        channel: str,
        new_waiter: Callable[[], W],
        settle: Callable[[W, m.CommitStatus | None], None],
        guard: Callable[[], AbstractContextManager[object]],
    ) -> None:
        self.channel = channel
        self._new_waiter = new_waiter
        self._settle = settle
        self._guard = guard
        self.ready = False  # the stream has delivered its first block
        self.ended: float | None = None  # when the stream ended
        self.first_block = new_waiter()  # settled (with None) once ready, or ended
        self.stream: object = None  # the driver's handle on the stream, to cancel it
        self._waiting: dict[str, W] = {}
        self._recent: OrderedDict[str, m.CommitStatus] = OrderedDict()

    @property
    def running(self) -> bool:
        return self.ready and self.ended is None

    def replace(self) -> bool:
        """Whether to open a new stream: the last one ended more than RETRY_AFTER seconds ago."""
        return self.ended is not None and time.monotonic() - self.ended > RETRY_AFTER

    def wait_for(self, tx_id: str) -> W:
        """A waiter settled with the transaction's status, or with None when the stream ends first."""
        waiter = self._new_waiter()
        with self._guard():
            status = self._recent.get(tx_id)
            if status is None and self.ended is None:
                self._waiting[tx_id] = waiter
                return waiter
        self._settle(waiter, status)
        return waiter

    def forget(self, tx_id: str) -> None:
        """The submit stopped waiting (its deadline passed)."""
        with self._guard():
            self._waiting.pop(tx_id, None)

    def on_response(self, response: bytes) -> bool:
        """Take one DeliverResponse; False when it ends the stream (a status instead of a block)."""
        message = events_pb2.DeliverResponse.FromString(response)
        if message.WhichOneof("Type") != "filtered_block":
            return False
        block = message.filtered_block
        number = block.number
        settled = []
        with self._guard():
            first, self.ready = not self.ready, True
            for tx in block.filtered_transactions:
                status = m.CommitStatus(tx.txid, m.code_name(tx.tx_validation_code), number)
                self._recent[tx.txid] = status
                if (waiter := self._waiting.pop(tx.txid, None)) is not None:
                    settled.append((waiter, status))
            while len(self._recent) > KEEP:
                self._recent.popitem(last=False)
        for waiter, status in settled:
            self._settle(waiter, status)
        if first:
            self._settle(self.first_block, None)
        return True

    def end(self) -> None:
        """The stream ended: every submit still waiting asks CommitStatus instead."""
        with self._guard():
            self.ended = time.monotonic()
            waiting, self._waiting = self._waiting, {}
        for waiter in [*waiting.values(), self.first_block]:
            self._settle(waiter, None)
