"""Signed transactions a write has prepared and not yet seen settle, kept until the ledger's answer is definite.

Before a write's transaction is sent for ordering, its signed bytes are written here (atomically), under the id of
the write's staged batch. So whatever happens next — a timeout, a lost connection, the gateway killed — the batch's
outcome can be settled later by sending exactly that transaction again and reading its commit status: it commits
once or it was invalidated; never a second, different transaction for the same write.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from consortium.secrets import private_dir
from ledger.transport import Prepared

Version = tuple[str, str, int]  # (type, id, version)

CLIENT_KEYS_KEPT_S = 24 * 3600.0  # how long the answer to a request the client keyed (Idempotency-Key) is kept
HEAD_BYTES = 96  # enough of a kept transaction's file to hold its txId
TX_ID_AT_HEAD = re.compile(rb'\{"txId": "([0-9a-f]{1,64})"')
ORPHAN_SIGNED_S = 3600.0  # a signed transaction no batch links to, this old, was left by a crash


class RequestKey(str):
    """A request's key. `client_chosen`: the client named the request (an Idempotency-Key): its answer is kept for
    CLIENT_KEYS_KEPT_S after it is definite, so a retry after a lost response gets it again instead of writing anew
    (a second claim would be an exact duplicate, CARC 18); `content` is then a digest of what was asked (method,
    path, body), so the same key on a different request is told apart. A key made from the request's content is
    forgotten once answered: the same content sent again is a new write, as in FHIR."""

    client_chosen: bool
    content: str

    def __new__(cls, value: str, client_chosen: bool = False, content: str = "") -> RequestKey:
        key = super().__new__(cls, value)
        key.client_chosen = client_chosen
        key.content = content
        return key

    def part(self, suffix: str) -> RequestKey:
        """The key of one part of the request (a batch entry), as chosen as the request's."""
        return RequestKey(f"{self}{suffix}", self.client_chosen, self.content)


def content_of(request: str) -> str:
    """What a request asked (its digest), when its key does not already say so; "" otherwise."""
    return request.content if isinstance(request, RequestKey) else ""


def kept_once_answered(request: str) -> bool:
    return isinstance(request, RequestKey) and request.client_chosen


@dataclass(frozen=True)
class Remembered:
    """A request whose write was sent: its staged batch, and the versions it answers with, in the request's entry
    order (None when not known: the batch's own rows are the answer)."""

    batch: str
    answer: tuple[Version, ...] | None = None
    content: str = ""  # what the request asked, for a key the client chose ("" when not kept)

    def asked_otherwise(self, request: str) -> bool:
        """The same key, a different request: a client reusing an Idempotency-Key for something else."""
        return bool(self.content) and bool(content_of(request)) and self.content != content_of(request)


class PendingTransactions(Protocol):
    def save(self, batch: str, prepared: Prepared, durable: bool = True) -> None:
        """Keep the batch's signed transaction. `durable=False`: the caller calls `make_durable` before the
        transaction is sent (once for many saves)."""
        ...

    def make_durable(self) -> None: ...

    def load(self, batch: str) -> Prepared | None: ...

    def remove(self, batch: str) -> None: ...

    def remember(self, request: str, batch: str, answer: tuple[Version, ...] | None = None) -> None:
        """A request whose write was sent: its retry must find this batch (and answer with these versions), not
        write again."""
        ...

    def remembered(self, request: str) -> Remembered | None: ...

    def forget(self, request: str) -> None: ...

    def prune(self, older_than_s: float) -> None:
        """Forget the requests remembered longer ago than that."""
        ...


class PendingInMemory:
    """For tests and processes that need not survive a crash."""

    def __init__(self) -> None:
        self._kept: dict[str, Prepared] = {}
        self._requests: dict[str, Remembered] = {}

    def remember(self, request: str, batch: str, answer: tuple[Version, ...] | None = None) -> None:
        self._requests[request] = Remembered(batch, answer, content_of(request))

    def remembered(self, request: str) -> Remembered | None:
        return self._requests.get(request)

    def forget(self, request: str) -> None:
        self._requests.pop(request, None)

    def prune(self, older_than_s: float) -> None:
        pass  # a test's process does not live that long

    def save(self, batch: str, prepared: Prepared, durable: bool = True) -> None:
        self._kept[batch] = prepared

    def make_durable(self) -> None:
        pass

    def load(self, batch: str) -> Prepared | None:
        return self._kept.get(batch)

    def remove(self, batch: str) -> None:
        self._kept.pop(batch, None)


