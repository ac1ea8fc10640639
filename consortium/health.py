"""Node health from the nodes' own operations endpoints (`/healthz`), as one member org sees it.

The endpoints are mutual TLS: a node answers only a client certificate issued by its own org's TLS CA. An org's
gateway presents its gateway certificate (issued by that CA), so it can ask after its own org's nodes and no
others'; the orderers' endpoints belong to the ordering org.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass

import httpx

from consortium.topology import Node, Org, Topology

TIMEOUT_S = 2.0


@dataclass(frozen=True)
class NodeHealth:
    node: str  # e.g. peer0.hospital
    url: str
    status: str  # OK, the failed checks' names, or "unreachable"
    detail: str  # what failed, for the operator

    @property
    def ok(self) -> bool:
        return self.status == "OK"


def client_context(topology: Topology, org: Org) -> ssl.SSLContext:
    """Trust the org's TLS CA; present the org's gateway certificate."""
    ctx = ssl.create_default_context(cafile=str(topology.tls_ca_cert(org)))
    tls = topology.gateway_tls_dir(org)
    ctx.load_cert_chain(tls / "server.crt", tls / "server.key")
    return ctx


def _parse(node: Node, status_code: int, body: str) -> NodeHealth:
    try:
        answer = json.loads(body)
    except ValueError:
        return NodeHealth(node.name, node.ops_url, "unreachable", f"HTTP {status_code}: not JSON")
    if answer.get("status") == "OK":
        return NodeHealth(node.name, node.ops_url, "OK", "")
    failed = answer.get("failed_checks") or []
    names = ", ".join(str(f.get("component", "?")) for f in failed) or str(answer.get("status"))
    reasons = "; ".join(str(f.get("reason", "")) for f in failed)
    return NodeHealth(node.name, node.ops_url, names, reasons[:300])


async def _check(client: httpx.AsyncClient, node: Node) -> NodeHealth:
    try:
        resp = await client.get(f"{node.ops_url}/healthz")
    except httpx.HTTPError as e:
        return NodeHealth(node.name, node.ops_url, "unreachable", type(e).__name__)
    return _parse(node, resp.status_code, resp.text)


async def of_org(topology: Topology, org: Org) -> list[NodeHealth]:
    """The health of each of the org's own nodes, asked at once."""
    nodes = [n for n in topology.nodes if n.org == org]
    async with httpx.AsyncClient(verify=client_context(topology, org), timeout=TIMEOUT_S) as client:
        return list(await asyncio.gather(*(_check(client, n) for n in nodes)))
