"""The `careledger` command: one entry point, one sub-group per part of the system.

A mistake a user can make (the network not running, an org name that does not exist, a key not made yet) is answered
with a sentence and a non-zero exit, never a traceback: every such error is a `NetworkError` whose message says what
to run. Anything else is a bug; it is reported in one line too, with the way to see the traceback.
"""

from __future__ import annotations

import os
from typing import Any

import click

from careledger import orgs  # noqa: F401  (adds `org add` and `org leave` to the org group)
from careledger.demo import demo
from consortium.errors import NetworkError
from gateway.cli import gateway
from network.cli import network
from network.membership_cli import chaincode, channel, org
from workers.cli import claims, worker

DEBUG = "CARELEDGER_DEBUG"


class Careledger(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NetworkError as e:
            raise click.ClickException(str(e)) from None
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            if os.environ.get(DEBUG):
                raise
            raise click.ClickException(
                f"unexpected error ({type(e).__name__}: {e}); run again with {DEBUG}=1 to see where"
            ) from None


@click.group(cls=Careledger)
def main() -> None:
    """CareLedger: a Hyperledger Fabric consortium for healthcare data."""


main.add_command(network)
main.add_command(org)
main.add_command(channel)
main.add_command(chaincode)
main.add_command(gateway)
main.add_command(worker)
main.add_command(claims)
main.add_command(demo)

if __name__ == "__main__":
    main()
