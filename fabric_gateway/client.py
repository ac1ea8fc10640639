"""The blocking Fabric Gateway client, for workers and scripts. Safe to share across threads.

    gw = Gateway(endpoint, identity, signer)                   # or a grpc.Channel, or a Gateway stub
    claims = gw.network("claims")
    contract = claims.contract("careledger", "Claims")
    contract.evaluate("Get", args=["c1"])                       -> result bytes
    contract.submit("Submit", args=[...], transient={...})      -> Submitted(tx_id, result, status), committed
    commit = contract.submit_async(...); commit.tx_id; commit.status()
    claims.commit_status(tx_id); claims.wait_for_block(n, orgs=["InsurerMSP"])
    for event in claims.chaincode_events("careledger", checkpoint=cp): ...

Offline signing, step by step: contract.new_proposal(...) -> proposal.endorse() -> transaction.submit() ->
commit.status(); each value has `digest` and `to_bytes()`, and `gw.*_from_bytes(data, signature)` loads it back signed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeAlias, TypeVar, Unpack

import grpc

from fabric_gateway import base, commits, steps
from fabric_gateway import connection as transport
from fabric_gateway import messages as m
from fabric_gateway.checkpoint import Checkpoint
from fabric_gateway.connection import Endpoint
from fabric_gateway.identity import Identity, Signer
from fabric_gateway.steps import DEFAULT_TIMEOUTS, Steps, Submitted, Timeouts

T = TypeVar("T")
UnaryCall = Callable[..., bytes]
_Watch: TypeAlias = "commits.CommitWatch[_Waiter]"


class Blocking:
    """Performs steps with blocking gRPC calls on the caller's thread; one thread per channel reads its block stream."""

    def __init__(self, connection: grpc.Channel | Any, session: steps.Session, tls_cert_hash: bytes | None) -> None:
        self._session = session
        self._tls_cert_hash = tls_cert_hash
        if isinstance(connection, grpc.Channel):
            calls = transport.unary_calls(connection)
            self._events: Callable[[bytes], Any] = transport.events_call(connection)
            self._deliver: Callable[[Iterator[bytes]], Any] | None = transport.deliver_call(connection)
        else:  # a Gateway stub, such as a test's fake: it speaks protobuf messages
            calls = {stage: _stub_call(*method) for stage, method in transport.stub_methods(connection).items()}
            self._events = lambda request: _StubStream(
                connection.ChaincodeEvents(transport.events_request_message(request))
            )
            deliver = getattr(connection, "DeliverFiltered", None)
            self._deliver = (
                None if deliver is None else lambda requests: _StubStream(deliver(transport.envelopes(requests)))
            )
        self._calls: dict[str, Callable[[steps.Call], steps.Reply]] = {
            stage: steps.taking_call(unary) for stage, unary in calls.items()
        }
        self._calls |= {
            "pause": lambda call: time.sleep(call.timeout),
            "watch": self._watch,
            "commit_event": self._event,
        }
        self._watches: dict[str, _Watch] = {}
        self._watches_lock = threading.Lock()

    def run(self, operation: Steps[T]) -> T:
        step = steps.resume(operation, None)
        while isinstance(step, steps.Call):
            step = steps.resume(operation, self._perform(step))
        return step.value

    def _perform(self, call: steps.Call) -> steps.Reply:
        try:
            return self._calls[call.stage](call)
        except grpc.RpcError as e:
            return e

    def events(self, request: bytes) -> Any:
        return self._events(request)

    # ----- the channels' block streams (see fabric_gateway.commits) -----

    def _watch(self, call: steps.Call) -> _Watch | None:
        if self._deliver is None or self._tls_cert_hash is None:
            return None
        with self._watches_lock:
            watch = self._watches.get(call.channel)
            if watch is None or watch.replace():
                watch = commits.CommitWatch(call.channel, _Waiter, _Waiter.settle, threading.Lock)
                self._watches[call.channel] = watch
                threading.Thread(target=self._read, args=(watch,), name="fabric-commits", daemon=True).start()
        if not watch.ready:
            watch.first_block.event.wait(commits.READY_WITHIN)
        return watch if watch.running else None

    def _read(self, watch: _Watch) -> None:
        assert self._deliver is not None and self._tls_cert_hash is not None
        try:
            request = commits.seek_request(
                self._session.identity, self._session.signature, watch.channel, self._tls_cert_hash
            )
            watch.stream = stream = self._deliver(iter([request]))
            for response in stream:
                if not watch.on_response(response):
                    break
        except (grpc.RpcError, ValueError):
            pass  # refused, broken or cancelled: the submits waiting ask CommitStatus
        finally:
            watch.end()

    def _event(self, call: steps.Call) -> m.CommitStatus | bool | None:
        watch: _Watch = call.handle  # type: ignore[assignment]
        waiter = watch.wait_for(call.tx_id)
        if not waiter.event.wait(call.timeout):
            watch.forget(call.tx_id)
            return False
        return waiter.status

    def close(self) -> None:
        for watch in list(self._watches.values()):
            if (cancel := getattr(watch.stream, "cancel", None)) is not None:
                cancel()


