"""The PHI scan's readers (tests/integration/phi_scan.py) on inputs built here byte by byte from the formats' specs:
snappy, LevelDB journals and tables, Fabric block files, protocol buffers; and its whole-string search."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from tests.integration import phi_scan
from tests.integration.phi_scan import Needles


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value: bytes) -> bytes:
    return uvarint(number << 3 | 2) + uvarint(len(value)) + value


def test_snappy_literals_and_copies() -> None:
    # "abcd" as a literal, then 8 bytes copied from 4 back (overlapping), a literal "X", 5 bytes from 13 back.
    stream = uvarint(18) + bytes([0x0C]) + b"abcd" + bytes([0x11, 0x04]) + bytes([0x00]) + b"X"
    stream += bytes([(5 - 1) << 2 | 2]) + struct.pack("<H", 13)
    assert phi_scan.unsnappy(stream) == b"abcdabcdabcdXabcda"


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A table block: prefix-shared keys, one restart point."""
    out, previous = bytearray(), b""
    for key, value in entries:
        shared = 0
        while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
            shared += 1
        out += uvarint(shared) + uvarint(len(key) - shared) + uvarint(len(value)) + key[shared:] + value
        previous = key
    return bytes(out) + struct.pack("<II", 0, 1)


def _literal_snappy(data: bytes) -> bytes:
    """One literal of 61 to 256 bytes: its length - 1 in one byte after the tag."""
    assert 60 < len(data) <= 256
    return uvarint(len(data)) + bytes([60 << 2, len(data) - 1]) + data


def test_a_leveldb_table_with_a_snappy_block(tmp_path: Path) -> None:
    seq = struct.pack("<Q", 7 << 8 | 1)
    user = [(b"providers\x00careledger\x00p1", b"v-one"), (b"providers\x00careledger\x00p2", b'{"x":2}')]
    data_block = _literal_snappy(_block([(k + seq, v) for k, v in user]))
    table = data_block + bytes([1]) + b"\0\0\0\0"
    handle = uvarint(0) + uvarint(len(data_block))
    index = _block([(b"providers\x00careledger\x00p3", handle)])
    index_at = len(table)
    table += index + bytes([0]) + b"\0\0\0\0"
    footer = uvarint(0) + uvarint(0) + uvarint(index_at) + uvarint(len(index))
    table += footer + bytes(40 - len(footer)) + struct.pack("<Q", phi_scan.TABLE_MAGIC)
    (tmp_path / "000005.ldb").write_bytes(table)
    db = phi_scan.read_leveldb(tmp_path)
    assert (db.tables, db.entries) == (1, user)


def test_a_leveldb_journal_record_across_two_blocks(tmp_path: Path) -> None:
    key, value = b"k\x00patient", b"x" * 40_000
    batch = struct.pack("<QI", 1, 1) + bytes([1]) + uvarint(len(key)) + key + uvarint(len(value)) + value
    first = phi_scan.LOG_BLOCK - 7
    journal = struct.pack("<IHB", 0, first, phi_scan.FIRST) + batch[:first]
    rest = batch[first:]
    journal += struct.pack("<IHB", 0, len(rest), phi_scan.LAST) + rest
    (tmp_path / "000001.log").write_bytes(journal)
    db = phi_scan.read_leveldb(tmp_path)
    assert (db.journals, db.entries) == (1, [(key, value)])


def raw(value: bytes) -> bytes:
    return uvarint(len(value)) + value


