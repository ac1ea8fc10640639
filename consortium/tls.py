"""TLS between member gateways: each presents the gateway certificate its org's TLS CA issued, and trusts the TLS CAs
of every member (the CAs in the channel configuration). The CA that issued a caller's certificate names its org."""

from __future__ import annotations

import ssl

from consortium.topology import Org, Topology


def member_cas(topology: Topology) -> str:
    """Every member org's TLS CA certificate, as one PEM bundle."""
    return "".join(topology.tls_ca_cert(o).read_text() for o in topology.member_orgs)


def member_client_context(topology: Topology, org: Org) -> ssl.SSLContext:
    """For calling other members' gateways as `org`: trust every member's TLS CA, present the org's certificate."""
    tls = topology.gateway_tls_dir(org)
    ctx = ssl.create_default_context(cadata=member_cas(topology))
    ctx.load_cert_chain(tls / "server.crt", tls / "server.key")
    return ctx


def member_url(topology: Topology, msp: str) -> str:
    """The base URL of a member's gateway."""
    org = topology.org(msp)
    return f"https://{topology.host}:{topology.gateway_port(org)}"