class _Waiter:
    __slots__ = ("event", "status")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.status: m.CommitStatus | None = None

    @staticmethod
    def settle(waiter: _Waiter, status: m.CommitStatus | None) -> None:
        waiter.status = status
        waiter.event.set()


def _stub_call(method: Any, request_type: Any) -> UnaryCall:
    def call(request: bytes, timeout: float) -> bytes:
        return bytes(method(request_type.FromString(request), timeout=timeout).SerializeToString())

    return call


class _StubStream:
    """A stub's stream of messages, seen as the channel's stream of bytes."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> Iterator[bytes]:
        return (bytes(response.SerializeToString()) for response in self._call)

    def cancel(self) -> None:
        if hasattr(self._call, "cancel"):
            self._call.cancel()


class Gateway(base.GatewayBase[Blocking]):
    """A connection to one peer's Gateway service, as one identity.

    `connection` is an `Endpoint` (the gateway opens the channel and closes it), or a `grpc.Channel` or a Gateway
    stub that the caller owns. Without a signer every value must be signed offline (see the module docstring).
    `submit` follows commits on each channel's block stream (see `commits`); for a channel opened elsewhere with
    mutual TLS, give `tls_cert_hash` (SHA-256 of the client certificate, DER), else submit asks CommitStatus.
    """

    def __init__(
        self,
        connection: Endpoint | grpc.Channel | Any,
        identity: Identity,
        signer: Signer | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        tls_cert_hash: bytes | None = None,
    ) -> None:
        self._channel = connection.channel() if isinstance(connection, Endpoint) else None
        session = steps.Session(identity, signer, timeouts)
        hash_ = transport.binding_hash(connection, tls_cert_hash)
        super().__init__(session, Blocking(self._channel or connection, session, hash_))

    def network(self, name: str) -> Network:
        return Network(self._session, self._driver, name)

    def proposal_from_bytes(self, data: bytes, signature: bytes | None = None) -> Proposal:
        return Proposal(self._session, self._driver, m.ProposalState.from_bytes(data, signature))

    def transaction_from_bytes(self, data: bytes, signature: bytes | None = None) -> Transaction:
        return Transaction(self._session, self._driver, m.TransactionState.from_bytes(data, signature))

    def commit_from_bytes(self, data: bytes, signature: bytes | None = None) -> Commit:
        return Commit(self._session, self._driver, m.CommitState.from_bytes(data, signature))

    def close(self) -> None:
        self._driver.close()
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Network(base.NetworkBase[Blocking]):
    def contract(self, chaincode: str, contract_name: str = "") -> Contract:
        return Contract(self._session, self._driver, m.Target(self.name, chaincode, contract_name))

    def commit(self, tx_id: str) -> Commit:
        """The commit-status request of any transaction on this channel, by its id."""
        return Commit(self._session, self._driver, self._commit(tx_id))

    def commit_status(self, tx_id: str, timeout: float | None = None) -> m.CommitStatus:
        """Whether a transaction committed, and where; waits for it until the deadline (then CommitStatusTimeout)."""
        return self._driver.run(steps.commit_status(self._session, self._commit(tx_id), timeout))

    def wait_for_block(self, block_number: int, orgs: Sequence[str] | None = None, timeout: float = 30.0) -> None:
        """Return once each org's peer (default: this identity's org) has committed `block_number`, so a read or
        an endorsement there sees what that block wrote. Raises BlockWaitTimeout."""
        self._driver.run(steps.wait_for_block(self._session, self.name, block_number, self._own_org(orgs), timeout))

    def chaincode_events(
        self, chaincode: str, start_block: int | None = None, checkpoint: Checkpoint | None = None
    ) -> ChaincodeEvents:
        """Events from `start_block`, or resuming after a checkpoint, or (neither) from the next commit on."""
        request = steps.chaincode_events_request(self._session, self.name, chaincode, start_block, checkpoint)
        return ChaincodeEvents(self._driver.events(request))


class Contract(base.ContractBase[Blocking]):
    def new_proposal(self, name: str, **options: Unpack[base.ProposalOptions]) -> Proposal:
        return Proposal(self._session, self._driver, self._proposal(name, options))

    def evaluate(self, name: str, timeout: float | None = None, **options: Unpack[base.ProposalOptions]) -> bytes:
        """Run a transaction function on one peer and return its result; nothing is written."""
        return self._driver.run(steps.evaluate(self._session, self._proposal(name, options), timeout))

    def submit(self, name: str, **options: Unpack[base.ProposalOptions]) -> Submitted:
        """Endorse, order, and wait for the commit; raises CommitError unless the transaction is valid."""
        return self._driver.run(steps.submit_transaction(self._session, self._proposal(name, options)))

    def submit_async(self, name: str, **options: Unpack[base.ProposalOptions]) -> Commit:
        """Endorse and send for ordering; return at once. `status()` of the result waits for the commit."""
        tx, commit = self._driver.run(steps.submit_async(self._session, self._proposal(name, options)))
        return Commit(self._session, self._driver, commit, tx.result)


class Proposal(base.Signable[Blocking, m.ProposalState]):
    __slots__ = ()

    def endorse(self, timeout: float | None = None) -> Transaction:
        tx = self._driver.run(steps.endorse(self._session, self._state, timeout))
        return Transaction(self._session, self._driver, tx)

    def evaluate(self, timeout: float | None = None) -> bytes:
        return self._driver.run(steps.evaluate(self._session, self._state, timeout))


class Transaction(base.TransactionBase[Blocking]):
    __slots__ = ()

    def submit(self, timeout: float | None = None) -> Commit:
        """Send for ordering. Sending the same signed transaction again after an unknown outcome is safe: a
        transaction id commits at most once."""
        commit = self._driver.run(steps.submit(self._session, self._state, timeout))
        return Commit(self._session, self._driver, commit, self.result)


class Commit(base.CommitBase[Blocking]):
    __slots__ = ()

    def status(self, timeout: float | None = None) -> m.CommitStatus:
        """Wait for the transaction to commit; says whether it is valid (this raises no CommitError)."""
        return self._driver.run(steps.commit_status(self._session, self._state, timeout))


class ChaincodeEvents:
    """An open chaincode event stream; iterate it, close() it from any thread to stop."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> Iterator[m.ChaincodeEvent]:
        for events in self.blocks():
            yield from events

    def blocks(self) -> Iterator[list[m.ChaincodeEvent]]:
        """The same events, a block at a time: each list holds the events of one block, in order (the peer sends a
        block's events together), so a listener can act on what one block holds as a whole."""
        try:
            for response in self._call:
                yield m.chaincode_events(response)
        except grpc.RpcError as e:
            if (error := steps.events_failure(e)) is not None:
                raise error from None

    def close(self) -> None:
        self._call.cancel()

    def __enter__(self) -> ChaincodeEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
