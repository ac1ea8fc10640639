"""Reading what a Fabric node keeps on disk, for the PHI scan (tests/integration/test_phi.py): every block of every
channel from the block files, and every record of a peer's LevelDB databases (state, history, private data,
transient store) from their journal and table files, snappy-compressed blocks included.

Nothing here asks a node anything: it reads files, so it sees exactly what an operator or a thief with the disk
would. Values are split into the fields they are made of (blocks and state values are protocol buffers, whose
fields can nest), so a string is looked for inside the field that holds it, not across a length prefix.

Pure Python, no dependency: the formats are small.
- Block files (Fabric's blkstorage): a varint length, then a block in the store's own serialization (header
  fields, then each envelope and each metadata entry as length-prefixed protocol buffers), again and again.
- LevelDB (goleveldb, as Fabric uses it): `*.log` journals of 32 KiB blocks of records (7-byte headers; a record can
  span blocks) holding write batches; `*.ldb` / `*.sst` tables of blocks (a 5-byte trailer: compression type and
  CRC) found through an index block that the 48-byte footer points to; block entries share key prefixes.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# ----- varints and protocol buffers ---------------------------------------------------------------------------------


def varint(data: bytes | bytearray, at: int) -> tuple[int, int]:
    """(value, next offset); ValueError when the data ends inside it."""
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def proto_fields(data: bytes) -> list[tuple[int, int, bytes | int]] | None:
    """The (field number, wire type, value) of a protocol buffer message, or None when `data` is not one."""
    fields: list[tuple[int, int, bytes | int]] = []
    at = 0
    try:
        while at < len(data):
            tag, at = varint(data, at)
            number, wire = tag >> 3, tag & 7
            if number == 0:
                return None
            if wire == 0:
                value, at = varint(data, at)
                fields.append((number, wire, value))
            elif wire == 1 or wire == 5:
                size = 8 if wire == 1 else 4
                if at + size > len(data):
                    return None
                fields.append((number, wire, data[at : at + size]))
                at += size
            elif wire == 2:
                size, at = varint(data, at)
                if at + size > len(data):
                    return None
                fields.append((number, wire, data[at : at + size]))
                at += size
            else:
                return None  # groups (3, 4) are not used by Fabric; 6 and 7 do not exist
    except ValueError:
        return None
    return fields


def is_text(data: bytes) -> bool:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\n\r" for c in text)


def leaves(data: bytes, depth: int = 0) -> Iterator[bytes]:
    """The innermost length-delimited values of a protocol buffer: text (arguments, JSON, keys) as it is, and every
    field that does not parse as a message (hashes, signatures, binary keys) as raw bytes. Nothing is dropped: a
    field either is a leaf or is made of leaves and varints."""
    if not data:
        return
    if depth > 32 or is_text(data):
        yield data
        return
    fields = proto_fields(data)
    if not fields:
        yield data
        return
    for _number, wire, value in fields:
        if wire == 2:
            assert isinstance(value, bytes)
            yield from leaves(value, depth + 1)


# ----- block files --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    number: int
    envelopes: list[bytes]  # the transactions (common.Envelope), config updates included
    metadata: list[bytes]  # signatures, the transaction filter, the commit hash


def _raw_bytes(data: bytes, at: int) -> tuple[bytes, int]:
    size, at = varint(data, at)
    if at + size > len(data):
        raise ValueError("truncated field")
    return data[at : at + size], at + size


def parse_block(raw: bytes) -> Block:
    """A block as Fabric's block store serializes it: the header's number, data hash and previous hash, then the
    count and bytes of each envelope, then the count and bytes of each metadata entry."""
    number, at = varint(raw, 0)
    _data_hash, at = _raw_bytes(raw, at)
    _previous_hash, at = _raw_bytes(raw, at)
    count, at = varint(raw, at)
    envelopes = []
    for _ in range(count):
        envelope, at = _raw_bytes(raw, at)
        envelopes.append(envelope)
    count, at = varint(raw, at)
    metadata = []
    for _ in range(count):
        entry, at = _raw_bytes(raw, at)
        metadata.append(entry)
    if at != len(raw):
        raise ValueError(f"block {number}: {len(raw) - at} bytes after the metadata")
    return Block(number, envelopes, metadata)


def blocks(block_file: Path) -> Iterator[Block]:
    """The blocks of one block file (each: its length as a varint, then the block), in order; a block still being
    written at the end of the file is left out."""
    data = block_file.read_bytes()
    at = 0
    while at < len(data):
        try:
            size, start = varint(data, at)
        except ValueError:
            return
        if size == 0 or start + size > len(data):
            return
        yield parse_block(data[start : start + size])
        at = start + size


# ----- snappy (the LevelDB block compression) -----------------------------------------------------------------------


def unsnappy(data: bytes) -> bytes:
    """Decompress one snappy block (raw format, as LevelDB stores it)."""
    length, at = varint(data, 0)
    out = bytearray()
    while at < len(data):
        tag = data[at]
        at += 1
        kind = tag & 3
        if kind == 0:  # literal
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                size = int.from_bytes(data[at : at + extra], "little")
                at += extra
            size += 1
            out += data[at : at + size]
            at += size
            continue
        if kind == 1:
            size, offset = ((tag >> 2) & 7) + 4, ((tag >> 5) << 8) | data[at]
            at += 1
        elif kind == 2:
            size, offset = (tag >> 2) + 1, int.from_bytes(data[at : at + 2], "little")
            at += 2
        else:
            size, offset = (tag >> 2) + 1, int.from_bytes(data[at : at + 4], "little")
            at += 4
        if offset == 0 or offset > len(out):
            raise ValueError("snappy copy before the start of the output")
        start = len(out) - offset
        if offset >= size:
            out += out[start : start + size]
        else:  # overlapping copy: a repeated pattern
            for i in range(size):
                out.append(out[start + i])
    if len(out) != length:
        raise ValueError(f"snappy block decompressed to {len(out)} bytes, not {length}")
    return bytes(out)


# ----- LevelDB --------------------------------------------------------------------------------------------------------

LOG_BLOCK = 32 * 1024
TABLE_MAGIC = 0xDB4775248B80FB57
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def journal_records(data: bytes) -> Iterator[bytes]:
    """The records of a LevelDB journal (`*.log`, also the MANIFEST), reassembled across its 32 KiB blocks."""
    at, pending = 0, bytearray()
    while at + 7 <= len(data):
        room = LOG_BLOCK - at % LOG_BLOCK
        if room < 7:  # the block's tail is padding
            at += room
            continue
        size, kind = struct.unpack_from("<HB", data, at + 4)
        if kind == 0 and size == 0:  # preallocated, not written yet
            at += room
            continue
        payload = data[at + 7 : at + 7 + size]
        at += 7 + size
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = bytearray(payload)
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            pending += payload
            yield bytes(pending)
            pending = bytearray()


def batch_entries(batch: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of each put in a write batch (8-byte sequence, 4-byte count, then records); deletes give b""."""
    at = 12
    while at < len(batch):
        kind = batch[at]
        at += 1
        size, at = varint(batch, at)
        key = batch[at : at + size]
        at += size
        value = b""
        if kind == 1:
            size, at = varint(batch, at)
            value = batch[at : at + size]
            at += size
        yield key, value


