"""Channel configuration updates as separate parties make them: build, sign, check, describe.

A config update travels as one file: a Fabric `Envelope` of type CONFIG_UPDATE whose `ConfigUpdateEnvelope` holds
the update (read set and write set, computed by configtxlator from the config before and after) and the admins'
signatures collected so far. Each admin adds its signature in its own home; anyone can read the file and see what
it changes, who signed it and whose signatures are still needed. The submitter hands it to an orderer with the peer
CLI (`peer channel update`), which adds the submitter's signature too.

Who must sign follows Fabric's own rule (common/configtx validator): every element the update modifies (its version
moves on) must satisfy that element's modification policy as the channel's CURRENT configuration defines it; new
elements need nothing beyond their parent's. Adding or removing an org modifies the Application group, whose
`mod_policy` is Admins: /Channel/Application/Admins, a MAJORITY of the member orgs' Admins policies. Changing an
org's own anchor peers needs only that org's admins; changing the consenter set, the ordering org's admins.

The policy check here is advisory (the orderer decides) but exact for the policies this consortium uses: implicit
meta policies (ANY / ALL / MAJORITY) and signature policies over MSP roles, with each signature verified against the
signing org's root CA in the channel configuration and its role read from its NodeOU.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.hashes import SHA256
from fabric_protos.common import common_pb2, configtx_pb2, policies_pb2
from fabric_protos.msp import identities_pb2, msp_config_pb2, msp_principal_pb2
from fabric_protos.orderer import configuration_pb2 as orderer_config_pb2
from fabric_protos.orderer.etcdraft import configuration_pb2 as etcdraft_pb2
from fabric_protos.peer import configuration_pb2 as peer_config_pb2
from google.protobuf import timestamp_pb2

from consortium.errors import CommandFailed, NetworkError
from fabric_gateway.identity import Identity, Signer
from network.binaries import FabricBinaries
from network.orgdef import NODE_OUS, OrgDefinition

ROLES = {"member": 0, "admin": 1, "client": 2, "peer": 3, "orderer": 4}
ROLE_NAMES = {v: k for k, v in ROLES.items()}
APPLICATION = "Application"
ORDERER = "Orderer"


class UpdateError(NetworkError):
    """A config update that cannot be made, signed or submitted; the message says why."""


# ----- reading blocks and configs -------------------------------------------------------------------------------


def config_from_block(block_bytes: bytes) -> configtx_pb2.Config:
    block = common_pb2.Block.FromString(block_bytes)
    envelope = common_pb2.Envelope.FromString(block.data.data[0])
    payload = common_pb2.Payload.FromString(envelope.payload)
    return configtx_pb2.ConfigEnvelope.FromString(payload.data).config


def msp_id_of(group: configtx_pb2.ConfigGroup) -> str:
    msp = msp_config_pb2.MSPConfig.FromString(group.values["MSP"].value)
    return str(msp_config_pb2.FabricMSPConfig.FromString(msp.config).name)


def application_groups(config: configtx_pb2.Config) -> dict[str, str]:
    """The channel's member orgs: group key (the org's name, as configtxgen keys it) -> MSP id."""
    groups = config.channel_group.groups[APPLICATION].groups
    return {key: msp_id_of(groups[key]) for key in sorted(groups)}


def application_orgs(config: configtx_pb2.Config) -> list[str]:
    """The MSP ids of the channel's member orgs (the Application group's sub-groups)."""
    return list(application_groups(config).values())


def _group_key(config: configtx_pb2.Config, msp_id: str) -> str:
    for key, msp in application_groups(config).items():
        if msp == msp_id:
            return key
    raise UpdateError(f"{msp_id} is not a member of this channel")


def anchor_peers(config: configtx_pb2.Config, msp_id: str) -> list[tuple[str, int]]:
    group = config.channel_group.groups[APPLICATION].groups[_group_key(config, msp_id)]
    if "AnchorPeers" not in group.values:
        return []
    value = peer_config_pb2.AnchorPeers.FromString(group.values["AnchorPeers"].value)
    return [(a.host, a.port) for a in value.anchor_peers]


def consenters(config: configtx_pb2.Config) -> list[etcdraft_pb2.Consenter]:
    consensus = orderer_config_pb2.ConsensusType.FromString(
        config.channel_group.groups[ORDERER].values["ConsensusType"].value
    )
    return list(etcdraft_pb2.ConfigMetadata.FromString(consensus.metadata).consenters)


# ----- building an org's group -----------------------------------------------------------------------------------


def signature_policy(msp_id: str, *roles: str) -> policies_pb2.SignaturePolicyEnvelope:
    """OR('<msp>.<role>', ...), as configtxgen compiles it: one principal per role, any one of them signs."""
    identities = [
        msp_principal_pb2.MSPPrincipal(
            principal_classification=msp_principal_pb2.MSPPrincipal.ROLE,
            principal=msp_principal_pb2.MSPRole(msp_identifier=msp_id, role=ROLES[r]).SerializeToString(),
        )
        for r in roles
    ]
    rules = [policies_pb2.SignaturePolicy(signed_by=i) for i in range(len(roles))]
    rule = policies_pb2.SignaturePolicy(n_out_of=policies_pb2.SignaturePolicy.NOutOf(n=1, rules=rules))
    return policies_pb2.SignaturePolicyEnvelope(version=0, rule=rule, identities=identities)


def _config_policy(env: policies_pb2.SignaturePolicyEnvelope) -> configtx_pb2.ConfigPolicy:
    policy = policies_pb2.Policy(type=policies_pb2.Policy.SIGNATURE, value=env.SerializeToString())
    return configtx_pb2.ConfigPolicy(mod_policy="Admins", policy=policy)


def msp_config(d: OrgDefinition) -> msp_config_pb2.MSPConfig:
    """The org's verifying MSP as configtxgen writes it from an MSP folder: root and TLS root certificates, NodeOUs
    (each identified by the root certificate), SHA-256 crypto config. Admins are told apart by NodeOU, not listed."""
    root = d.root_certs[0].encode()

    def ou(name: str) -> msp_config_pb2.FabricOUIdentifier:
        return msp_config_pb2.FabricOUIdentifier(certificate=root, organizational_unit_identifier=NODE_OUS[name])

    fabric = msp_config_pb2.FabricMSPConfig(
        name=d.msp_id,
        root_certs=[c.encode() for c in d.root_certs],
        tls_root_certs=[c.encode() for c in d.tls_root_certs],
        crypto_config=msp_config_pb2.FabricCryptoConfig(
            signature_hash_family="SHA2", identity_identifier_hash_function="SHA256"
        ),
        fabric_node_ous=msp_config_pb2.FabricNodeOUs(
            enable=True,
            client_ou_identifier=ou("client"),
            peer_ou_identifier=ou("peer"),
            admin_ou_identifier=ou("admin"),
            orderer_ou_identifier=ou("orderer"),
        ),
    )
    return msp_config_pb2.MSPConfig(type=0, config=fabric.SerializeToString())


def anchor_peers_value(peers: list[tuple[str, int]]) -> configtx_pb2.ConfigValue:
    value = peer_config_pb2.AnchorPeers(anchor_peers=[peer_config_pb2.AnchorPeer(host=h, port=p) for h, p in peers])
    return configtx_pb2.ConfigValue(mod_policy="Admins", value=value.SerializeToString())


def application_org_group(d: OrgDefinition) -> configtx_pb2.ConfigGroup:
    """The org's group under Application, with the policies every member has (network/configtx.py): Readers its
    admins, peers and clients; Writers its admins and clients; Admins its admins; Endorsement its peers."""
    group = configtx_pb2.ConfigGroup(mod_policy="Admins")
    group.policies["Readers"].CopyFrom(_config_policy(signature_policy(d.msp_id, "admin", "peer", "client")))
    group.policies["Writers"].CopyFrom(_config_policy(signature_policy(d.msp_id, "admin", "client")))
    group.policies["Admins"].CopyFrom(_config_policy(signature_policy(d.msp_id, "admin")))
    group.policies["Endorsement"].CopyFrom(_config_policy(signature_policy(d.msp_id, "peer")))
    group.values["MSP"].CopyFrom(configtx_pb2.ConfigValue(mod_policy="Admins", value=msp_config(d).SerializeToString()))
    if d.anchor_peers:
        group.values["AnchorPeers"].CopyFrom(anchor_peers_value([(e.host, e.port) for e in d.anchor_peers]))
    return group


# ----- changes ------------------------------------------------------------------------------------------------


def _copy(config: configtx_pb2.Config) -> configtx_pb2.Config:
    out = configtx_pb2.Config()
    out.CopyFrom(config)
    return out


def with_org(config: configtx_pb2.Config, d: OrgDefinition) -> configtx_pb2.Config:
    """The org's group added under Application, keyed by its name as configtxgen keys the founders'."""
    if d.msp_id in application_orgs(config) or d.name in application_groups(config):
        raise UpdateError(f"{d.name} ({d.msp_id}) is already a member of this channel")
    out = _copy(config)
    out.channel_group.groups[APPLICATION].groups[d.name].CopyFrom(application_org_group(d))
    return out


def without_org(config: configtx_pb2.Config, msp_id: str) -> configtx_pb2.Config:
    members = application_orgs(config)
    if msp_id not in members:
        raise UpdateError(f"{msp_id} is not a member of this channel (members: {', '.join(members)})")
    if len(members) <= 1:
        raise UpdateError(f"{msp_id} is the channel's last member; a channel needs one")
    out = _copy(config)
    del out.channel_group.groups[APPLICATION].groups[_group_key(config, msp_id)]
    return out


def with_anchor_peers(config: configtx_pb2.Config, msp_id: str, peers: list[tuple[str, int]]) -> configtx_pb2.Config:
    out = _copy(config)
    group = out.channel_group.groups[APPLICATION].groups[_group_key(config, msp_id)]
    group.values["AnchorPeers"].CopyFrom(anchor_peers_value(peers))
    return out


def with_consenter_cert(config: configtx_pb2.Config, host: str, port: int, tls_pem: bytes) -> configtx_pb2.Config:
    """The consenter at host:port presents (and is known by) another TLS certificate."""
    out = _copy(config)
    value = out.channel_group.groups[ORDERER].values["ConsensusType"]
    consensus = orderer_config_pb2.ConsensusType.FromString(value.value)
    metadata = etcdraft_pb2.ConfigMetadata.FromString(consensus.metadata)
    found = [c for c in metadata.consenters if c.host == host and c.port == port]
    if not found:
        raise UpdateError(f"there is no consenter {host}:{port} on this channel")
    for c in found:
        c.client_tls_cert = tls_pem
        c.server_tls_cert = tls_pem
    consensus.metadata = metadata.SerializeToString()
    value.value = consensus.SerializeToString()
    return out


def compute_update(
    binaries: FabricBinaries, channel: str, before: configtx_pb2.Config, after: configtx_pb2.Config
) -> bytes:
    """The ConfigUpdate (read set, write set) from one config to another, by configtxlator."""
    with tempfile.TemporaryDirectory(prefix="careledger-update-") as tmp:
        a, b, out = Path(tmp, "before.pb"), Path(tmp, "after.pb"), Path(tmp, "update.pb")
        a.write_bytes(before.SerializeToString())
        b.write_bytes(after.SerializeToString())
        argv = [
            binaries.tool("configtxlator"), "compute_update", "--channel_id", channel,
            "--original", str(a), "--updated", str(b), "--output", str(out),
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise CommandFailed("configtxlator compute_update", argv, proc.stdout + proc.stderr)
        return out.read_bytes()


# ----- the envelope that travels --------------------------------------------------------------------------------


def envelope(channel: str, update: bytes) -> common_pb2.Envelope:
    now = datetime.datetime.now(datetime.UTC)
    header = common_pb2.ChannelHeader(
        type=common_pb2.CONFIG_UPDATE,
        channel_id=channel,
        timestamp=timestamp_pb2.Timestamp(seconds=int(now.timestamp())),
    )
    cue = configtx_pb2.ConfigUpdateEnvelope(config_update=update)
    payload = common_pb2.Payload(
        header=common_pb2.Header(channel_header=header.SerializeToString()), data=cue.SerializeToString()
    )
    return common_pb2.Envelope(payload=payload.SerializeToString())


@dataclass
class UpdateFile:
    """A config-update envelope as the parties pass it around."""

    channel: str
    update: configtx_pb2.ConfigUpdate
    update_bytes: bytes
    signatures: list[configtx_pb2.ConfigSignature]

    @classmethod
    def read(cls, path: Path) -> UpdateFile:
        try:
            env = common_pb2.Envelope.FromString(path.read_bytes())
            payload = common_pb2.Payload.FromString(env.payload)
            header = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
            cue = configtx_pb2.ConfigUpdateEnvelope.FromString(payload.data)
            update = configtx_pb2.ConfigUpdate.FromString(cue.config_update)
        except FileNotFoundError:
            raise UpdateError(f"there is no update file {path}") from None
        except Exception as e:  # protobuf's DecodeError and friends
            raise UpdateError(f"{path} is not a config update envelope: {e}") from None
        if header.type != common_pb2.CONFIG_UPDATE:
            raise UpdateError(f"{path} is an envelope of type {header.type}, not CONFIG_UPDATE")
        return cls(header.channel_id, update, cue.config_update, list(cue.signatures))

    def write(self, path: Path) -> None:
        env = envelope(self.channel, self.update_bytes)
        payload = common_pb2.Payload.FromString(env.payload)
        cue = configtx_pb2.ConfigUpdateEnvelope(config_update=self.update_bytes, signatures=self.signatures)
        payload.data = cue.SerializeToString()
        env.payload = payload.SerializeToString()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(env.SerializeToString())
        tmp.replace(path)

    def sign(self, identity: Identity, signer: Signer) -> None:
        """Add a signature (what `peer channel signconfigtx` does): over the signature header and the update."""
        header = common_pb2.SignatureHeader(creator=identity.creator, nonce=os.urandom(24)).SerializeToString()
        signature = signer(hashlib.sha256(header + self.update_bytes).digest())
        self.signatures.append(configtx_pb2.ConfigSignature(signature_header=header, signature=signature))

    def signers(self) -> Iterator[tuple[str, bytes, configtx_pb2.ConfigSignature]]:
        """(MSP id, certificate PEM, signature) of each signature, unverified."""
        for sig in self.signatures:
            header = common_pb2.SignatureHeader.FromString(sig.signature_header)
            ident = identities_pb2.SerializedIdentity.FromString(header.creator)
            yield ident.mspid, bytes(ident.id_bytes), sig


# ----- what an update changes and who must sign -----------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    verb: str  # adds | removes | changes
    path: str  # e.g. Application/Insurer2MSP, Orderer/ConsensusType

    def __str__(self) -> str:
        return f"{self.verb} {self.path}"


@dataclass(frozen=True)
class Modified:
    """An existing element the update modifies, and the policy that must allow it."""

    path: tuple[str, ...]  # group path from the channel group, e.g. ("Application",)
    key: str  # element key
    kind: str  # group | value | policy
    policy_path: tuple[str, ...]  # the group whose policies hold the mod policy
    mod_policy: str


def _walk_delta(
    prefix: tuple[str, ...],
    read: configtx_pb2.ConfigGroup,
    write: configtx_pb2.ConfigGroup,
    current: configtx_pb2.ConfigGroup | None,
    changes: list[Change],
    modified: list[Modified],
) -> None:
    """Compare a write-set group with the read set and the current config, as Fabric's validator does."""
    where = "/".join(prefix)
    for kind, wmap, rmap, cmap in (
        ("value", write.values, read.values, current.values if current else None),
        ("policy", write.policies, read.policies, current.policies if current else None),
    ):
        for key, item in wmap.items():
            if key in rmap and rmap[key].version == item.version:
                continue
            existing = cmap[key] if cmap is not None and key in cmap else None
            label = f"{where}/{key}" if where else key
            if existing is None:
                changes.append(Change("adds", label))
            else:
                changes.append(Change("changes", label))
                modified.append(Modified(prefix, key, kind, prefix, existing.mod_policy))
    for key, child in write.groups.items():
        current_child = current.groups[key] if current is not None and key in current.groups else None
        read_child = read.groups[key] if key in read.groups else configtx_pb2.ConfigGroup()
        label = "/".join((*prefix, key))
        if current_child is None:
            changes.append(Change("adds", label))
            continue
        if key not in read.groups or read_child.version != child.version:
            modified.append(Modified(prefix, key, "group", (*prefix, key), current_child.mod_policy))
            if current is not None and key in current.groups:
                for gone in set(current_child.groups) - set(child.groups):
                    changes.append(Change("removes", f"{label}/{gone}"))
        _walk_delta((*prefix, key), read_child, child, current_child, changes, modified)


