"""What can go wrong while setting up or running the consortium, as values the CLI can explain."""

from __future__ import annotations


class NetworkError(Exception):
    """Base class: the message is written for the person running `careledger network ...`."""


class ToolMissing(NetworkError):
    """A program the set-up needs (go, redis-server, ...) is not installed."""


class BuildFailed(NetworkError):
    """Building Fabric or the chaincode failed; the message carries the compiler's output tail."""


class PortInUse(NetworkError):
    def __init__(self, owner: str, address: str) -> None:
        super().__init__(f"{owner} cannot start: {address} is already in use by another process")
        self.owner = owner
        self.address = address


class NodeUnhealthy(NetworkError):
    def __init__(self, name: str, reason: str, log_tail: str) -> None:
        super().__init__(f"{name} did not become healthy: {reason}\n--- last lines of its log ---\n{log_tail}")
        self.name = name
        self.reason = reason
        self.log_tail = log_tail


class CommandFailed(NetworkError):
    """A Fabric CLI step (osnadmin, peer channel/lifecycle, configtxgen) failed."""

    def __init__(self, step: str, argv: list[str], output: str) -> None:
        super().__init__(f"{step} failed: {' '.join(argv[:3])} ...\n{output.strip()[-3000:]}")
        self.step = step
        self.argv = argv
        self.output = output
