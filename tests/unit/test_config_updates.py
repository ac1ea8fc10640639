"""Config updates without a network: an org definition becomes the org's group; an update names what it changes;
signatures are verified against the signing org's CA in the channel config; the modification policy is evaluated
exactly as the orderer would, and what is missing is named."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from fabric_protos.common import configtx_pb2, policies_pb2
from fabric_protos.msp import msp_principal_pb2

from fabric_gateway.identity import Identity, ecdsa_signer
from network import configupdate as cu
from network import crypto
from network.orgdef import BadDefinition, Endpoint, OrgDefinition
from tests.unit import made_certs


class Org:
    def __init__(self, name: str, msp: str) -> None:
        self.name, self.msp = name, msp
        self.ca = made_certs.ca(f"ca.{name}")
        self.tlsca = made_certs.ca(f"tlsca.{name}")
        self.admin_cert, self.admin_key = crypto.issue(self.ca, f"Admin@{name}", tls=False, ou="admin")
        self.client_cert, self.client_key = crypto.issue(self.ca, f"User1@{name}", tls=False, ou="client")

    def definition(self) -> OrgDefinition:
        pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
        return OrgDefinition(
            name=self.name,
            msp_id=self.msp,
            kind="insurer",
            subdomain=self.name.lower(),
            domain=f"{self.name.lower()}.example",
            host="10.0.0.9",
            root_certs=[pem(self.ca[0])],
            tls_root_certs=[pem(self.tlsca[0])],
            admins=[pem(self.admin_cert)],
            anchor_peers=[Endpoint("10.0.0.9", 7051)],
        )

    def sign(self, f: cu.UpdateFile, admin: bool = True) -> None:
        cert, key = (self.admin_cert, self.admin_key) if admin else (self.client_cert, self.client_key)
        f.sign(Identity(self.msp, cert.public_bytes(serialization.Encoding.PEM)), ecdsa_signer(key))


def _implicit(rule: int, sub: str) -> configtx_pb2.ConfigPolicy:
    meta = policies_pb2.ImplicitMetaPolicy(sub_policy=sub, rule=rule)
    policy = policies_pb2.Policy(type=policies_pb2.Policy.IMPLICIT_META, value=meta.SerializeToString())
    return configtx_pb2.ConfigPolicy(mod_policy="Admins", policy=policy)


def channel(*orgs: Org) -> configtx_pb2.Config:
    config = configtx_pb2.Config(sequence=3)
    app = config.channel_group.groups["Application"]
    app.mod_policy = "Admins"
    app.version = 1
    app.policies["Admins"].CopyFrom(_implicit(policies_pb2.ImplicitMetaPolicy.MAJORITY, "Admins"))
    for o in orgs:
        app.groups[o.name].CopyFrom(cu.application_org_group(o.definition()))
    return config


def update_adding(config: configtx_pb2.Config, new: Org) -> cu.UpdateFile:
    """What configtxlator's compute_update makes for an added org: the Application group in the read set with its
    version and its unchanged children; in the write set one version on, with the new child at version 0."""
    app = config.channel_group.groups["Application"]
    update = configtx_pb2.ConfigUpdate(channel_id="claims")
    read = update.read_set.groups["Application"]
    write = update.write_set.groups["Application"]
    read.version, write.version, write.mod_policy = app.version, app.version + 1, "Admins"
    for key, group in app.groups.items():
        read.groups[key].version = group.version
        write.groups[key].version = group.version
    write.groups[new.name].CopyFrom(cu.application_org_group(new.definition()))
    raw = update.SerializeToString()
    return cu.UpdateFile("claims", update, raw, [])


@pytest.fixture
def orgs() -> dict[str, Org]:
    return {n: Org(n, n.replace("Org", "MSP")) for n in ("HospitalOrg", "ClinicOrg", "InsurerOrg", "Insurer2Org")}


def test_an_org_definition_becomes_the_group_configtxgen_would_write(orgs: dict[str, Org]) -> None:
    group = cu.application_org_group(orgs["Insurer2Org"].definition())
    assert set(group.policies) == {"Readers", "Writers", "Admins", "Endorsement"}
    assert set(group.values) == {"MSP", "AnchorPeers"}
    assert group.mod_policy == "Admins"
    env = policies_pb2.SignaturePolicyEnvelope.FromString(group.policies["Writers"].policy.value)
    roles = [msp_principal_pb2.MSPRole.FromString(p.principal) for p in env.identities]
    assert [(r.msp_identifier, r.role) for r in roles] == [("Insurer2MSP", 1), ("Insurer2MSP", 2)]
    assert env.rule.n_out_of.n == 1
    assert cu.msp_id_of(group) == "Insurer2MSP"


def test_an_update_says_what_it_adds_and_who_must_sign(orgs: dict[str, Org]) -> None:
    config = channel(orgs["HospitalOrg"], orgs["ClinicOrg"], orgs["InsurerOrg"])
    f = update_adding(config, orgs["Insurer2Org"])
    st = cu.status(f, config)
    assert [str(c) for c in st.changes] == ["adds Application/Insurer2Org"]
    (req,) = st.requirements
    assert req.policy == "/Channel/Application/Admins"
    assert not req.satisfied and "2 of 3" in req.rule
    assert req.missing.startswith("2 more of:")
    orgs["HospitalOrg"].sign(f)
    st = cu.status(f, config)
    assert not st.ready and st.requirements[0].missing == "1 more of: ClinicOrg, InsurerOrg"
    orgs["ClinicOrg"].sign(f)
    assert cu.status(f, config).ready


def test_only_admins_of_members_count(orgs: dict[str, Org], tmp_path: Path) -> None:
    config = channel(orgs["HospitalOrg"], orgs["ClinicOrg"], orgs["InsurerOrg"])
    f = update_adding(config, orgs["Insurer2Org"])
    orgs["HospitalOrg"].sign(f, admin=False)  # a client, not an admin
    orgs["Insurer2Org"].sign(f)  # not a member yet
    impostor = Org("ClinicOrg", "ClinicMSP")  # same name, another CA
    impostor.sign(f)
    # A valid signature over another update does not carry over.
    other = update_adding(config, orgs["Insurer2Org"])
    orgs["InsurerOrg"].sign(other)
    f.signatures.append(other.signatures[0])
    f.update_bytes = f.update_bytes + b""  # the same update, so the copied signature must fail on its content
    path = tmp_path / "u.pb"
    f.write(path)
    again = cu.UpdateFile.read(path)
    st = cu.status(again, config)
    assert not st.ready
    assert [s.msp_id for s in st.signatures.valid] == ["HospitalMSP", "InsurerMSP"]
    assert any("not in the channel" in why for why in st.signatures.invalid)
    assert any("not issued by ClinicMSP's CA" in why for why in st.signatures.invalid)
    # The client's signature is valid but does not satisfy Admins; InsurerOrg's counts (it signed the same bytes).
    (req,) = st.requirements
    assert req.signed == ["InsurerOrg"]


def test_removing_and_anchor_changes_need_their_own_policies(orgs: dict[str, Org]) -> None:
    config = channel(orgs["HospitalOrg"], orgs["ClinicOrg"], orgs["InsurerOrg"])
    after = cu.without_org(config, "ClinicMSP")
    assert sorted(cu.application_orgs(after)) == ["HospitalMSP", "InsurerMSP"]
    with pytest.raises(cu.UpdateError, match="not a member"):
        cu.without_org(after, "ClinicMSP")
    with pytest.raises(cu.UpdateError, match="already a member"):
        cu.with_org(config, orgs["InsurerOrg"].definition())
    # An anchor peer change modifies only the org's own AnchorPeers value: its own admins decide.
    update = configtx_pb2.ConfigUpdate(channel_id="claims")
    app_r = update.read_set.groups["Application"]
    app_w = update.write_set.groups["Application"]
    app_r.version = app_w.version = 1
    org_r, org_w = app_r.groups["ClinicOrg"], app_w.groups["ClinicOrg"]
    org_r.version = org_w.version = 0
    org_r.policies["Admins"].version = org_w.policies["Admins"].version = 0
    org_r.values["MSP"].version = org_w.values["MSP"].version = 0
    org_w.values["AnchorPeers"].CopyFrom(cu.anchor_peers_value([("10.0.0.2", 7051)]))
    org_w.values["AnchorPeers"].version = 1
    f = cu.UpdateFile("claims", update, update.SerializeToString(), [])
    st = cu.status(f, config)
    assert [str(c) for c in st.changes] == ["changes Application/ClinicOrg/AnchorPeers"]
    (req,) = st.requirements
    assert req.policy == "/Channel/Application/ClinicOrg/Admins"
    orgs["HospitalOrg"].sign(f)
    assert not cu.status(f, config).ready
    orgs["ClinicOrg"].sign(f)
    assert cu.status(f, config).ready


def test_a_definition_carrying_a_key_is_refused(orgs: dict[str, Org]) -> None:
    doc = orgs["Insurer2Org"].definition().to_json()
    key_pem = orgs["Insurer2Org"].admin_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    doc["admins"] = [doc["admins"][0] + key_pem.decode()]
    with pytest.raises(BadDefinition, match="private key"):
        OrgDefinition.from_json(doc)
    doc = orgs["Insurer2Org"].definition().to_json()
    doc["name"] = "insurer2"
    with pytest.raises(BadDefinition, match="org name"):
        OrgDefinition.from_json(doc)
    assert OrgDefinition.from_json(orgs["Insurer2Org"].definition().to_json()) == orgs["Insurer2Org"].definition()