def delta(update: configtx_pb2.ConfigUpdate, config: configtx_pb2.Config) -> tuple[list[Change], list[Modified]]:
    changes: list[Change] = []
    modified: list[Modified] = []
    if update.write_set.version != update.read_set.version:  # the channel group itself (top-level groups changed)
        modified.append(Modified((), "Channel", "group", (), config.channel_group.mod_policy))
    _walk_delta((), update.read_set, update.write_set, config.channel_group, changes, modified)
    return changes, modified


@dataclass(frozen=True)
class Signatory:
    msp_id: str
    roles: frozenset[str]
    subject: str


@dataclass
class Signatures:
    valid: list[Signatory] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # why each bad signature does not count


def _msp_configs(group: configtx_pb2.ConfigGroup, out: dict[str, msp_config_pb2.FabricMSPConfig]) -> None:
    if "MSP" in group.values:
        msp = msp_config_pb2.MSPConfig.FromString(group.values["MSP"].value)
        fabric = msp_config_pb2.FabricMSPConfig.FromString(msp.config)
        out[fabric.name] = fabric
    for child in group.groups.values():
        _msp_configs(child, out)


def verify(update: UpdateFile, config: configtx_pb2.Config) -> Signatures:
    """Which signatures count: signed over this update by a certificate its org's root CA (in the channel's current
    configuration) issued, valid now. Each valid signer with the roles its NodeOU gives it."""
    msps: dict[str, msp_config_pb2.FabricMSPConfig] = {}
    _msp_configs(config.channel_group, msps)
    out = Signatures()
    now = datetime.datetime.now(datetime.UTC)
    for msp_id, cert_pem, sig in update.signers():
        fabric = msps.get(msp_id)
        if fabric is None:
            out.invalid.append(f"a signature by {msp_id}, which is not in the channel")
            continue
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            out.invalid.append(f"a signature by {msp_id} with an unreadable certificate")
            continue
        subject = cert.subject.rfc4514_string()
        roots = [x509.load_pem_x509_certificate(r) for r in fabric.root_certs]
        if not any(_issued_by(cert, r) for r in roots):
            out.invalid.append(f"{subject}: not issued by {msp_id}'s CA")
            continue
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            out.invalid.append(f"{subject}: certificate expired or not yet valid")
            continue
        key = cert.public_key()
        try:
            assert isinstance(key, ec.EllipticCurvePublicKey)
            key.verify(sig.signature, sig.signature_header + update.update_bytes, ec.ECDSA(SHA256()))
        except (InvalidSignature, AssertionError):
            out.invalid.append(f"{subject}: the signature does not match this update")
            continue
        out.valid.append(Signatory(msp_id, _roles(cert, fabric), subject))
    return out


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _roles(cert: x509.Certificate, fabric: msp_config_pb2.FabricMSPConfig) -> frozenset[str]:
    ous = {a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)}
    roles = {"member"}
    node_ous = fabric.fabric_node_ous
    if node_ous.enable:
        for role, ident in (
            ("client", node_ous.client_ou_identifier),
            ("peer", node_ous.peer_ou_identifier),
            ("admin", node_ous.admin_ou_identifier),
            ("orderer", node_ous.orderer_ou_identifier),
        ):
            if ident.organizational_unit_identifier in ous:
                roles.add(role)
    return frozenset(roles)


