"""Every Redis key CareLedger uses, in one place.

Each org's processes use only keys under `careledger:<MSP>:`, Celery's own included (its queues, unacknowledged
messages and results get that prefix through kombu's `global_keyprefix`). So one ACL pattern per org covers all of an
org's keys, and an org's Redis user can be refused every other org's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OrgKeys:
    msp: str

    @property
    def prefix(self) -> str:
        return f"careledger:{self.msp}:"

    @property
    def acl_pattern(self) -> str:
        """The key pattern the org's Redis user is limited to."""
        return f"{self.prefix}*"

    @property
    def celery_prefix(self) -> str:
        """kombu's `global_keyprefix` for the org's broker and result keys."""
        return f"{self.prefix}celery:"

    def checkpoint(self, channel: str) -> str:
        """Where the org's chain-event listener on `channel` has got to (a hash: block_number, tx_id)."""
        return f"{self.prefix}checkpoint:{channel}"

    @property
    def inflight(self) -> str:
        """The outbox: tasks written down before they are sent, crossed out when finished (a hash by task id)."""
        return f"{self.prefix}inflight"

    @property
    def failed(self) -> str:
        """Tasks that failed for good, for an operator (a list, newest first)."""
        return f"{self.prefix}failed"

    def stream(self, channel: str) -> str:
        """The org's event stream for its applications (XREAD / XREADGROUP)."""
        return f"{self.prefix}stream:{channel}"

    @property
    def dead_letters(self) -> str:
        """Webhook deliveries given up on (a list, newest first)."""
        return f"{self.prefix}deadletter"

    def done(self, what: str) -> str:
        """A marker that a once-only effect (a stream entry, a webhook delivery) happened."""
        return f"{self.prefix}done:{what}"

    def claim_lines(self, patient: str) -> str:
        """An insurer's memory of a member's claim lines, for near-duplicate checks (a hash)."""
        return f"{self.prefix}claim-lines:{patient}"

    def member_lock(self, patient: str) -> str:
        """One adjudication per member at a time."""
        return f"{self.prefix}lock:member:{patient}"

    # ----- topic-based subscriptions (workers.subscriptions) ---------------------------------------------------------

    def subscription_events(self, subscription: str) -> str:
        """How many events a subscription has had: the last event number given out (INCR)."""
        return f"{self.prefix}subscription:{subscription}:events"

    def subscription_event(self, subscription: str, event: str) -> str:
        """The number a subscription gave one event (by its delivery id), so a rerun of the task gets the same one."""
        return f"{self.prefix}subscription:{subscription}:event:{event}"

    def subscription_channel(self, subscription: str) -> str:
        """What the workers know of a subscription's channel: when it was last sent something, consecutive failures
        (a hash)."""
        return f"{self.prefix}subscription:{subscription}:channel"

    def subscription_pending(self, subscription: str, what: str) -> str:
        """A handshake or heartbeat already on its way (a flag that expires), so the ticker does not send two."""
        return f"{self.prefix}subscription:{subscription}:pending:{what}"

    @property
    def subscription_tick(self) -> str:
        """The ticker's flag: one tick task at a time per org, however many listeners run."""
        return f"{self.prefix}subscription-tick"
