"""SMART scopes, exactly: every scope form against every interaction and operation. Nothing is ever widened."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.auth import Scope
from records import synthetic
from tests.unit.gateway_harness import Gateway, token

# interaction -> the SMART v2 letter it needs on its type
INTERACTIONS = {
    "create": ("c", "Observation"),
    "update": ("u", "Observation"),
    "read": ("r", "Observation"),
    "vread": ("r", "Observation"),
    "history": ("r", "Observation"),
    "search": ("s", "Observation"),
    "verify": ("r", "Observation"),
    "everything": ("r", "*"),
    "erase": ("d", "Patient"),
    "audit": ("s", "AuditEvent"),
    "match": ("r", "Patient"),
    "link": ("u", "Patient"),
    "disclose": ("r", "Observation"),
    "preauth-submit": ("c", "Claim"),
    "preauth-appeal": ("u", "Claim"),
    "preauth-decide": ("u", "ClaimResponse"),
    "subscription-create": ("c", "Subscription"),
}

SCOPES: list[tuple[str, set[str]]] = [  # a scope, and the letters it grants on Observation
    ("system/*.cruds", set("cruds")),
    ("system/Observation.cruds", set("cruds")),
    ("system/Observation.rs", set("rs")),
    ("system/Observation.c", set("c")),
    ("system/Observation.u", set("u")),
    ("system/Observation.d", set("d")),
    ("system/Patient.cruds", set()),
    ("system/*.read", set("rs")),
    ("system/*.write", set("cud")),
    ("system/Observation.read", set("rs")),
    ("system/Observation.write", set("cud")),
    ("system/*.*", set("cruds")),
    ("system/Observation.x", set()),
    ("openid launch", set()),
]


@pytest.mark.parametrize(("text", "letters"), SCOPES)
def test_scope_letters(text: str, letters: set[str]) -> None:
    parsed = [s for s in (Scope.parse(t) for t in text.split()) if s is not None]
    granted = {x for s in parsed if s.resource_type in ("*", "Observation") for x in s.letters}
    assert granted == letters


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, dict[str, str]]]:
    """A gateway holding two patients' visits; the ids the interactions use."""
    gw = Gateway(tmp_path_factory.mktemp("scopes"))
    ids: dict[str, str] = {}

    async def seed(g: Gateway) -> None:
        for n, who in ((3, "mine"), (3, "other")):
            r = await g.post("/fhir", synthetic.Synthetic.seeded(len(ids) + 40).transaction(n))
            locations = [e["response"]["location"] for e in r.json()["entry"]]
            ids[f"{who}-patient"] = locations[0].split("/")[1]
            ids[f"{who}-obs"] = next(x for x in locations if x.startswith("Observation/")).split("/")[1]

    gw.run(seed)
    yield gw, ids
    gw.close()


async def attempt(g: Gateway, interaction: str, ids: dict[str, str], scope: str, **claims: Any) -> int:
    """The status of one interaction on the first patient's data with this scope."""
    headers = {**token(scope, **claims), "Content-Type": "application/fhir+json"}
    obs, patient = ids["mine-obs"], ids["mine-patient"]
    body = synthetic.Synthetic.seeded(99).clinical(f"Patient/{patient}", 1)
    assert g.http is not None
    calls = {
        "create": ("POST", "/fhir/Observation", body),
        "update": ("PUT", f"/fhir/Observation/{obs}", {**body, "id": obs}),
        "read": ("GET", f"/fhir/Observation/{obs}", None),
        "vread": ("GET", f"/fhir/Observation/{obs}/_history/1", None),
        "history": ("GET", f"/fhir/Observation/{obs}/_history", None),
        "search": ("GET", f"/fhir/Observation?patient={patient}", None),
        "verify": ("GET", f"/fhir/Observation/{obs}/$verify", None),
        "everything": ("GET", f"/fhir/Patient/{patient}/$everything", None),
        "erase": ("POST", "/fhir/Patient/does-not-exist/$erase", None),
        "audit": ("GET", f"/fhir/AuditEvent?patient={patient}", None),
        "match": ("POST", "/fhir/Patient/$match", {"resourceType": "Parameters", "parameter": []}),
        "link": ("POST", f"/fhir/Patient/{patient}/$link", {"resourceType": "Parameters", "parameter": []}),
        "disclose": ("POST", f"/fhir/Observation/{obs}/$disclose", {"resourceType": "Parameters", "parameter": []}),
        "preauth-submit": ("POST", "/fhir/Claim/$submit", {"resourceType": "Bundle", "type": "collection"}),
        "preauth-appeal": ("POST", "/fhir/Claim/unknown/$appeal", {"resourceType": "Parameters", "parameter": []}),
        "preauth-decide": ("POST", "/fhir/ClaimResponse/unknown/$decide", {"resourceType": "Parameters"}),
        "subscription-create": ("POST", "/fhir/Subscription", {"resourceType": "Subscription"}),
    }
    method, path, payload = calls[interaction]
    content = json.dumps(payload).encode() if payload is not None else None
    r = await g.http.request(method, path, content=content, headers=headers)
    return r.status_code