@dataclass(frozen=True)
class Requirement:
    policy: str  # e.g. /Channel/Application/Admins
    rule: str  # what it asks for, in words
    satisfied: bool
    signed: list[str]  # orgs whose signatures count toward it
    missing: str  # what is still needed ("" when satisfied)


def _group(config: configtx_pb2.Config, path: tuple[str, ...]) -> configtx_pb2.ConfigGroup:
    group = config.channel_group
    for step in path:
        group = group.groups[step]
    return group


def _eval_signature(env: policies_pb2.SignaturePolicyEnvelope, signers: list[Signatory]) -> bool:
    principals: list[tuple[str, str] | None] = []
    for p in env.identities:
        if p.principal_classification != msp_principal_pb2.MSPPrincipal.ROLE:
            principals.append(None)
            continue
        role = msp_principal_pb2.MSPRole.FromString(p.principal)
        principals.append((str(role.msp_identifier), ROLE_NAMES.get(role.role, "?")))
    used = [False] * len(signers)

    def ev(rule: policies_pb2.SignaturePolicy) -> bool:
        if rule.WhichOneof("Type") == "signed_by":
            want = principals[rule.signed_by]
            if want is None:
                return False
            for i, s in enumerate(signers):
                if not used[i] and s.msp_id == want[0] and want[1] in s.roles:
                    used[i] = True
                    return True
            return False
        n = rule.n_out_of
        return sum(1 for r in n.rules if ev(r)) >= int(n.n)

    return ev(env.rule)


