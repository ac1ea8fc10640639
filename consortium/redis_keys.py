"""Every Redis key CareLedger uses, in one place.

Each org's processes use only keys under `careledger:<MSP>:`, Celery's own included (its queues, unacknowledged
messages, bindings and locks get that prefix through kombu's `global_keyprefix`), with one exception: the chain-event
listener's checkpoint, which `fabric_gateway.checkpoint.RedisCheckpointer` names `careledger:checkpoint:<name>`
(the listener's name starts with the org's MSP). So two ACL patterns per org cover all of an org's keys, and an org's
Redis user is refused every other org's (network/redis_server.py makes the users).
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
        """The key pattern of every key of the org but its listeners' checkpoints."""
        return f"{self.prefix}*"

    @property
    def acl_patterns(self) -> list[str]:
        """The key patterns the org's Redis user is limited to: its prefix and its listeners' checkpoints."""
        return [self.acl_pattern, f"careledger:checkpoint:{self.msp}:*"]

    def listener_checkpoint_name(self, channel: str) -> str:
        """The name the org's listener on `channel` gives its RedisCheckpointer (key `careledger:checkpoint:<name>`)."""
        return f"{self.msp}:{channel}"

    def alive(self, process: str) -> str:
        """A process's heartbeat (expires unless renewed), for `careledger network status`; e.g. `listener`."""
        return f"{self.prefix}alive:{process}"

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

    def to_pay(self, provider: str) -> str:
        """An insurer's adjudicated claims of one provider waiting for the next remittance (a sorted set by time)."""
        return f"{self.prefix}to-pay:{provider}"

    def payment_under_way(self, provider: str) -> str:
        """An insurer's payment to one provider that was started and not yet finished: its reference and claims
        (JSON), written before it is sent, so a cycle after a crash finishes that very payment."""
        return f"{self.prefix}payment-under-way:{provider}"

    @property
    def paying(self) -> str:
        """The providers an insurer has claims queued to pay for (a set)."""
        return f"{self.prefix}to-pay"

    @property
    def remit_lock(self) -> str:
        """One remittance cycle at a time."""
        return f"{self.prefix}lock:remit"

    @property
    def purge_lock(self) -> str:
        """One purge of claim lines at a time."""
        return f"{self.prefix}lock:purge"

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