def test_block_files_and_their_fields(tmp_path: Path) -> None:
    args = json.dumps([{"patient": "ab" * 32, "resourceKey": "cd" * 32}]).encode()
    spec = field(3, field(1, b"Records:Register") + field(1, args))
    envelope = field(1, field(1, spec) + field(2, bytes(range(200, 256))))
    block = uvarint(7) + raw(b"\1" * 32) + raw(b"\2" * 32) + uvarint(1) + raw(envelope)
    block += uvarint(2) + raw(b"signatures") + raw(b"")
    (tmp_path / "blockfile_000000").write_bytes(raw(block) + uvarint(500) + b"partial")
    (got,) = phi_scan.blocks(tmp_path / "blockfile_000000")
    assert (got.number, got.envelopes, got.metadata) == (7, [envelope], [b"signatures", b""])
    leaves = list(phi_scan.leaves(envelope))
    assert b"Records:Register" in leaves and args in leaves and bytes(range(200, 256)) in leaves


def test_needles_find_whole_strings_only() -> None:
    needles = Needles({"Kalo": "name", "MRN-1234": "id", "Zoë": "name", "<b>": "odd"})
    assert needles.find(b'{"given":["Kalo"]}') == {"Kalo"}
    assert needles.find(b"MIIBKaloxQ+/Kalo9") == set()  # inside base64 or other words: not a name
    assert needles.find(b"Observation/MRN-1234\x00") == {"MRN-1234"}
    assert needles.find(b"MRN-12345") == set()
    # Inside a signature's random bytes, between two bytes that are neither letters nor printable: not a name.
    assert needles.find(b"0D\x02 I<V\xd7<EB\x91\xb7\x9eKalo\xda_oF\xc2") == set()
    assert needles.find(b"\x00\x91Patient\x00Kalo\x00\xb7") == {"Kalo"}  # a composite key in binary
    assert needles.find('"Zoë"'.encode()) == {"Zoë"}
    assert needles.find(b'"Zo\\u00eb"') == {"Zoë"}  # as Python's JSON writes it
    assert needles.find(b'"\\u003cb\\u003e"') == {"<b>"}  # as Go's JSON writes it


def test_the_registry_takes_ids_the_server_gave_for_what_they_are() -> None:
    from tests.conftest import PhiRegistry

    reg = PhiRegistry()
    sub = {"resourceType": "Subscription", "status": "requested"}
    reg.answered(
        "POST", "https://gw/fhir/Subscription", json.dumps(sub), 201, json.dumps({**sub, "id": "srv-1"}).encode()
    )
    reg.answered("PUT", "https://gw/fhir/Subscription/srv-1", json.dumps({**sub, "id": "srv-1"}), 200, b"{}")
    assert "srv-1" not in reg.strings  # an update of what the server created
    reg.answered("PUT", "https://gw/fhir/Observation/MRN-77", json.dumps({"resourceType": "Observation"}), 201, b"{}")
    assert reg.strings["MRN-77"] == "client-chosen id of a Observation"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Observation"}, "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Observation"}, "request": {"method": "PUT", "url": "Observation/MRN-78"}},
        ],
    }
    answer = {
        "resourceType": "Bundle",
        "entry": [
            {"response": {"status": "201 Created", "location": "Observation/srv-2/_history/1"}},
            {"response": {"status": "201 Created", "location": "Observation/MRN-78/_history/1"}},
        ],
    }
    reg.answered("POST", "https://gw/fhir", json.dumps(bundle), 200, json.dumps(answer).encode())
    assert "Observation/srv-2" in reg.assigned and "Observation/MRN-78" not in reg.assigned
    assert reg.strings["MRN-78"] == "client-chosen id of a Observation"  # a PUT entry's id is the client's


def test_the_registry_keeps_the_dates_of_service_of_claims() -> None:
    from tests.conftest import PhiRegistry

    reg = PhiRegistry()
    claim = {
        "resourceType": "Claim",
        "billablePeriod": {"start": "2016-01-06T09:00:00-05:00", "end": "2016-01-06T09:30:00-05:00"},
        "item": [{"sequence": 1, "servicedDate": "2016-01-07"}, {"sequence": 2}],
    }
    reg.answered("POST", "https://gw/fhir/Claim", json.dumps(claim), 201, json.dumps({**claim, "id": "c1"}).encode())
    assert reg.service_dates == {"2016-01-06", "2016-01-07"}
