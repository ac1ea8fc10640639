"""A chaincode event listener process for the crash/restart test.

For each Probe.Written event whose key starts with --prefix it records the transaction id in a Redis list, and it
moves its Redis checkpoint in the same MULTI transaction, so a SIGKILL at any point leaves effect and checkpoint
together. Run: python -m tests.integration.event_listener --home H --port-base P --name N --prefix X
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import redis

from consortium import connect
from consortium import topology as topo
from fabric_gateway.checkpoint import RedisCheckpointer, after_event


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--port-base", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    t = topo.load(home=args.home, port_base=args.port_base)
    r = redis.Redis.from_url(t.redis_admin_url)
    checkpointer = RedisCheckpointer(r, args.name)
    handled_key = f"test:handled:{args.name}"
    with connect.gateway(t, "InsurerOrg") as gw:
        for event in gw.network("claims").chaincode_events(t.chaincode_name, checkpoint=checkpointer.load()):
            with r.pipeline(transaction=True) as pipe:
                if event.name == "Probe.Written" and json.loads(event.payload)["key"].startswith(args.prefix):
                    pipe.rpush(handled_key, event.tx_id)
                checkpointer.save(after_event(event), pipeline=pipe)
                pipe.execute()


if __name__ == "__main__":
    main()
