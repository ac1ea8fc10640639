"""Where an event listener has got to, kept durably so a restart resumes with no gap and no repeat.

A checkpoint is (block number, transaction id) of the last event handled. Resuming asks the peer for events from
that block, after that transaction: the rest of the block, then what follows. After a whole block is handled, the
checkpoint moves to (next block, "") so nothing of that block is replayed. This matches the official clients.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis

from fabric_gateway.messages import ChaincodeEvent


@dataclass(frozen=True)
class Checkpoint:
    block_number: int = 0
    tx_id: str = ""

    @property
    def is_empty(self) -> bool:
        return self.block_number == 0 and not self.tx_id


class Checkpointer(Protocol):
    def load(self) -> Checkpoint: ...

    def save(self, checkpoint: Checkpoint) -> None: ...


def after_event(event: ChaincodeEvent) -> Checkpoint:
    return Checkpoint(event.block_number, event.tx_id)


def after_block(block_number: int) -> Checkpoint:
    return Checkpoint(block_number + 1, "")


class InMemoryCheckpointer:
    def __init__(self, start: Checkpoint = Checkpoint()) -> None:
        self._current = start
        self._lock = threading.Lock()

    def load(self) -> Checkpoint:
        with self._lock:
            return self._current

    def save(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            self._current = checkpoint


class FileCheckpointer:
    """A JSON file replaced atomically (write, fsync, rename) on every save."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Checkpoint:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return Checkpoint()
        return Checkpoint(int(data["block_number"]), str(data["tx_id"]))

    def save(self, checkpoint: Checkpoint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump({"block_number": checkpoint.block_number, "tx_id": checkpoint.tx_id}, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)


class RedisCheckpointer:
    """One Redis hash per listener; both fields are written in one command, so a reader never sees half."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        self.key = f"careledger:checkpoint:{name}"

    def load(self) -> Checkpoint:
        return self._read(self.client)

    def _read(self, client: redis.Redis | redis.client.Pipeline) -> Checkpoint:
        data = client.hgetall(self.key)
        if not data:
            return Checkpoint()
        tx_id = data[b"tx_id"]
        return Checkpoint(int(data[b"block_number"]), tx_id.decode() if isinstance(tx_id, bytes) else str(tx_id))

    def move(self, expected: Checkpoint, checkpoint: Checkpoint) -> bool:
        """Save `checkpoint` only if the stored one is still `expected` (WATCH, then MULTI/EXEC); False when it is
        not. A listener that passes the checkpoint it saved last learns so when Redis lost its latest writes (a
        restart that rolled back, when its append-only file had not reached the disk), and can resume from what is
        stored instead of going on past events whose effects were lost with them."""
        moved = True

        def compare_and_set(pipe: redis.client.Pipeline) -> None:
            nonlocal moved
            moved = self._read(pipe) == expected
            pipe.multi()
            if moved:
                self.save(checkpoint, pipe)

        self.client.transaction(compare_and_set, self.key)
        return moved

    def save(self, checkpoint: Checkpoint, pipeline: redis.client.Pipeline | None = None) -> None:
        """Save now, or as part of `pipeline` (a MULTI transaction) so the checkpoint moves together with the
        effect of handling the event: a crash then leaves both or neither, never a repeat or a gap."""
        target = pipeline if pipeline is not None else self.client
        target.hset(self.key, mapping={"block_number": checkpoint.block_number, "tx_id": checkpoint.tx_id})