def _block_contents(data: bytes, offset: int, size: int) -> bytes:
    raw = data[offset : offset + size]
    kind = data[offset + size]
    if kind == 0:
        return raw
    if kind == 1:
        return unsnappy(raw)
    raise ValueError(f"unknown block compression {kind}")


def block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of each entry of a table block; keys are stored as a shared prefix plus the rest."""
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    at, key = 0, b""
    while at < end:
        shared, at = varint(block, at)
        unshared, at = varint(block, at)
        size, at = varint(block, at)
        key = key[:shared] + block[at : at + unshared]
        at += unshared
        yield key, block[at : at + size]
        at += size


def table_entries(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(user key, value) of every entry of a LevelDB table file."""
    if len(data) < 48:
        raise ValueError("too short for a table")
    (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
    if magic != TABLE_MAGIC:
        raise ValueError("not a LevelDB table")
    footer = data[len(data) - 48 :]
    _meta_offset, at = varint(footer, 0)
    _meta_size, at = varint(footer, at)
    index_offset, at = varint(footer, at)
    index_size, at = varint(footer, at)
    for _separator, handle in block_entries(_block_contents(data, index_offset, index_size)):
        offset, at = varint(handle, 0)
        size, _ = varint(handle, at)
        for internal_key, value in block_entries(_block_contents(data, offset, size)):
            yield internal_key[:-8], value  # the last 8 bytes are the sequence number and kind


@dataclass
class LevelDb:
    """What one LevelDB directory holds, as it sits on disk (older versions of a key included)."""

    path: Path
    entries: list[tuple[bytes, bytes]] = field(default_factory=list)
    journals: int = 0
    tables: int = 0


def read_leveldb(path: Path) -> LevelDb:
    db = LevelDb(path)
    for file in sorted(path.iterdir()):
        try:
            data = file.read_bytes()
        except FileNotFoundError:  # compacted away while we read: its records are in a newer file
            continue
        if file.suffix == ".log":
            db.journals += 1
            for record in journal_records(data):
                if len(record) >= 12:
                    db.entries += list(batch_entries(record))
        elif file.suffix in (".ldb", ".sst"):
            db.tables += 1
            db.entries += list(table_entries(data))
    return db


def leveldb_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("CURRENT"))


