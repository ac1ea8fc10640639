"""What the blocking and the asyncio client objects share: their state and every method that does no I/O.

`client` and `aio` each subclass these with the methods that call the Gateway (each a one-line hand-over of the
`steps` operation to their driver) and with the factories that return their own kind of object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Generic, TypedDict, TypeVar

from fabric_gateway import messages as m
from fabric_gateway.identity import Identity, Signer
from fabric_gateway.steps import Session, Timeouts

D = TypeVar("D")  # the driver: blocking or asyncio
S = TypeVar("S", m.ProposalState, m.TransactionState, m.CommitState)


class ProposalOptions(TypedDict, total=False):
    """How to call a transaction function, besides its name."""

    args: Sequence[str | bytes]
    transient: Mapping[str, bytes] | None  # private inputs: not written into the transaction
    endorsing_orgs: Sequence[str]  # MSP ids that must endorse; for evaluate, the orgs whose peers may answer


class Bound(Generic[D]):
    """An object of one Gateway connection: who signs, and the driver that performs its calls."""

    __slots__ = ("_driver", "_session")

    def __init__(self, session: Session, driver: D) -> None:
        self._session = session
        self._driver = driver


class GatewayBase(Bound[D]):
    @property
    def identity(self) -> Identity:
        return self._session.identity

    @property
    def signer(self) -> Signer | None:
        return self._session.signer

    @property
    def timeouts(self) -> Timeouts:
        return self._session.timeouts


class NetworkBase(Bound[D]):
    """A channel."""

    __slots__ = ("name",)

    def __init__(self, session: Session, driver: D, name: str) -> None:
        super().__init__(session, driver)
        self.name = name

    def _commit(self, tx_id: str) -> m.CommitState:
        return m.CommitState.new(self._session.identity, self.name, tx_id)

    def _own_org(self, orgs: Sequence[str] | None) -> Sequence[str]:
        return orgs if orgs is not None else [self._session.identity.msp_id]


class ContractBase(Bound[D]):
    """A chaincode on a channel, or one named contract in it (then transaction names are "Contract:Function")."""

    __slots__ = ("_target",)

    def __init__(self, session: Session, driver: D, target: m.Target) -> None:
        super().__init__(session, driver)
        self._target = target

    @property
    def chaincode(self) -> str:
        return self._target.chaincode

    @property
    def contract_name(self) -> str:
        return self._target.contract_name

    def _proposal(self, name: str, options: ProposalOptions) -> m.ProposalState:
        return self._target.proposal(self._session.identity, name, **options)


class Signable(Bound[D], Generic[D, S]):
    """A proposal, an endorsed transaction or a commit-status request: bytes to keep or send again, a digest to
    sign elsewhere, and the transaction id they all carry."""

    __slots__ = ("_state",)

    def __init__(self, session: Session, driver: D, state: S) -> None:
        super().__init__(session, driver)
        self._state: S = state

    @property
    def tx_id(self) -> str:
        return self._state.tx_id

    @property
    def digest(self) -> bytes:
        """SHA-256 of the bytes a signature covers."""
        return self._state.digest

    @property
    def signed(self) -> bool:
        return bool(self._state.signature)

    def to_bytes(self) -> bytes:
        """The serialised value, with its signature once signed; load it with `Gateway.*_from_bytes`."""
        return self._state.to_bytes()

    def sign(self) -> None:
        """Sign now with the gateway's signer (a signature given offline is kept): to keep the signed bytes before
        sending them, so exactly this transaction can be sent again after an unknown outcome."""
        self._session.sign(self._state)


class TransactionBase(Signable[D, m.TransactionState]):
    """An endorsed transaction, ready to be signed and sent for ordering."""

    __slots__ = ()

    @property
    def result(self) -> bytes:
        """What the chaincode returned when endorsing."""
        return self._state.result


class CommitBase(Signable[D, m.CommitState]):
    """A transaction sent for ordering (or looked up by id) whose commit status can be asked for."""

    __slots__ = ("result",)

    def __init__(self, session: Session, driver: D, state: m.CommitState, result: bytes | None = None) -> None:
        super().__init__(session, driver, state)
        self.result = result  # the chaincode's result when this commit comes from a submit, else None
