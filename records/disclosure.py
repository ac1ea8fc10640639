"""Selective disclosure of a FHIR resource's elements against its digest on chain (digest scheme "v2").

A v2 digest is the root of a Merkle tree over the resource's elements, each a leaf that hides its value behind a
salt only the custodian holds. A custodian discloses some elements (their values, salts and inclusion proofs); a
recipient checks them against the root registered on chain and learns nothing about the elements left out: it sees
only their count rounded up to a power of two and hashes of salted leaves. docs/DISCLOSURE.md gives the exact byte
layout, so that a verifier can be written in any language.

This module is standalone on purpose: the Python standard library only, no gateway, no store, no ledger. Verify a
disclosure offline, from the chain's record of the resource version (`Records:Get`) and the disclosure document:

    python -m records.disclosure verify DISCLOSURE.json --record RECORD.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

FORMAT = "careledger-disclosure/1"
SCHEME = "v2"
LEAF_PREFIX, NODE_PREFIX = b"\x00", b"\x01"
SALT_LABEL = b"careledger/v2/salt"
PAD_LABEL = b"careledger/v2/pad"
MIN_LEAVES = 8  # a small resource is padded to 8 leaves, so the count says little about its size
MAX_PROOF = 32  # 2^32 leaves: far beyond any resource
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # FHIR JSON element names
SELECTOR_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+|x)\])?$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


# ----- the construction -----------------------------------------------------------------------------------------


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)  # made once, not per value
_quoted: Callable[[str], str] = encode_basestring  # a JSON string, non-ASCII kept (ensure_ascii=False)


def canonical(value: Any) -> bytes:
    """A JSON value's one byte form: keys sorted, no insignificant whitespace, UTF-8 (as `digests.canonical_json`)."""
    if value is True or value is False or value is None:
        return b"true" if value else b"false" if value is False else b"null"
    if type(value) is int:
        return str(value).encode()  # as json writes an int
    if type(value) is str:
        return _quoted(value).encode()  # what the encoder itself calls for a string, without its dispatch
    return _CANONICAL.encode(value).encode()


_NAMES: set[str] = set()  # keys already found to be FHIR element names (a resource repeats the same few hundred)


def _is_name(key: Any) -> bool:
    if key in _NAMES:
        return True
    if isinstance(key, str) and NAME.match(key):
        if len(_NAMES) < 100_000:
            _NAMES.add(key)
        return True
    return False