# ----- looking for strings --------------------------------------------------------------------------------------------

WORD = re.compile(rb"[A-Za-z0-9]+")


def _separates(data: bytes, at: int) -> bool:
    """Whether the byte at `at` (or the edge of the data) can end a word in text: printable and not a letter or
    digit, or NUL (the separator of composite keys)."""
    return at < 0 or at >= len(data) or data[at] == 0 or (32 <= data[at] <= 126 and not _alnum(data[at]))


def _alnum(byte: int) -> bool:
    return 48 <= byte <= 57 or 65 <= byte <= 90 or 97 <= byte <= 122


def encodings(text: str) -> set[bytes]:
    """How a string can sit in a block or a state value: as UTF-8, as Python's JSON writes it (ASCII escapes) and as
    Go's does (UTF-8, with <, > and & escaped)."""
    go = json.dumps(text, ensure_ascii=False)[1:-1]
    go = go.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return {text.encode(), json.dumps(text)[1:-1].encode(), go.encode()}


class Needles:
    """Many strings, each found only as a whole: not preceded or followed by a letter or digit of the same run, as a
    value sits in JSON, in a composite key or as an argument. That keeps a short name from being "found" inside the
    base64 of a certificate or in random signature bytes, and costs one pass over the data for all strings."""

    def __init__(self, strings: Mapping[str, str]) -> None:
        self.by_first_word: dict[bytes, list[tuple[bytes, str]]] = {}
        self.unanchored: list[tuple[bytes, str]] = []
        for text in strings:
            for form in encodings(text):
                first = WORD.match(form)
                if first is None:
                    self.unanchored.append((form, text))
                else:
                    self.by_first_word.setdefault(first.group(), []).append((form, text))

    def find(self, data: bytes) -> set[str]:
        """The strings in one field value. In a value that is not text (a signature, a hash, a binary key), a string
        shorter than six bytes counts only between separators (a quote, a space, punctuation, a composite key's NUL)
        or the value's ends, as text embedded in binary sits: random bytes hold a given four-letter name between two
        non-alphanumeric bytes about once in eight billion places, which in the ~200 MB a scan reads gave a false
        alarm every few runs (a name "found" inside an ECDSA signature)."""
        found: set[str] = set()
        binary = not is_text(data)
        for m in WORD.finditer(data):
            for needle, text in self.by_first_word.get(m.group(), ()):
                start, end = m.start(), m.start() + len(needle)
                if not data.startswith(needle, start):
                    continue
                if binary and len(needle) < 6 and not (_separates(data, start - 1) and _separates(data, end)):
                    continue
                if end == len(data) or not _alnum(needle[-1]) or not _alnum(data[end]):
                    found.add(text)
        found.update(text for needle, text in self.unanchored if needle in data)
        return found