class PendingFiles:
    """One file per batch in a private folder beside the store. A signed transaction is written once (to a
    temporary name, fsynced, renamed) as `<txId>.signed`, and each batch it carries is a hard link to it,
    `<batch>.tx`, the folder synced after it (after all of them, for many saves with `durable=False` and one
    `make_durable`): a transaction that carries many writes (the claims of one batch submission) costs one durable
    write of its bytes and one folder sync, not one of each per write. The `.signed` name goes with the last batch
    removed (or, left by a crash, with the next prune)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        private_dir(folder)

    def _path(self, batch: str, suffix: str = ".tx") -> Path:
        if not batch.isalnum():
            raise ValueError(f"not a batch or request id: {batch!r}")
        return self.folder / f"{batch}{suffix}"

    def remember(self, request: str, batch: str, answer: tuple[Version, ...] | None = None) -> None:
        record = {
            "batch": batch,
            "answer": [list(v) for v in answer] if answer is not None else None,
            "content": content_of(request),
        }
        self._path(request, ".req").write_text(json.dumps(record))

    def remembered(self, request: str) -> Remembered | None:
        try:
            text = self._path(request, ".req").read_text().strip()
        except FileNotFoundError:
            return None
        if not text.startswith("{"):  # written before answers were kept: the batch id alone
            return Remembered(text) if text else None
        record = json.loads(text)
        answer = record.get("answer")
        versions = tuple((str(t), str(i), int(v)) for t, i, v in answer) if answer is not None else None
        return Remembered(str(record["batch"]), versions, str(record.get("content") or ""))

    def forget(self, request: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(request, ".req").unlink()

    def prune(self, older_than_s: float) -> None:
        since = time.time() - older_than_s
        for path in self.folder.glob("*.req"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < since:
                    path.unlink()
        # What a process killed half way through left: temporary names, and a transaction no batch links to.
        orphaned = time.time() - ORPHAN_SIGNED_S
        for pattern in ("*.tmp", "*.link", "*.signed"):
            for path in self.folder.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < orphaned:
                        if pattern == "*.signed":
                            self._drop_unlinked(path)
                        else:
                            path.unlink()

    def save(self, batch: str, prepared: Prepared, durable: bool = True) -> None:
        signed = self._path(prepared.tx_id, ".signed")
        if not signed.exists():
            # txId first: `remove` reads it from the head of a batch's file
            record = {"txId": prepared.tx_id, "channel": prepared.channel, "signed": prepared.signed.hex()}
            tmp = signed.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(signed)
        replaced = self._tx_of(batch)  # a batch sent again in another transaction (its first one refused)
        link = self._path(batch).with_suffix(f".{os.getpid()}-{threading.get_ident()}.link")
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.link(signed, link)
        link.replace(self._path(batch))
        if durable or replaced not in (None, prepared.tx_id):
            self.make_durable()
        if replaced not in (None, prepared.tx_id):
            self._drop_unlinked(self._path(replaced, ".signed"))

    def load(self, batch: str) -> Prepared | None:
        try:
            record = json.loads(self._path(batch).read_text())
        except FileNotFoundError:
            return None
        return Prepared(str(record["channel"]), str(record["txId"]), bytes.fromhex(record["signed"]))

    def remove(self, batch: str) -> None:
        tx_id = self._tx_of(batch)
        with contextlib.suppress(FileNotFoundError):
            self._path(batch).unlink()
        if tx_id is not None:  # the transaction's own name goes when no batch links to it any more
            self._drop_unlinked(self._path(tx_id, ".signed"))

    def _tx_of(self, batch: str) -> str | None:
        """The id of the transaction a batch's file holds, read from its head (None: no file, or one written
        before transactions were kept once for all their batches)."""
        try:
            with self._path(batch).open("rb") as f:
                found = TX_ID_AT_HEAD.match(f.read(HEAD_BYTES))
        except FileNotFoundError:
            return None
        return found.group(1).decode() if found is not None else None

    def make_durable(self) -> None:
        """Sync the folder: the names saved (the transactions' and the batches') then outlive a power cut."""
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _drop_unlinked(signed: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            if signed.stat().st_nlink == 1:
                signed.unlink()
