"""One org's gateway app in process, over the in-memory ledger, for unit tests of the HTTP layer."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.app import create_app
from gateway.auth import TokenPolicy
from gateway.deps import GatewayConfig, Services
from ledger.contracts import Ledger
from ledger.fake import FakeLedger
from records.service import Custodian, Records
from records.sharing import Sharing
from records.store import Store
from tests import fhir_samples as fhir

ISSUER, AUDIENCE = "https://auth.test", "https://gateway.test/fhir"
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_PEM = (
    KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
)
WRITE = "system/*.read system/*.write"


def token(scope: str = WRITE, **claims: Any) -> dict[str, str]:
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ehr", "scope": scope, "exp": int(time.time()) + 600, **claims}
    return {"Authorization": f"Bearer {jwt.encode(body, KEY, algorithm='ES256')}"}


class Gateway:
    """The app, its records and the shared ledger world, with an EHR's helpers."""

    def __init__(self, tmp_path: Path, msp: str = "HospitalMSP") -> None:
        self.world = FakeLedger({"HospitalMSP": "provider", "ClinicMSP": "provider", "InsurerMSP": "insurer"})
        self.db = tmp_path / f"{msp}.sqlite"
        store = Store(self.db, b"k" * 32)
        custodian = Custodian(msp, self.world.kinds[msp])
        self.records = Records(store, Ledger(self.world.member(msp)), fhir.CONSORTIUM_KEY, fhir.MPI_SYSTEM, custodian)
        config = GatewayConfig(msp, TokenPolicy(PUBLIC_PEM, AUDIENCE, ISSUER))
        self.app = create_app(Services(config, self.records, Sharing(self.records, None)))
        self.http: httpx.AsyncClient | None = None

    def run(self, scenario: Callable[[Gateway], Awaitable[None]]) -> None:
        async def main() -> None:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://gw") as http:
                self.http = http
                await scenario(self)

        asyncio.run(main())

    def close(self) -> None:
        self.records.store.close()

    def rows(self) -> int:
        """Every stored row, pending or committed, and every patient key: a refused request must add none."""
        with sqlite3.connect(self.db) as db:
            resources = db.execute("SELECT COUNT(*) FROM resources").fetchone()[0]
            keys = db.execute("SELECT COUNT(*) FROM patient_keys").fetchone()[0]
        return int(resources) + int(keys)

    async def request(
        self, method: str, path: str, body: Any = None, scope: str = WRITE, **headers: str
    ) -> httpx.Response:
        assert self.http is not None
        content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        sent = {**token(scope), "Content-Type": "application/fhir+json", **headers}
        return await self.http.request(method, path, content=content, headers=sent)

    async def post(self, path: str, body: Any, scope: str = WRITE, **headers: str) -> httpx.Response:
        return await self.request("POST", path, body, scope, **headers)

    async def get(self, path: str, scope: str = WRITE, **headers: str) -> httpx.Response:
        return await self.request("GET", path, None, scope, **headers)
