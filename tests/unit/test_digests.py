"""Pseudonyms and digests: stable across members, keyed, and blind to key order."""

import pytest

from records import digests


def test_pseudonym_is_keyed_and_stable() -> None:
    a = digests.pseudonym(b"k1", "urn:mpi", "123")
    assert a == digests.pseudonym(b"k1", "urn:mpi", "123")
    assert a != digests.pseudonym(b"k2", "urn:mpi", "123")
    assert a != digests.pseudonym(b"k1", "urn:other", "123")
    assert len(a) == 64 and int(a, 16) >= 0
    with pytest.raises(ValueError):
        digests.pseudonym(b"k1", "", "123")


def test_digest_is_keyed_and_ignores_key_order() -> None:
    r1 = {"resourceType": "Patient", "id": "p", "gender": "female"}
    r2 = {"gender": "female", "id": "p", "resourceType": "Patient"}
    assert digests.resource_digest(b"pk", r1) == digests.resource_digest(b"pk", r2)
    assert digests.resource_digest(b"pk", r1) != digests.resource_digest(b"other", r1)
    assert digests.canonical_json({"b": "é", "a": 1}) == '{"a":1,"b":"é"}'.encode()
