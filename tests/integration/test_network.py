"""The consortium as docs/ARCHITECTURE.md describes it (orgs, channels, policies, mutual TLS), tested against the real
Fabric network."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from fabric_protos.common import common_pb2, configtx_pb2
from fabric_protos.orderer import configuration_pb2
from fabric_protos.orderer.etcdraft import configuration_pb2 as etcdraft_pb2

from consortium import processes, readiness
from consortium.errors import CommandFailed, PortInUse
from consortium.secrets import is_key_file
from consortium.topology import Node, Topology
from network import chaincode as cc
from network import channels, configtx, control, nodes, probe
from network.admin import Admin

pytestmark = pytest.mark.network


def test_each_peer_joined_exactly_its_channels(network: Topology, admin: Admin) -> None:
    for org in network.member_orgs:
        assert channels.peer_channels(admin, org) == set(network.channels_of(org)), org.name
    assert channels.peer_channels(admin, network.org("InsurerOrg")) == {"claims"}
    assert channels.peer_channels(admin, network.org("PharmaOrg")) == {"pharma"}
    for orderer in network.orderers:
        assert channels.orderer_channels(admin, orderer) == set(network.channels)


def test_status_reports_every_node_channel_and_definition(network: Topology) -> None:
    state = control.status(network)
    assert {n["name"] for n in state["nodes"]} == {n.name for n in network.nodes}
    assert all(n["healthy"] for n in state["nodes"])
    assert set(state["channels"]) == {"providers", "claims", "pharma"}
    claims = state["channels"]["claims"]
    assert claims["members"] == ["HospitalMSP", "ClinicMSP", "InsurerMSP"]
    assert set(claims["heights"]) == {"peer0.hospital", "peer0.clinic", "peer0.insurer"}
    assert all(isinstance(h, int) and h >= 2 for h in claims["heights"].values())
    for name, channel in state["channels"].items():
        assert [(d["name"], d["version"]) for d in channel["chaincodes"]] == [
            ("careledger", cc.chaincode_version(network, name))
        ]


def test_chaincode_is_committed_on_all_channels(network: Topology, admin: Admin) -> None:
    for channel, members in network.channels.items():
        for org in members:
            defs = cc.committed(admin, org, channel)
            assert [d.name for d in defs] == ["careledger"], (channel, org.name)


def test_invoke_on_claims_is_readable_by_members_only(network: Topology, admin: Admin) -> None:
    hospital = network.org("HospitalOrg")
    probe.write(admin, "claims", hospital, "claims-visibility", "v1")
    for name in ("HospitalOrg", "ClinicOrg", "InsurerOrg"):
        record = probe.read(admin, "claims", network.org(name), "claims-visibility")
        assert record["value"] == "v1"
        assert record["writer"] == "HospitalMSP"
    # PharmaOrg's peer holds no claims ledger: the query is refused.
    with pytest.raises(CommandFailed) as refused:
        probe.read(admin, "claims", network.org("PharmaOrg"), "claims-visibility")
    assert "claims" in refused.value.output
    # And PharmaOrg's admin cannot read it through a claims member's peer either.
    with pytest.raises(CommandFailed):
        call = json.dumps({"function": "Probe:Read", "Args": ["claims-visibility"]})
        args = ["chaincode", "query", "-C", "claims", "-n", "careledger", "-c", call]
        admin.peer(network.org("PharmaOrg"), args, "foreign read", peer=network.peer_of("HospitalOrg"))


def _orderer_height(admin: Admin, orderer: Node, channel: str) -> int:
    out = admin.osnadmin(orderer, ["channel", "list", "--channelID", channel], "channel info")
    return int(json.loads(out[out.index("{") :])["height"])


def test_a_resumed_orderer_answers_its_admin_port_when_up_returns(network: Topology, admin: Admin) -> None:
    """`up` after an orderer was killed restarts it and goes straight on to channel participation (osnadmin on the
    admin port), which Fabric opens after /healthz and the main port's socket: `up` must wait for every listener."""
    orderer = network.orderers[1]
    nodes.process(network, orderer).stop(timeout=0, sig=signal.SIGKILL)
    lines: list[str] = []
    control.up(network, progress=lines.append)
    assert any(f"starting orderer {orderer.name}" in ln for ln in lines), lines
    assert channels.orderer_channels(admin, orderer) == set(network.channels)
    for n in network.nodes:
        assert all(processes.accepts(n.host, p) for p in n.ports), n.name


