"""The consortium definition renders to distinct addresses, the channel layout the design names, and sane config."""

import json
from pathlib import Path

import pytest

from consortium import topology as topo
from network import chaincode_config, configtx, crypto


@pytest.fixture
def t(tmp_path: Path) -> topo.Topology:
    return topo.load(home=tmp_path, port_base=20000)


def all_ports(t: topo.Topology) -> list[int]:
    ports = [p for n in t.nodes for p in (n.port, n.second_port, n.ops_port)]
    ports += [int(t.chaincode_address(o).rsplit(":", 1)[1]) for o in t.member_orgs]
    ports += [t.redis_port, t.postgres_port]
    ports += [t.gateway_port(o) for o in t.member_orgs]
    return ports


def test_every_listener_has_its_own_port(t: topo.Topology) -> None:
    ports = all_ports(t)
    assert len(ports) == len(set(ports))


def test_two_port_bases_do_not_overlap(tmp_path: Path) -> None:
    a = set(all_ports(topo.load(home=tmp_path, port_base=17000)))
    b = set(all_ports(topo.load(home=tmp_path, port_base=27000)))
    assert not a & b


def test_channel_membership_matches_the_design(t: topo.Topology) -> None:
    members = {ch: sorted(o.name for o in orgs) for ch, orgs in t.channels.items()}
    assert members == {
        "providers": ["ClinicOrg", "HospitalOrg"],
        "claims": ["ClinicOrg", "HospitalOrg", "InsurerOrg"],
        "pharma": ["ClinicOrg", "HospitalOrg", "PharmaOrg"],
    }
    assert t.channels_of(t.org("InsurerOrg")) == ["claims"]
    assert t.channels_of(t.org("PharmaMSP")) == ["pharma"]


def test_naming_conventions(t: topo.Topology) -> None:
    for org in [t.orderer_org, *t.member_orgs]:
        assert org.name.endswith("Org")
        assert org.msp_id.endswith("MSP")
    assert len(t.orderers) == 3


def test_unknown_org_is_a_clear_error(t: topo.Topology) -> None:
    with pytest.raises(KeyError, match="there is no member org 'NopeOrg'"):
        t.org("NopeOrg")


def test_every_path_is_inside_the_run_folder(t: topo.Topology) -> None:
    for node in t.nodes:
        for path in (t.node_dir(node), t.data_dir(node.name), t.log_file(node.name), t.pid_file(node.name)):
            assert path.is_relative_to(t.home)


def test_each_orgs_files_are_in_its_own_home(t: topo.Topology) -> None:
    for org in t.all_orgs:
        home = t.org_home(org)
        for node in t.nodes_of(org):
            assert t.node_dir(node).is_relative_to(home) and t.node_data_dir(node).is_relative_to(home)
        if org.is_orderer:
            continue
        for path in (
            t.gateway_home(org),
            t.gateway_tls_dir(org),
            t.master_key_file(org),
            t.consortium_key_file(org),
            t.redis_password_file(org),
            t.token_issuer_key_file(org),
            t.chaincode_home(org),
            t.own_tls_ca_cert(org),
            t.user_dir(org, "User1"),
        ):
            assert path.is_relative_to(home), path
        # What others read of it is published outside every home.
        assert t.tls_ca_cert(org).is_relative_to(t.consortium_dir)
        assert not t.tls_ca_cert(org).is_relative_to(t.orgs_dir)


def test_configtx_policies_and_capabilities(t: topo.Topology) -> None:
    profile = configtx.channel_profile(t, "claims")
    app = profile["Application"]
    assert app["Policies"]["Endorsement"] == {"Type": "ImplicitMeta", "Rule": "MAJORITY Endorsement"}
    assert app["Policies"]["LifecycleEndorsement"]["Rule"] == "MAJORITY Endorsement"
    assert app["Policies"]["Admins"]["Rule"] == "MAJORITY Admins"
    assert app["Capabilities"] == {"V2_5": True}
    assert profile["Capabilities"] == {"V3_0": True}
    assert [o["ID"] for o in app["Organizations"]] == ["HospitalMSP", "ClinicMSP", "InsurerMSP"]
    hospital = app["Organizations"][0]
    assert hospital["Policies"]["Writers"]["Rule"] == "OR('HospitalMSP.admin', 'HospitalMSP.client')"
    assert hospital["AnchorPeers"] == [{"Host": "127.0.0.1", "Port": t.peer_of("HospitalOrg").port}]
    orderer = profile["Orderer"]
    assert orderer["OrdererType"] == "etcdraft"
    assert len(orderer["EtcdRaft"]["Consenters"]) == 3
    assert orderer["BatchTimeout"] == "100ms"
    # V3_0 forbids a global orderer address list: endpoints are per orderer org.
    assert "Addresses" not in orderer
    assert orderer["Organizations"][0]["OrdererEndpoints"] == [n.address for n in t.orderers]


def test_tls_certificates_name_the_orgs_host(t: topo.Topology) -> None:
    for org in t.all_orgs:
        config = crypto.cryptogen_config(t, org)
        (entry,) = config["OrdererOrgs" if org.is_orderer else "PeerOrgs"]
        assert entry["EnableNodeOUs"]
        assert [s["Hostname"] for s in entry["Specs"]] == [n.short for n in t.nodes_of(org)]
        assert all(s["SANS"][0] == org.host == "127.0.0.1" for s in entry["Specs"])


def test_chaincode_config_names_kinds_and_contracts_per_channel(t: topo.Topology) -> None:
    config = json.loads(chaincode_config.contracts_config(t))
    assert config["orgKinds"] == {
        "HospitalMSP": "provider",
        "ClinicMSP": "provider",
        "InsurerMSP": "insurer",
        "PharmaMSP": "manufacturer",
    }
    assert config["channels"] == {
        "providers": ["Records", "Consent", "Audit", "Trials"],
        "claims": ["Claims"],
        "pharma": ["Supply"],
    }


def test_claim_lines_collections_pair_each_provider_with_the_insurer(t: topo.Topology) -> None:
    assert chaincode_config.collections(t, "providers") == []
    cols = {c["name"]: c for c in chaincode_config.collections(t, "claims")}
    assert set(cols) == {"lines_HospitalMSP_InsurerMSP", "lines_ClinicMSP_InsurerMSP"}
    hospital = cols["lines_HospitalMSP_InsurerMSP"]
    assert hospital["policy"] == "OR('HospitalMSP.member','InsurerMSP.member')"
    assert hospital["memberOnlyRead"] and hospital["memberOnlyWrite"]
    path = chaincode_config.collections_file(t, "claims")
    assert path is not None and json.loads(path.read_text()) == chaincode_config.collections(t, "claims")


def test_a_collection_outlives_the_member_that_left(t: topo.Topology) -> None:
    """Fabric never drops a collection from a definition: ClinicOrg's pair stays, with ClinicOrg out of its policy."""
    with t.editing_overlay() as overlay:
        overlay["channels"] = {"claims": ["HospitalOrg", "InsurerOrg"]}
        overlay["former_members"] = {"claims": [{"msp_id": "ClinicMSP", "kind": "provider"}]}
    cols = {c["name"]: c for c in chaincode_config.collections(t, "claims")}
    assert set(cols) == {"lines_HospitalMSP_InsurerMSP", "lines_ClinicMSP_InsurerMSP"}
    assert cols["lines_ClinicMSP_InsurerMSP"]["policy"] == "OR('InsurerMSP.member')"
    assert cols["lines_HospitalMSP_InsurerMSP"]["policy"] == "OR('HospitalMSP.member','InsurerMSP.member')"
