"""Property-based: no input makes the gateway answer 5xx, and a refused request stores nothing.

Bounded so it runs in CI in seconds: each property tries a few hundred inputs. The inputs start from valid synthetic
bundles and requests and break them the ways real clients do (wrong types, missing or extra fields, odd ids, odd
parameters, deep nesting, odd headers), plus arbitrary JSON.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from records import synthetic
from tests.unit.gateway_harness import Gateway

BUDGET = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20), st.just("²")
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
odd_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["..", ".", "%2e%2e", "a%00b", "<script>", "a b", "x" * 4000, "²", "-1", "99999999999999999999", "Patient/.."]
    ),
)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("fuzz"))
    yield g
    g.close()


def _paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*at, i))


@st.composite
def broken_bundles(draw: st.DrawFn) -> Any:
    bundle: Any = synthetic.Synthetic.seeded(draw(st.integers(0, 5))).transaction(draw(st.integers(1, 4)))
    bundle["type"] = draw(st.sampled_from(["transaction", "batch"]))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(bundle))
        path = draw(st.sampled_from(paths))
        if not path:
            bundle = draw(json_value)
            continue
        parent = bundle
        for step in path[:-1]:
            parent = parent[step]
        choice = draw(st.integers(0, 3))
        if choice == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        elif choice == 1:
            parent[path[-1]] = draw(json_value)
        elif choice == 2:
            parent[path[-1]] = draw(odd_text)
        else:
            parent[path[-1]] = copy.deepcopy(parent[path[-1]]) if isinstance(parent, dict) else draw(json_value)
    return bundle


def _deep(levels: int) -> str:
    """Extensions nested `levels` deep, as JSON text (too deep for json.dumps to write)."""
    return '{"url":"http://x","extension":[' * levels + '{"url":"http://x","valueString":"v"}' + "]}" * levels


def check(gw: Gateway, method: str, path: str, body: Any = None, **headers: str) -> None:
    before = gw.rows()
    statuses: list[int] = []
    bodies: list[Any] = []

    async def go(g: Gateway) -> None:
        r = await g.request(method, path, body, **headers)
        statuses.append(r.status_code)
        bodies.append(r.content)

    gw.run(go)
    status = statuses[0]
    assert status < 500, (method, path, status, bodies[0][:500])
    if status >= 400:
        assert gw.rows() == before, (method, path, status)
        outcome = json.loads(bodies[0])
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"]


@BUDGET
@given(bundle=broken_bundles())
def test_a_broken_bundle_never_gets_a_5xx(gw: Gateway, bundle: Any) -> None:
    check(gw, "POST", "/fhir", bundle)


@BUDGET
@given(body=json_value)
def test_any_json_never_gets_a_5xx(gw: Gateway, body: Any) -> None:
    check(gw, "POST", "/fhir", body)
    check(gw, "POST", "/fhir/Observation", body)


@BUDGET
@given(rtype=st.sampled_from(["Patient", "Observation", "Coverage", "Nope", "metadata"]), rid=odd_text, vid=odd_text)
def test_odd_ids_never_get_a_5xx_nor_store_anything(gw: Gateway, rtype: str, rid: str, vid: str) -> None:
    quoted = quote(rid, safe="")
    check(gw, "GET", f"/fhir/{rtype}/{quoted}")
    check(gw, "GET", f"/fhir/{rtype}/{quoted}/_history/{quote(vid, safe='')}")
    check(gw, "PUT", f"/fhir/{rtype}/{quoted}", {"resourceType": rtype, "id": rid, "status": "final"})


@BUDGET
@given(
    params=st.lists(
        st.tuples(
            st.sampled_from(["_count", "_offset", "_lastUpdated", "patient", "_id", "identifier", "x", "_format"]),
            st.one_of(
                odd_text,
                st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "ge2026", "zz2026"]),
            ),
        ),
        max_size=3,
    )
)
def test_odd_search_parameters_never_get_a_5xx(gw: Gateway, params: list[tuple[str, str]]) -> None:
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
    check(gw, "GET", f"/fhir/Observation?{query}")


@BUDGET
@given(content_type=odd_text, accept=odd_text)
def test_odd_headers_never_get_a_5xx(gw: Gateway, content_type: str, accept: str) -> None:
    bundle = synthetic.Synthetic.seeded(1).transaction(2)

    def header(text: str) -> str:  # what can travel in a header: printable ASCII
        return "".join(c if " " <= c <= "~" else "?" for c in text)

    check(gw, "POST", "/fhir", bundle, **{"Content-Type": header(content_type), "Accept": header(accept)})


@pytest.mark.parametrize("levels", [150, 2000])
def test_deep_nesting_is_refused_cleanly(gw: Gateway, levels: int) -> None:
    obs = json.dumps(synthetic.Synthetic.seeded(2).clinical("Patient/x", 1))
    body = obs[:-1] + ',"extension":[' + _deep(levels) + "]}"
    check(gw, "POST", "/fhir/Observation", body.encode())


def test_json_nested_ten_thousand_levels_is_refused(gw: Gateway) -> None:
    check(gw, "POST", "/fhir", b"[" * 10_000 + b"]" * 10_000)


def test_batch_entries_that_are_not_objects_are_answered_per_entry(gw: Gateway) -> None:
    check(gw, "POST", "/fhir", {"resourceType": "Bundle", "type": "batch", "entry": [None, 5, "x"]})