def _satisfied(config: configtx_pb2.Config, path: tuple[str, ...], name: str, signers: list[Signatory]) -> bool:
    group = _group(config, path)
    if name not in group.policies:
        return False
    policy = group.policies[name].policy
    if policy.type == policies_pb2.Policy.SIGNATURE:
        return _eval_signature(policies_pb2.SignaturePolicyEnvelope.FromString(policy.value), signers)
    if policy.type == policies_pb2.Policy.IMPLICIT_META:
        meta = policies_pb2.ImplicitMetaPolicy.FromString(policy.value)
        subs = list(group.groups)
        met = [s for s in subs if _satisfied(config, (*path, s), meta.sub_policy, signers)]
        return len(met) >= _threshold(meta.rule, len(subs))
    return False


def _threshold(rule: int, n: int) -> int:
    if rule == policies_pb2.ImplicitMetaPolicy.ANY:
        return 1
    if rule == policies_pb2.ImplicitMetaPolicy.ALL:
        return n
    return n // 2 + 1


def _resolve(path: tuple[str, ...], mod_policy: str) -> tuple[tuple[str, ...], str]:
    """A mod_policy names a policy relative to its group, or absolutely (/Channel/...)."""
    if mod_policy.startswith("/"):
        parts = mod_policy.strip("/").split("/")
        return tuple(parts[1:-1]), parts[-1]
    return path, mod_policy


