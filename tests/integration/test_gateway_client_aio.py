"""The asyncio Gateway client (used by the HTTP gateway) against the real network."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from consortium import connect
from consortium.topology import Topology
from fabric_gateway import AsyncGateway, CommitError, EndorseError, load_msp

pytestmark = pytest.mark.network


def test_async_submit_evaluate_errors_and_events(network: Topology) -> None:
    org = network.org("InsurerOrg")
    identity, signer = load_msp(network.user_dir(org, "User1") / "msp", org.msp_id)
    prefix = f"aio-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        async with AsyncGateway(connect.endpoint(network, org), identity, signer) as gw:
            claims = gw.network("claims")
            contract = claims.contract("careledger", "Probe")
            results = await asyncio.gather(
                *(contract.submit("Write", args=[f"{prefix}-{i}", str(i)]) for i in range(20))
            )
            assert all(r.status.successful for r in results)
            record = json.loads(await contract.evaluate("Read", args=[f"{prefix}-7"]))
            assert record["value"] == "7" and record["writer"] == "InsurerMSP"
            with pytest.raises(EndorseError, match="invalid probe key"):
                await contract.submit("Write", args=["bad key", "v"])
            with pytest.raises(CommitError, match="ENDORSEMENT_POLICY_FAILURE"):
                await contract.submit("Write", args=[f"{prefix}-x", "v"], endorsing_orgs=["InsurerMSP"])

            # Step by step, with the transaction kept as bytes and sent from them.
            transaction = await contract.new_proposal("Write", args=[f"{prefix}-kept", "v"]).endorse()
            status = await (await gw.transaction_from_bytes(transaction.to_bytes()).submit()).status()
            assert status.successful and await claims.commit_status(transaction.tx_id) == status
            await claims.wait_for_block(status.block_number, orgs=["HospitalMSP", "ClinicMSP"])

            first_block = min(r.status.block_number for r in results)
            wanted = {r.tx_id for r in results}
            seen: list[str] = []
            events = claims.chaincode_events("careledger", start_block=first_block)
            async for event in events:
                if event.tx_id in wanted:
                    seen.append(event.tx_id)
                if len(seen) == len(wanted):
                    break
            await events.aclose()
            assert sorted(seen) == sorted(wanted)

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
