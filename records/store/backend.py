"""What the encrypted store needs from a database, and a small connection pool both backends use.

The store writes its SQL once, with `?` placeholders and statements both SQLite and PostgreSQL understand (row
values, `ON CONFLICT ... DO NOTHING`, partial indexes). A backend runs it: it owns connections, the schema, what a
write transaction is (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: read committed), and turns unique-key refusals into
`Duplicate`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Generic, Protocol, TypeVar

Args = Sequence[Any]
C = TypeVar("C")


class Duplicate(Exception):
    """A unique key refused a row: another writer took it first (or the database broke a deadlock between two)."""


class Sql(Protocol):
    """Statements on one connection; inside `Backend.write()` they are one transaction."""

    def rows(self, sql: str, args: Args = ()) -> list[tuple[Any, ...]]: ...

    def one(self, sql: str, args: Args = ()) -> tuple[Any, ...] | None: ...

    def run(self, sql: str, args: Args = ()) -> int:
        """Execute; the number of rows changed."""
        ...

    def many(self, sql: str, args: Sequence[Args]) -> None: ...


class Backend(ABC):
    name: str
    # Row locks for key rows (PostgreSQL); SQLite serialises writers instead and has no such clause.
    share_lock: str = ""
    update_lock: str = ""
    # Rows taken off a queue: each writer takes rows no other is taking (PostgreSQL); SQLite's writers take turns.
    take_lock: str = ""

    @abstractmethod
    def read(self) -> AbstractContextManager[Sql]:
        """Statements that each see what is committed when they run."""

    @abstractmethod
    def write(self) -> AbstractContextManager[Sql]:
        """One transaction: committed when the block ends, rolled back when it raises."""

    @abstractmethod
    def exclusive(self) -> Exclusive:
        """A lock every process that opens this store takes in turn (on any machine that shares it)."""

    @abstractmethod
    def close(self) -> None: ...


class Exclusive(Protocol):
    """A lock shared by every process of a store, held from `acquire` to `release` (or the holder's death)."""

    def acquire(self) -> None:
        """Wait until this one holds it (blocking: run it in a thread from an event loop)."""
        ...

    def release(self) -> None: ...


class Pool(Generic[C]):
    """Connections for any thread: one is taken for a block of statements and given back after; at most `keep`
    idle ones are kept. A gateway (one event loop) ends up with one connection, a threaded worker with one per
    busy thread."""

    def __init__(
        self,
        connect: Callable[[], C],
        usable: Callable[[C], bool],
        close: Callable[[C], None],
        keep: int = 8,
    ) -> None:
        self._connect = connect
        self._usable = usable
        self._close = close
        self._keep = keep
        self._idle: list[C] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[C]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            with self._lock:
                kept = not self._closed and len(self._idle) < self._keep and self._usable(conn)
                if kept:
                    self._idle.append(conn)
            if not kept:
                self._close(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            self._close(conn)
