"""The asyncio Gateway client (used by the HTTP gateway) against the real network."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from consortium import connect
from consortium.topology import Topology
from fabric_gateway import CommitFailed, EndorsementFailed, load_msp
from fabric_gateway.aio import AsyncGateway

pytestmark = pytest.mark.network


def test_async_submit_evaluate_errors_and_events(network: Topology) -> None:
    org = network.org("InsurerOrg")
    identity, signer = load_msp(network.user_dir(org, "User1") / "msp", org.msp_id)
    prefix = f"aio-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        async with AsyncGateway(connect.endpoint(network, org), identity, signer) as gw:
            results = await asyncio.gather(
                *(gw.submit("claims", "careledger", "Probe:Write", [f"{prefix}-{i}", str(i)]) for i in range(20))
            )
            assert all(r.status is not None and r.status.successful for r in results)
            record = json.loads(await gw.evaluate("claims", "careledger", "Probe:Read", [f"{prefix}-7"]))
            assert record["value"] == "7" and record["writer"] == "InsurerMSP"
            with pytest.raises(EndorsementFailed, match="invalid probe key"):
                await gw.submit("claims", "careledger", "Probe:Write", ["bad key", "v"])
            with pytest.raises(CommitFailed, match="ENDORSEMENT_POLICY_FAILURE"):
                await gw.submit(
                    "claims", "careledger", "Probe:Write", [f"{prefix}-x", "v"], endorsing_orgs=["InsurerMSP"]
                )
            first_block = min(r.status.block_number for r in results if r.status)
            wanted = {r.tx_id for r in results}
            seen: list[str] = []
            events = gw.chaincode_events("claims", "careledger", start_block=first_block)
            async for event in events:
                if event.tx_id in wanted:
                    seen.append(event.tx_id)
                if len(seen) == len(wanted):
                    break
            await events.aclose()
            assert sorted(seen) == sorted(wanted)

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