@pytest.mark.parametrize("interaction", sorted(INTERACTIONS))
@pytest.mark.parametrize(
    "scope",
    [
        "system/*.cruds",
        "system/*.read",
        "system/*.write",
        "system/Observation.rs",
        "system/Observation.c",
        "system/Observation.u",
        "system/Patient.d",
        "system/AuditEvent.s",
        "system/Patient.cruds",
    ],
)
def test_every_system_scope_against_every_interaction(
    stack: tuple[Gateway, dict[str, str]], interaction: str, scope: str
) -> None:
    gw, ids = stack
    letter, rtype = INTERACTIONS[interaction]
    parsed = Scope.parse(scope)
    assert parsed is not None
    allowed = letter in parsed.letters and parsed.resource_type in ("*", rtype)
    statuses: list[int] = []

    async def go(g: Gateway) -> None:
        statuses.append(await attempt(g, interaction, ids, scope))

    gw.run(go)
    if allowed:
        assert statuses[0] != 403, (scope, interaction)
    else:
        assert statuses[0] == 403, (scope, interaction, statuses)


@pytest.mark.parametrize("interaction", sorted(INTERACTIONS))
def test_user_scopes_are_refused_never_widened(stack: tuple[Gateway, dict[str, str]], interaction: str) -> None:
    gw, ids = stack
    statuses: list[int] = []

    async def go(g: Gateway) -> None:
        statuses.append(await attempt(g, interaction, ids, "user/*.cruds user/*.read user/*.write"))

    gw.run(go)
    assert statuses == [403]


@pytest.mark.parametrize("interaction", ["read", "vread", "history", "search", "verify", "everything", "audit"])
def test_patient_scopes_reach_only_the_launch_patient(stack: tuple[Gateway, dict[str, str]], interaction: str) -> None:
    gw, ids = stack
    statuses: dict[str, int] = {}

    async def go(g: Gateway) -> None:
        statuses["no launch patient"] = await attempt(g, interaction, ids, "patient/*.rs")
        statuses["the launch patient"] = await attempt(g, interaction, ids, "patient/*.rs", patient=ids["mine-patient"])
        other = {**ids, "mine-patient": ids["other-patient"], "mine-obs": ids["other-obs"]}
        statuses["another patient"] = await attempt(g, interaction, other, "patient/*.rs", patient=ids["mine-patient"])

    gw.run(go)
    assert statuses["no launch patient"] == 403
    assert statuses["the launch patient"] == 200
    if interaction == "search":  # a search is narrowed to the compartment: it finds nothing of the other patient
        assert statuses["another patient"] == 200
    else:
        assert statuses["another patient"] == 403


def test_a_patient_scoped_search_never_returns_another_patients_data(stack: tuple[Gateway, dict[str, str]]) -> None:
    gw, ids = stack
    totals: list[int] = []

    async def go(g: Gateway) -> None:
        assert g.http is not None
        headers = token("patient/Observation.rs", patient=ids["mine-patient"])
        for query in ("", f"?patient={ids['other-patient']}", f"?_id={ids['other-obs']}"):
            r = await g.http.get(f"/fhir/Observation{query}", headers=headers)
            found = [e["resource"] for e in r.json().get("entry", [])]
            totals.append(sum(1 for o in found if o["subject"]["reference"] != f"Patient/{ids['mine-patient']}"))

    gw.run(go)
    assert totals == [0, 0, 0]