def elements(resource: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The resource as (path, canonical JSON value) pairs, one per primitive value, e.g. ("code.coding[0].code",
    b'"718-7"'); an empty object or array is an element of its own, so the resource can be rebuilt from its
    elements. ValueError for a key that is not a FHIR element name."""
    out: list[tuple[str, bytes]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict) and node:
            for key in sorted(node):
                if not _is_name(key):
                    raise ValueError(f"{path or 'the resource'} has a key {key[:40]!r} that is not a FHIR element name")
                walk(node[key], f"{path}.{key}" if path else key)
        elif isinstance(node, list) and node:
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")
        else:
            out.append((path, canonical(node)))

    walk(dict(resource), "")
    return out


def _keyed(salt_key: bytes, label: bytes, resource_key: str, version: int) -> Callable[[bytes], bytes]:
    """HMAC-SHA-256 under the salt key of label ‖ 0 ‖ resource key ‖ 0 ‖ version ‖ 0 ‖ what is given. HMAC (RFC 2104)
    is SHA-256(K ⊕ opad ‖ SHA-256(K ⊕ ipad ‖ message)): both pads and the common prefix are hashed once, and each call
    only copies the two hash states and adds its own end (the same bytes as `hmac`, in half the time: it runs for
    every element of every resource written)."""
    key = salt_key if len(salt_key) <= _BLOCK else hashlib.sha256(salt_key).digest()
    key = key.ljust(_BLOCK, b"\x00")
    inner = hashlib.sha256(key.translate(_IPAD))
    inner.update(label + b"\x00" + resource_key.encode() + b"\x00" + str(version).encode() + b"\x00")
    outer = hashlib.sha256(key.translate(_OPAD))

    def of(end: bytes) -> bytes:
        h = inner.copy()
        h.update(end)
        o = outer.copy()
        o.update(h.digest())
        return o.digest()

    return of


_BLOCK = 64  # SHA-256's block size, in bytes
_IPAD = bytes(b ^ 0x36 for b in range(256))  # translation tables: each key byte XOR the pad byte
_OPAD = bytes(b ^ 0x5C for b in range(256))


def salt(salt_key: bytes, resource_key: str, version: int, path: str) -> bytes:
    """The element's 32-byte salt: HMAC-SHA-256 under the custodian's secret salt key (see DISCLOSURE.md)."""
    return _keyed(salt_key, SALT_LABEL, resource_key, version)(path.encode())


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def leaf_hash(element_salt: bytes, path: str, value: bytes) -> bytes:
    """SHA-256(0x00 ‖ salt ‖ u32(len path) ‖ path ‖ u32(len value) ‖ value), lengths big-endian, text UTF-8."""
    p = path.encode()
    return hashlib.sha256(LEAF_PREFIX + element_salt + _u32(len(p)) + p + _u32(len(value)) + value).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


@dataclass(frozen=True)
class Commitment:
    """A resource version's tree: leaves in tree order (sorted by their hash), each path's position, every level."""

    levels: list[list[bytes]]  # levels[0]: the leaves; levels[-1]: [root]
    position: dict[str, int]  # path -> leaf index
    values: dict[str, bytes]  # path -> canonical value

    @property
    def root(self) -> str:
        return self.levels[-1][0].hex()

    def proof(self, index: int) -> list[str]:
        siblings = []
        for level in self.levels[:-1]:
            siblings.append(level[index ^ 1].hex())
            index //= 2
        return siblings


def _leaves(
    resource: Mapping[str, Any], salt_key: bytes, resource_key: str, version: int
) -> tuple[list[tuple[str, bytes]], dict[str, bytes], list[bytes]]:
    """The elements, each path's leaf hash, and every leaf in tree order (padded, sorted by hash)."""
    pairs = elements(resource)
    salt_of = _keyed(salt_key, SALT_LABEL, resource_key, version)
    hashed = {}
    sha256 = hashlib.sha256
    for path, value in pairs:  # leaf_hash(salt(path), path, value), written out: it runs for every element
        p = path.encode()
        hashed[path] = sha256(
            b"".join((LEAF_PREFIX, salt_of(p), len(p).to_bytes(4, "big"), p, len(value).to_bytes(4, "big"), value))
        ).digest()
    size = MIN_LEAVES
    while size < len(pairs):
        size *= 2
    pad_of = _keyed(salt_key, PAD_LABEL, resource_key, version)
    leaves = sorted([*hashed.values(), *(pad_of(str(i).encode()) for i in range(size - len(pairs)))])
    return pairs, hashed, leaves


def _above(below: list[bytes]) -> list[bytes]:
    """The level above: `node_hash` of each pair, written out (it runs for every node of every tree)."""
    sha256 = hashlib.sha256
    return [sha256(NODE_PREFIX + left + right).digest() for left, right in zip(below[::2], below[1::2], strict=True)]


def commit(resource: Mapping[str, Any], salt_key: bytes, resource_key: str, version: int) -> Commitment:
    """The v2 tree of one resource version. Leaves are ordered by their own hash (pseudo-random), so a leaf's
    position says nothing about the paths of the others; the tree is padded with pseudo-random leaves to a power of
    two (at least MIN_LEAVES)."""
    pairs, hashed, leaves = _leaves(resource, salt_key, resource_key, version)
    at = {h: i for i, h in enumerate(leaves)}
    levels = [leaves]
    while len(levels[-1]) > 1:
        levels.append(_above(levels[-1]))
    return Commitment(levels, {path: at[h] for path, h in hashed.items()}, dict(pairs))


def root(resource: Mapping[str, Any], salt_key: bytes, resource_key: str, version: int) -> str:
    """The v2 digest registered on chain: the tree's root, 64 lower-case hex characters (`commit(...).root`, without
    keeping the levels and positions a disclosure needs)."""
    level = _leaves(resource, salt_key, resource_key, version)[2]
    while len(level) > 1:
        level = _above(level)
    return level[0].hex()


# ----- choosing elements --------------------------------------------------------------------------------------------


def selector(text: str) -> re.Pattern[str]:
    """A pattern for an element path as a FHIR user writes it: `code`, `valueQuantity.value`, `value[x]` (any
    choice type), `code.coding[0].code` or `code.coding.code` (every coding). It matches the element and
    everything under it. ValueError for anything else."""
    parts = []
    for segment in text.split("."):
        m = SELECTOR_SEGMENT.match(segment)
        if m is None:
            raise ValueError(f"{text[:80]!r} is not an element path (names with optional [n] or [x], joined by dots)")
        name, index = m.groups()
        if index == "x":
            parts.append(re.escape(name) + r"[A-Z][A-Za-z]*(?:\[\d+\])?")
        elif index is not None:
            parts.append(re.escape(name) + re.escape(f"[{index}]"))
        else:
            parts.append(re.escape(name) + r"(?:\[\d+\])?")
    return re.compile("^" + r"\.".join(parts) + r"(?=$|[.\[])")


def chosen(commitment: Commitment, wanted: Iterable[str]) -> list[str]:
    """The paths of the commitment that the element selectors reach, in path order; `resourceType` always."""
    patterns = [selector(w) for w in wanted]
    return sorted(p for p in commitment.position if p == "resourceType" or any(x.match(p) for x in patterns))


def disclosure(
    commitment: Commitment, paths: Sequence[str], record: Mapping[str, Any], salt_key: bytes
) -> dict[str, Any]:
    """The document a custodian hands out: the chosen elements with their salts and proofs, and which record on
    chain they belong to (`record`: resourceType, resourceKey, version, custodian)."""
    key, version = str(record["resourceKey"]), int(record["version"])
    return {
        "format": FORMAT,
        "scheme": SCHEME,
        "custodian": record.get("custodian", ""),
        "resourceType": record["resourceType"],
        "resourceKey": key,
        "version": version,
        "root": commitment.root,
        "leafCount": len(commitment.levels[0]),
        "elements": [
            {
                "path": p,
                "json": commitment.values[p].decode(),
                "salt": salt(salt_key, key, version, p).hex(),
                "index": commitment.position[p],
                "proof": commitment.proof(commitment.position[p]),
            }
            for p in paths
        ],
    }


# ----- verification -------------------------------------------------------------------------------------------------


@dataclass
class Verified:
    ok: bool
    reason: str
    resource: dict[str, Any] = field(default_factory=dict)  # what was disclosed, rebuilt (absent items: None)


def _fold(leaf: bytes, index: int, proof: Sequence[str]) -> bytes:
    h = leaf
    for sibling in proof:
        s = bytes.fromhex(sibling)
        h = node_hash(h, s) if index % 2 == 0 else node_hash(s, h)
        index //= 2
    return h


def verify(document: Mapping[str, Any], record: Mapping[str, Any] | None = None) -> Verified:
    """Check every disclosed element against the document's root and, given the chain's record of the resource
    version (`Records:Get`), the root against the digest on chain. Never raises for bad input: it says why not."""
    try:
        return _verify(document, record)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return Verified(False, f"not a well-formed disclosure: {type(e).__name__}: {str(e)[:200]}")


def _verify(document: Mapping[str, Any], record: Mapping[str, Any] | None) -> Verified:
    if document.get("format") != FORMAT or document.get("scheme") != SCHEME:
        return Verified(False, f"not a {FORMAT} document of digest scheme {SCHEME}")
    root_hex = str(document["root"])
    count = int(document["leafCount"])
    depth = count.bit_length() - 1
    if not HEX64.match(root_hex) or count < 1 or count != 1 << depth or depth > MAX_PROOF:
        return Verified(False, "the root or the leaf count is malformed")
    if record is not None:
        checks = [
            ("digestScheme", str(record.get("digestScheme") or "v1"), SCHEME),
            ("digest", str(record.get("digest")), root_hex),
            ("resourceKey", str(record.get("resourceKey")), str(document["resourceKey"])),
            ("version", str(record.get("version")), str(document["version"])),
            ("resourceType", str(record.get("resourceType")), str(document["resourceType"])),
        ]
        if document.get("custodian"):
            checks.append(("custodian", str(record.get("custodian")), str(document["custodian"])))
        for name, on_chain, claimed in checks:
            if on_chain != claimed:
                return Verified(False, f"the record on chain has {name} {on_chain}, the disclosure {claimed}")
    root = bytes.fromhex(root_hex)
    seen: set[str] = set()
    rebuilt: dict[str, Any] = {}
    for n, e in enumerate(document["elements"]):
        path, value = str(e["path"]), str(e["json"])
        index, proof = int(e["index"]), [str(p) for p in e["proof"]]
        element_salt = bytes.fromhex(str(e["salt"]))
        if path in seen:
            return Verified(False, f"elements[{n}]: {path} is disclosed twice")
        seen.add(path)
        if len(element_salt) != 32 or not 0 <= index < count or len(proof) != depth:
            return Verified(False, f"elements[{n}] ({path}): salt, index or proof length does not fit the tree")
        if not all(HEX64.match(p) for p in proof):
            return Verified(False, f"elements[{n}] ({path}): a proof entry is not 64 hex characters")
        if _fold(leaf_hash(element_salt, path, value.encode()), index, proof) != root:
            return Verified(False, f"elements[{n}] ({path}) is not committed to by the root")
        _place(rebuilt, path, json.loads(value))
    expected_type = rebuilt.get("resourceType")
    if expected_type is not None and expected_type != document["resourceType"]:
        return Verified(False, "the disclosed resourceType is not the document's")
    where = " and matches the digest on chain" if record is not None else " (the root is not checked against a chain)"
    return Verified(True, f"{len(seen)} elements are committed to by the root{where}", rebuilt)


_TOKEN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def _place(tree: dict[str, Any], path: str, value: Any) -> None:
    """Put a disclosed value into the partial resource at its path (list items not disclosed stay None)."""
    tokens: list[str | int] = [m.group(1) if m.group(1) else int(m.group(2)) for m in _TOKEN.finditer(path)]
    node: Any = tree
    for here, after in zip(tokens, [*tokens[1:], None], strict=True):
        empty: Any = value if after is None else ([] if isinstance(after, int) else {})
        if isinstance(here, int):
            while len(node) <= here:
                node.append(None)
            if node[here] is None or after is None:
                node[here] = empty
            node = node[here]
        else:
            if here not in node or after is None:
                node[here] = empty
            node = node[here]


# ----- offline command ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m records.disclosure", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("verify", help="verify a disclosure document against the chain's record")
    check.add_argument("disclosure", help="the disclosure document (JSON)")
    check.add_argument("--record", help="the resource version's record from the chain (Records:Get, JSON)")
    args = parser.parse_args(argv)
    with open(args.disclosure, encoding="utf-8") as f:
        document = json.load(f)
    record = None
    if args.record:
        with open(args.record, encoding="utf-8") as f:
            record = json.load(f)
    result = verify(document, record)
    print(json.dumps({"ok": result.ok, "reason": result.reason, "disclosed": result.resource}, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