def requirements(update: UpdateFile, config: configtx_pb2.Config, sigs: Signatures) -> list[Requirement]:
    """Each distinct policy the update must satisfy, and whether the valid signatures do."""
    _changes, modified = delta(update.update, config)
    seen: dict[tuple[tuple[str, ...], str], Requirement] = {}
    for m in modified:
        path, name = _resolve(m.policy_path, m.mod_policy)
        if (path, name) in seen:
            continue
        seen[(path, name)] = _requirement(config, path, name, sigs.valid)
    return list(seen.values())


def _requirement(
    config: configtx_pb2.Config, path: tuple[str, ...], name: str, signers: list[Signatory]
) -> Requirement:
    full = "/" + "/".join(("Channel", *path, name))
    ok = _satisfied(config, path, name, signers)
    group = _group(config, path)
    policy = group.policies[name].policy if name in group.policies else None
    signed = sorted({s.msp_id for s in signers})
    if policy is not None and policy.type == policies_pb2.Policy.IMPLICIT_META:
        meta = policies_pb2.ImplicitMetaPolicy.FromString(policy.value)
        subs = sorted(group.groups)
        need = _threshold(meta.rule, len(subs))
        met = [s for s in subs if _satisfied(config, (*path, s), meta.sub_policy, signers)]
        rule_name = policies_pb2.ImplicitMetaPolicy.Rule.Name(meta.rule)
        rule = f"{rule_name} of the {meta.sub_policy} of {', '.join(subs)}: {need} of {len(subs)}"
        others = [s for s in subs if s not in met]
        missing = "" if ok else f"{need - len(met)} more of: {', '.join(others)}"
        return Requirement(full, rule, ok, met, missing)
    if policy is not None and policy.type == policies_pb2.Policy.SIGNATURE:
        env = policies_pb2.SignaturePolicyEnvelope.FromString(policy.value)
        wants = []
        for p in env.identities:
            role = msp_principal_pb2.MSPRole.FromString(p.principal)
            wants.append(f"{role.msp_identifier}.{ROLE_NAMES.get(role.role, '?')}")
        rule = f"a signature of {' or '.join(wants)}"
        return Requirement(full, rule, ok, signed, "" if ok else f"one of: {', '.join(wants)}")
    return Requirement(full, "a policy of a kind this tool does not read", ok, signed, "" if ok else "unknown")


@dataclass(frozen=True)
class Status:
    channel: str
    changes: list[Change]
    signatures: Signatures
    requirements: list[Requirement]

    @property
    def ready(self) -> bool:
        return bool(self.requirements) and all(r.satisfied for r in self.requirements)

    def lines(self) -> list[str]:
        out = [f"update of channel {self.channel}: " + "; ".join(str(c) for c in self.changes)]
        signed = ", ".join(f"{s.msp_id} ({s.subject})" for s in self.signatures.valid) or "nobody yet"
        out.append(f"  signed by: {signed}")
        out += [f"  does not count: {why}" for why in self.signatures.invalid]
        for r in self.requirements:
            mark = "met" if r.satisfied else f"NOT met, missing {r.missing}"
            out.append(f"  {r.policy} ({r.rule}): {mark}")
        return out


def status(update: UpdateFile, config: configtx_pb2.Config) -> Status:
    changes, _ = delta(update.update, config)
    sigs = verify(update, config)
    return Status(update.channel, changes, sigs, requirements(update, config, sigs))