def test_channels_survive_the_loss_of_one_orderer(network: Topology, admin: Admin) -> None:
    leader = channels.raft_leader(network, "claims")
    assert leader is not None
    survivor = next(o for o in network.orderers if o != leader)
    hospital = network.org("HospitalOrg")
    nodes.process(network, leader).stop()
    try:
        for i in range(3):
            # Sent through a surviving orderer; a new leader is elected within the Raft election timeout.
            for attempt in range(20):
                try:
                    probe.write(admin, "claims", hospital, f"failover-{i}", str(i))
                    break
                except CommandFailed:
                    if attempt == 19:
                        raise
                    time.sleep(0.5)
        assert probe.read(admin, "claims", network.org("InsurerOrg"), "failover-2")["value"] == "2"
    finally:
        fabric = admin.binaries
        nodes.start(network, fabric, leader)
        nodes.wait_healthy(network, leader)
    target = _orderer_height(admin, survivor, "claims")
    deadline = time.monotonic() + 30
    while _orderer_height(admin, leader, "claims") < target:
        assert time.monotonic() < deadline, "restarted orderer did not catch up"
        time.sleep(0.5)
    assert _orderer_height(admin, leader, "claims") >= target


def _pids(network: Topology) -> dict[str, int | None]:
    return {p.name: p.pid() for p in control.managed_processes(network)}


def test_up_on_a_running_network_changes_nothing(network: Topology) -> None:
    before_pids = _pids(network)
    before = control.status(network)["channels"]
    lines: list[str] = []
    control.up(network, progress=lines.append)
    assert _pids(network) == before_pids
    assert control.status(network)["channels"] == before
    changes = [ln for ln in lines if re.search(r"starting|joined|installed|committed .* at sequence|generated", ln)]
    assert changes == [], changes


def test_down_then_up_keeps_the_ledgers(network: Topology, admin: Admin) -> None:
    hospital = network.org("HospitalOrg")
    probe.write(admin, "providers", hospital, "survives-restart", "kept")
    before = control.status(network)["channels"]
    control.down(network, progress=lambda _m: None)
    assert all(p.pid() is None for p in control.managed_processes(network))
    control.up(network, progress=lambda _m: None)
    after = control.status(network)["channels"]
    for channel, state in before.items():
        assert after[channel]["chaincodes"] == state["chaincodes"]
        for peer, height in state["heights"].items():
            assert after[channel]["heights"][peer] >= height
    assert probe.read(admin, "providers", network.org("ClinicOrg"), "survives-restart")["value"] == "kept"


