"""The `careledger` command: one entry point, one sub-group per part of the system."""

from __future__ import annotations

import click

from careledger.demo import demo
from gateway.cli import gateway
from network.cli import network
from workers.cli import worker


@click.group()
def main() -> None:
    """CareLedger: a Hyperledger Fabric consortium for healthcare data."""


main.add_command(network)
main.add_command(gateway)
main.add_command(worker)
main.add_command(demo)

if __name__ == "__main__":
    main()
