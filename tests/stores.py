"""Custodian stores of either backend for a test, and SQL run on them behind the store's back (as an insider with
database access would)."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg

from consortium import topology as topo
from records.store import Store


class Stores:
    """Store locations of one backend for one test: a file per name (SQLite) or a schema per name (PostgreSQL, in
    `database` of the cluster `pg` runs, which must exist)."""

    def __init__(self, backend: str, tmp_path: Path, pg: topo.Topology | None, database: str) -> None:
        self.backend = backend
        self.database = database
        self.tmp_path = tmp_path
        self.pg = pg
        self.schemas: list[str] = []
        self._suffix = uuid.uuid4().hex[:10]

    def location(self, name: str = "store") -> str:
        if self.pg is None:
            return f"sqlite://{self.tmp_path / f'{name}.sqlite'}"
        schema = f"t_{self._suffix}_{name.lower()}"
        if schema not in self.schemas:
            with psycopg.connect(self.pg.postgres_url(self.database), autocommit=True) as db:
                db.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            self.schemas.append(schema)
        return f"{self.pg.postgres_url(self.database)}&options=-csearch_path%3D{schema}"

    def open(self, key: bytes = b"m" * 32, name: str = "store") -> Store:
        return Store(self.location(name), key)

    def sql(self, statement: str, args: tuple[Any, ...] = (), name: str = "store") -> list[tuple[Any, ...]]:
        """Run SQL on the store's database behind its back (`?` placeholders); the rows it returns."""
        if self.pg is None:
            db = sqlite3.connect(self.tmp_path / f"{name}.sqlite")
            try:
                rows = db.execute(statement, args).fetchall()
                db.commit()
                return rows
            finally:
                db.close()
        with psycopg.connect(self.location(name), autocommit=True) as pg:
            cur = pg.execute(statement.replace("?", "%s"), args)
            return cur.fetchall() if cur.description else []

    def cleanup(self) -> None:
        if self.pg is None or not self.schemas:
            return
        with psycopg.connect(self.pg.postgres_url(self.database), autocommit=True) as db:
            for schema in self.schemas:
                db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