def test_a_changed_chaincode_redeploys_with_the_next_sequence(
    network: Topology, admin: Admin, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sequences = {ch: cc.committed(admin, m[0], ch)[0].sequence for ch, m in network.channels.items()}
    changed = tmp_path / "chaincode"
    import shutil

    shutil.copytree(cc.SOURCE_DIR, changed)
    (changed / "revision.go").write_text("package main\n\n// revision marks a changed build for the upgrade test.\n")
    monkeypatch.setattr(cc, "SOURCE_DIR", changed)
    cc.ensure_deployed(admin)
    for channel, members in network.channels.items():
        (definition,) = cc.committed(admin, members[0], channel)
        assert definition.sequence == sequences[channel] + 1
        assert definition.version == cc.chaincode_version(network, channel)
    # The upgraded chaincode serves transactions.
    probe.write(admin, "pharma", network.org("PharmaOrg"), "after-upgrade", "ok")
    assert probe.read(admin, "pharma", network.org("HospitalOrg"), "after-upgrade")["value"] == "ok"
    monkeypatch.undo()
    cc.ensure_deployed(admin)  # back to the working tree's chaincode, at the sequence after that
    for channel, members in network.channels.items():
        assert cc.committed(admin, members[0], channel)[0].sequence == sequences[channel] + 2


def test_package_is_reproducible(network: Topology) -> None:
    hospital, clinic = network.org("HospitalOrg"), network.org("ClinicOrg")
    first, second = cc.package(network, hospital), cc.package(network, hospital)
    assert first.package_id == second.package_id
    assert first.path.read_bytes() == second.path.read_bytes()
    # Each org packages for its own chaincode server: same label (the source), its own id (address, TLS).
    other = cc.package(network, clinic)
    assert other.label == first.label and other.package_id != first.package_id
    assert first.path.is_relative_to(network.org_home(hospital))


def test_a_taken_port_fails_fast_and_names_it(network: Topology, tmp_path) -> None:
    import socket

    from consortium import topology as topo

    with socket.socket() as s:
        # The first network base above ours whose Redis port we can take (another run may hold the next one).
        for base in range(network.port_base + 1000, 60000, 1000):
            other = topo.load(home=tmp_path / "net", port_base=base)
            try:
                s.bind((other.host, other.redis_port))
                break
            except OSError:
                continue
        s.listen()
        started = time.monotonic()
        with pytest.raises(PortInUse, match=f"{other.host}:{other.redis_port}"):
            control.up(other, progress=lambda _m: None)
        assert time.monotonic() - started < 30
    control.down(other, purge=True, progress=lambda _m: None)


def test_commands_against_a_stopped_network_say_what_to_run(network: Topology, tmp_path: Path) -> None:
    """A run folder with keys and certificates, but nothing running on its ports: each command names what is down
    and what to run, without a traceback (and starts nothing)."""
    home = tmp_path / "run"
    shutil.copytree(network.home, home, ignore=shutil.ignore_patterns("data", "logs", "pids", "chaincode"))
    base = next(b for b in range(network.port_base + 5000, 65000, 1000) if not readiness.answers("127.0.0.1", b + 100))
    env = {**os.environ, "CARELEDGER_HOME": str(home), "CARELEDGER_PORT_BASE": str(base)}
    for args in (["gateway", "start"], ["worker", "start"], ["demo"], ["network", "check"], ["network", "status"]):
        done = subprocess.run(
            [sys.executable, "-m", "careledger.cli", *args], env=env, capture_output=True, text=True, timeout=60
        )
        output = done.stdout + done.stderr
        assert done.returncode != 0 and "Traceback" not in output, output
        assert "careledger network up" in output, output
    assert not (home / "pids").exists() or not list((home / "pids").iterdir())


# ----- secrets on disk ------------------------------------------------------------------------------------------


def _is_secret(path: Path, home: Path) -> bool:
    """Keys, packages and files that hold keys, passwords, and supervisord's files (they hold programs' settings)."""
    parts = path.relative_to(home).parts
    return (
        is_key_file(path)
        or path.suffix in (".password", ".acl")
        or path.name == "connection.json"  # the chaincode server's client key, unpacked by the peers' builder
        or (path.name.endswith(".tar.gz") and path.parent.name in ("chaincode", "chaincodes"))
        or (parts[0] == "supervisor" and path.suffix == ".conf")
    )


def _open_to_others(path: Path) -> bool:
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def test_no_secret_is_readable_by_other_users(network: Topology, gateways: dict[str, object]) -> None:
    """Walk the whole run folder: every secret is 0600 in a folder of mode 0700, every keystore/ folder is 0700."""
    secrets: list[Path] = []
    exposed: list[str] = []
    for folder, _dirs, files in os.walk(network.home):
        here = Path(folder)
        if here.name == "keystore" and _open_to_others(here):
            exposed.append(f"{here} (keystore folder {stat.filemode(here.stat().st_mode)})")
        for name in files:
            path = here / name
            if path.is_symlink() or not _is_secret(path, network.home):
                continue
            secrets.append(path)
            if _open_to_others(path):
                exposed.append(f"{path} ({stat.filemode(path.stat().st_mode)})")
            elif _open_to_others(here):
                exposed.append(f"{path} in a folder others can open ({stat.filemode(here.stat().st_mode)})")
    assert not exposed, "\n".join(exposed)
    # Others may pass through the run folder (search only: PostgreSQL's own user reaches its data folder below it),
    # never list, read or write it.
    readable = stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH
    assert not network.home.stat().st_mode & readable
    # The walk found what it must have found, so it is not passing on an empty tree.
    names = {p.name for p in secrets}
    assert {"priv_sk", "server.key", "client.key", "master.key", "pseudonym.key", "token-issuer.key"} <= names
    assert {"redis.password", "admin.password", "users.acl", "connection.json"} <= names
    packages = [p for p in secrets if p.name.endswith(".tar.gz")]
    for org in network.member_orgs:
        assert any(p.parent == network.chaincode_home(org) for p in packages), f"{org.name}'s chaincode package"
    assert any(p.parent.name == "chaincodes" for p in packages), "the packages installed on the peers"


def test_each_org_holds_only_its_own_keys_and_publishes_none(network: Topology) -> None:
    """Each org's home holds its own identities and nothing of another org; what orgs exchange (the consortium
    folder) holds no private key."""
    for org in network.all_orgs:
        crypto_tree = network.crypto_dir(org)
        assert sorted(p.name for p in (crypto_tree / org.org_type_dir).iterdir()) == [org.domain], org.name
        others = [o for o in network.all_orgs if o != org]
        for folder, _dirs, _files in os.walk(network.org_home(org)):
            assert not any(o.domain in folder or f"/{o.name}/" in folder for o in others), folder
    for folder, _dirs, files in os.walk(network.consortium_dir):
        for name in files:
            path = Path(folder) / name
            assert not is_key_file(path), f"a key in the public consortium folder: {path}"
            assert b"PRIVATE KEY" not in path.read_bytes(), f"a private key in {path}"


# ----- operations endpoints ---------------------------------------------------------------------------------


def _ops_get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.parametrize("path", ["/healthz", "/logspec", "/metrics"])
def test_operations_endpoints_refuse_plain_http_and_clients_without_a_certificate(network: Topology, path: str) -> None:
    for node in (network.orderers[0], network.peer_of("HospitalOrg")):
        # Plain HTTP: the TLS server answers 400 and serves nothing.
        status, body = _ops_get(f"http://{node.host}:{node.ops_port}{path}")
        assert status == 400 and b"HTTPS" in body, (node.name, status, body[:200])
        # TLS, but no client certificate: the handshake is refused.
        no_cert = ssl.create_default_context(cafile=str(network.tls_ca_cert(node.org)))
        with pytest.raises((urllib.error.URLError, OSError)):
            _ops_get(node.ops_url + path, no_cert)
        # A client certificate of another org's TLS CA: refused too.
        other = network.org("PharmaOrg") if node.kind == "peer" else network.org("InsurerOrg")
        foreign = ssl.create_default_context(cafile=str(network.tls_ca_cert(node.org)))
        foreign_tls = network.user_dir(other) / "tls"
        foreign.load_cert_chain(foreign_tls / "client.crt", foreign_tls / "client.key")
        with pytest.raises((urllib.error.URLError, OSError)):
            _ops_get(node.ops_url + path, foreign)
        # The node's own org's admin is served.
        status, body = _ops_get(node.ops_url + path, nodes.client_context(network, node))
        assert status == 200, (node.name, status, body[:200])


def test_the_tooling_reports_health_over_mutual_tls(network: Topology) -> None:
    for node in network.nodes:
        assert nodes.healthy(network, node), node.name
        assert json.loads(nodes.operations_get(network, node, "/logspec"))["spec"]
    assert all(n["healthy"] for n in control.status(network)["nodes"])
    assert all(channels.raft_leader(network, ch) is not None for ch in network.channels)


# ----- Raft snapshots ---------------------------------------------------------------------------------------


def test_raft_snapshots_bound_the_write_ahead_log(network: Topology) -> None:
    """Every channel's orderers snapshot their Raft log each 16 MB of blocks, so the WAL is truncated (the rendered
    configtx.yaml says so, and so does the channel configuration the orderers run with)."""
    rendered = yaml.safe_load((configtx.render(network) / "configtx.yaml").read_text())
    for channel in network.channels:
        options = rendered["Profiles"][channel]["Orderer"]["EtcdRaft"]["Options"]
        assert options["SnapshotIntervalSize"] == configtx.SNAPSHOT_INTERVAL_SIZE == "16 MB"
        block = common_pb2.Block.FromString((network.channel_artifacts_dir / f"{channel}.block").read_bytes())
        envelope = common_pb2.Envelope.FromString(block.data.data[0])
        config = configtx_pb2.ConfigEnvelope.FromString(common_pb2.Payload.FromString(envelope.payload).data).config
        consensus = configuration_pb2.ConsensusType.FromString(
            config.channel_group.groups["Orderer"].values["ConsensusType"].value
        )
        metadata = etcdraft_pb2.ConfigMetadata.FromString(consensus.metadata)
        assert metadata.options.snapshot_interval_size == 16 * 1024 * 1024, channel
