"""FHIR R4 input checks, before anything is stored or sent to the ledger.

`fhir.resources` (R4 through its R4B models) defines structure and types. Building its models costs 0.5 to 2 ms a
resource, so `records.fhir_structure` gives their verdict by walking the JSON with rules read from the models; a model
parses a resource only when that walk finds a problem or meets something it cannot vouch for, and words the errors.
The models do not check terminology: they accept `Bundle.type = "nonsense"` and `Patient.gender = "xyz"`. So every
coded element whose model lists `enum_values` (the required bindings) is checked here as well. Every R4 resource type
is accepted. Bundle rules come on top: unique fullUrls, no dangling `urn:uuid:` references, ids, nesting depth and
size limits. Every problem is an `Issue` that names the element, and a refused request lists every problem found (up
to `records.errors.MAX_ISSUES`), so an integrator fixes a bundle in one round trip.
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import pydantic
from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel

from records import fhir_structure, json_form
from records.errors import FhirInvalid, Issue, Malformed, TooCostly

NOT_STORED = {  # resource types that are not records, and why
    "Parameters": "a Parameters is not a record to store",
    "OperationOutcome": "an OperationOutcome is not a record to store",
    "Subscription": "a Subscription is not a record: create it with POST /fhir/Subscription",
}


# Every resource type of the FHIR models this server validates with (fhir.resources R4B: R4's types and R4B's few
# additions). Written out, because finding them takes importing every model (seconds); a unit test checks the list
# against the models.
RESOURCE_TYPES = frozenset(
    {
        "Account",
        "ActivityDefinition",
        "AdministrableProductDefinition",
        "AdverseEvent",
        "AllergyIntolerance",
        "Appointment",
        "AppointmentResponse",
        "AuditEvent",
        "Basic",
        "Binary",
        "BiologicallyDerivedProduct",
        "BodyStructure",
        "Bundle",
        "CapabilityStatement",
        "CarePlan",
        "CareTeam",
        "CatalogEntry",
        "ChargeItem",
        "ChargeItemDefinition",
        "Citation",
        "Claim",
        "ClaimResponse",
        "ClinicalImpression",
        "ClinicalUseDefinition",
        "CodeSystem",
        "Communication",
        "CommunicationRequest",
        "CompartmentDefinition",
        "Composition",
        "ConceptMap",
        "Condition",
        "Consent",
        "Contract",
        "Coverage",
        "CoverageEligibilityRequest",
        "CoverageEligibilityResponse",
        "DetectedIssue",
        "Device",
        "DeviceDefinition",
        "DeviceMetric",
        "DeviceRequest",
        "DeviceUseStatement",
        "DiagnosticReport",
        "DocumentManifest",
        "DocumentReference",
        "Encounter",
        "Endpoint",
        "EnrollmentRequest",
        "EnrollmentResponse",
        "EpisodeOfCare",
        "EventDefinition",
        "Evidence",
        "EvidenceReport",
        "EvidenceVariable",
        "ExampleScenario",
        "ExplanationOfBenefit",
        "FamilyMemberHistory",
        "Flag",
        "Goal",
        "GraphDefinition",
        "Group",
        "GuidanceResponse",
        "HealthcareService",
        "ImagingStudy",
        "Immunization",
        "ImmunizationEvaluation",
        "ImmunizationRecommendation",
        "ImplementationGuide",
        "Ingredient",
        "InsurancePlan",
        "Invoice",
        "Library",
        "Linkage",
        "List",
        "Location",
        "ManufacturedItemDefinition",
        "Measure",
        "MeasureReport",
        "Media",
        "Medication",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationKnowledge",
        "MedicationRequest",
        "MedicationStatement",
        "MedicinalProductDefinition",
        "MessageDefinition",
        "MessageHeader",
        "MolecularSequence",
        "NamingSystem",
        "NutritionOrder",
        "NutritionProduct",
        "Observation",
        "ObservationDefinition",
        "OperationDefinition",
        "OperationOutcome",
        "Organization",
        "OrganizationAffiliation",
        "PackagedProductDefinition",
        "Parameters",
        "Patient",
        "PaymentNotice",
        "PaymentReconciliation",
        "Person",
        "PlanDefinition",
        "Practitioner",
        "PractitionerRole",
        "Procedure",
        "Provenance",
        "Questionnaire",
        "QuestionnaireResponse",
        "RegulatedAuthorization",
        "RelatedPerson",
        "RequestGroup",
        "ResearchDefinition",
        "ResearchElementDefinition",
        "ResearchStudy",
        "ResearchSubject",
        "RiskAssessment",
        "Schedule",
        "SearchParameter",
        "ServiceRequest",
        "Slot",
        "Specimen",
        "SpecimenDefinition",
        "StructureDefinition",
        "StructureMap",
        "Subscription",
        "SubscriptionStatus",
        "SubscriptionTopic",
        "Substance",
        "SubstanceDefinition",
        "SupplyDelivery",
        "SupplyRequest",
        "Task",
        "TerminologyCapabilities",
        "TestReport",
        "TestScript",
        "ValueSet",
        "VerificationResult",
        "VisionPrescription",
    }
)

STORED_TYPES = RESOURCE_TYPES - frozenset(NOT_STORED)  # every resource type this server keeps as a record


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 10 * 1024 * 1024
    max_entries: int = 5000


ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
MAX_DEPTH = 64  # deeper JSON is refused before any parser recurses into it (FHIR resources nest far less)


@dataclass
class Entry:
    index: int
    full_url: str
    method: str  # POST | PUT
    resource: dict[str, Any]
    resource_id: str | None  # the id a PUT names; None for POST (the server assigns one)
    if_none_exist: str | None = None  # conditional create: identifier=system|value
    if_match: str | None = None  # update only this version: W/"n"
    if_none_match: str | None = None  # "*": update only if the resource does not exist yet


def id_issue(value: str, where: str) -> Issue | None:
    """The FHIR id rule, for every route and every resource type: 1 to 64 of [A-Za-z0-9-.], and not "." or ".."."""
    if ID_PATTERN.fullmatch(value) and value not in (".", ".."):
        return None
    shown = value if len(value) <= 70 else value[:64] + "..."
    return Issue("value", where, f"{shown!r} is not a FHIR id (1 to 64 of A-Z a-z 0-9 - .)")


def check_type(resource_type: str) -> str:
    """A resource type of FHIR R4 (search and read name one in the URL)."""
    try:
        get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        raise Malformed(
            [Issue("not-supported", "type", f"{resource_type[:64]!r} is not a FHIR resource type")]
        ) from None
    return resource_type


def check_id(value: str, where: str = "id") -> str:
    if (issue := id_issue(value, where)) is not None:
        raise Malformed([issue])
    return value


def _depth(node: Any, limit: int) -> int:
    """How deep a JSON tree goes (a value inside n objects or arrays is at depth n + 1), counting no further than
    `limit`, without recursion. Only objects and arrays are stacked: a leaf only sets the depth of its level."""
    deepest, stack = 1, [(node, 1)]
    if deepest > limit:
        return deepest
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
            if depth + 1 > deepest:
                deepest = depth + 1
                if deepest > limit:
                    return deepest
    return deepest


@dataclass
class Envelope:
    """A Bundle whose own fields are valid; its entries are checked by `transaction_entries` or `entry`."""

    type: str  # transaction | batch
    raw_entries: list[Any] = field(default_factory=list)


def parse_json(body: bytes, limits: Limits) -> Any:
    if len(body) > limits.max_bytes:
        raise TooCostly(
            [Issue("too-costly", "Bundle", f"the request is {len(body)} bytes; at most {limits.max_bytes}")]
        )
    try:
        data = json_form.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise Malformed([Issue("structure", "", f"the body is not JSON: {e}")]) from None
    except RecursionError:
        raise Malformed([Issue("too-costly", "", f"the JSON nests deeper than {MAX_DEPTH} levels")]) from None
    if _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise Malformed([Issue("too-costly", "", f"the JSON nests deeper than {MAX_DEPTH} levels")])
    return data


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


# Required bindings whose codes `fhir.resources` lists only in part: its `enum_values` end with "+" where the R4 value
# set goes on (ObservationStatus: "registered | preliminary | final | amended +"). Without the rest, an amended,
# cancelled or entered-in-error record, which EHRs send every day, would be refused. The full R4 (4.0.1) value sets:
CONTINUED_CODES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("registered", "preliminary", "final", "amended", "+"): (  # Observation, DetectedIssue, RiskAssessment
        "registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown",
    ),
    ("registered", "partial", "preliminary", "final", "+"): (  # DiagnosticReport
        "registered", "partial", "preliminary", "final", "amended", "corrected", "appended", "cancelled",
        "entered-in-error", "unknown",
    ),
    ("planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "+"): (  # Encounter
        "planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "entered-in-error",
        "unknown",
    ),
    ("active", "completed", "entered-in-error", "+"): (  # DeviceUseStatement
        "active", "completed", "entered-in-error", "intended", "stopped", "on-hold",
    ),
    ("draft", "active", "suspended", "+"): (  # SupplyRequest
        "draft", "active", "suspended", "cancelled", "completed", "entered-in-error", "unknown",
    ),
    ("draft", "requested", "received", "accepted", "+"): (  # Task
        "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress", "on-hold",
        "failed", "completed", "entered-in-error",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class _Element:
    """What the binding check needs of one element of a model: its bound codes, and the model of its value."""

    codes: tuple[str, ...] | None
    model: type[FHIRAbstractModel] | None  # a complex element's model; Resource: any resource


def _bound_codes(extra: Any) -> tuple[str, ...] | None:
    enum = extra.get("enum_values") if isinstance(extra, dict) else None
    if not isinstance(enum, list):
        return None
    listed = tuple(str(code) for code in enum)
    if listed and listed[-1] == "+":
        return CONTINUED_CODES.get(listed, listed[:-1])
    return listed


def _element_model(annotation: Any) -> type[FHIRAbstractModel] | None:
    """The model a field's values are parsed with (through Optional and List), or None for a primitive."""
    stack = [annotation]
    while stack:
        tp = stack.pop()
        if isinstance(tp, type) and hasattr(tp, "get_model_klass"):
            model: type[FHIRAbstractModel] = tp.get_model_klass()
            return model
        stack.extend(typing.get_args(tp))
    return None


@functools.cache
def _elements(model: type[FHIRAbstractModel]) -> dict[str, _Element]:
    """The elements of a model, by JSON name, that carry a required binding or hold other elements."""
    found: dict[str, _Element] = {}
    for name, info in model.model_fields.items():
        element = _Element(_bound_codes(info.json_schema_extra), _element_model(info.annotation))
        if element.codes is not None or element.model is not None:
            found[info.alias or name] = element
    return found


def _model_of(node: dict[str, Any], declared: type[FHIRAbstractModel]) -> type[FHIRAbstractModel] | None:
    """A nested value's model: the declared one, or, for an element that holds any resource (contained,
    Bundle.entry.resource, Parameters.parameter.resource), the model its resourceType names."""
    if declared.__name__ not in ("Resource", "FHIRAbstractModel"):
        return declared
    try:
        return get_fhir_model_class(str(node.get("resourceType")))
    except (KeyError, ValueError):
        return None  # an unknown type: the model's own validation says so


def binding_issues(node: dict[str, Any], model: type[FHIRAbstractModel], path: str) -> Iterator[Issue]:
    """Coded elements with a required binding whose value is not one of the bound codes, at any depth, read from
    the JSON as sent. Only the elements present are visited, so this costs a fraction of the model's own parse,
    and it reports bindings even when the model refuses the resource for other reasons (every problem at once).
    A path is written out only for an issue found (the parts on the way are kept as a tuple until then)."""
    stack: list[tuple[dict[str, Any], type[FHIRAbstractModel], tuple[str, ...]]] = [(node, model, (path,))]
    while stack:
        current, current_model, at = stack.pop()
        elements = _elements(current_model)
        for key, value in current.items():
            element = elements.get(key)
            if element is None:
                continue
            many = type(value) is list
            for i, item in enumerate(value if many else (value,)):
                if element.codes is not None and type(item) is str and item not in element.codes:
                    where = "".join(at) + f".{key}" + (f"[{i}]" if many else "")
                    codes = ", ".join(element.codes)
                    yield Issue("code-invalid", where, f"{item!r} is not one of the required codes: {codes}")
                elif element.model is not None and type(item) is dict:
                    inner = _model_of(item, element.model)
                    if inner is not None:
                        stack.append((item, inner, (*at, f".{key}[{i}]" if many else f".{key}")))


def validate_resource(data: Any, path: str, supported: Collection[str] = STORED_TYPES) -> str:
    """Check one resource against its R4 model and its required bindings, and give its resource type; raise
    FhirInvalid naming elements. `supported`: the resource types accepted (by default every type stored as a record;
    a Subscription is checked with its own list by `records.subscriptions`).

    The structure is checked by `fhir_structure.conforms`, which walks the JSON with rules read from the model; only
    when it finds a problem or meets something it cannot vouch for does the model itself parse the resource (four to
    seven times slower), which decides and words the errors. No caller needs the parsed model."""
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise Malformed([Issue("structure", path, "a resource is a JSON object with a resourceType")])
    resource_type: str = data["resourceType"]
    try:
        model_class = get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        raise FhirInvalid(
            [Issue("not-supported", f"{path}.resourceType", f"unknown resource type {resource_type!r}")]
        ) from None
    if resource_type not in supported:
        why = NOT_STORED.get(resource_type) or f"{resource_type} is not taken here"
        raise FhirInvalid([Issue("not-supported", f"{path}.resourceType", why)])
    issues = sorted(binding_issues(data, model_class, path), key=lambda i: i.expression)
    if not fhir_structure.conforms(data, model_class):
        issues += _structure_issues(data, model_class, path)
    if issues:
        raise FhirInvalid(issues)
    return resource_type


def _structure_issues(data: dict[str, Any], model_class: type[FHIRAbstractModel], path: str) -> list[Issue]:
    """What the model itself finds wrong with a resource (nothing, when only the fast check could not tell)."""
    try:
        model_class.model_validate(data)
    except pydantic.ValidationError as e:
        return [Issue("structure", _path(path, tuple(err["loc"])), err["msg"]) for err in e.errors()]
    except RecursionError:
        raise Malformed([Issue("too-costly", path, "the resource nests too deep to check")]) from None
    return []


def references(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every Reference.reference in a JSON tree, with its FHIRPath, in document order. A path is written out only
    for a reference found (most elements hold none)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(node, (path,))]
    while stack:
        current, at = stack.pop()
        if isinstance(current, dict):
            ref = current.get("reference")
            if isinstance(ref, str):
                yield ref, "".join(at) + ".reference"
            stack.extend((v, (*at, f".{k}")) for k, v in reversed(current.items()) if isinstance(v, (dict, list)))
        elif isinstance(current, list):
            stack.extend(
                (v, (*at, f"[{i}]")) for i, v in reversed(list(enumerate(current))) if isinstance(v, (dict, list))
            )


def reference_values(node: Any) -> Iterator[str]:
    """Every Reference.reference in a JSON tree, without paths: the cheap look that `references` (which writes out
    where each one is) follows only when one of them is wrong."""
    stack = [node]
    while stack:
        current = stack.pop()
        if type(current) is dict:
            ref = current.get("reference")
            if type(ref) is str:
                yield ref
            stack.extend(v for v in current.values() if type(v) is dict or type(v) is list)
        elif type(current) is list:
            stack.extend(v for v in current if type(v) is dict or type(v) is list)


def entry(raw: Any, i: int) -> Entry:
    """Check one Bundle entry: a POST or PUT of a supported, valid resource; every problem of the entry at once."""
    at = f"Bundle.entry[{i}]"
    if not isinstance(raw, dict):
        raise Malformed([Issue("structure", at, "an entry is a JSON object")])
    request: dict[str, Any] = raw["request"] if isinstance(raw.get("request"), dict) else {}
    method, url = str(request.get("method") or ""), str(request.get("url") or "")
    issues: list[Issue] = []
    if method not in ("POST", "PUT"):
        issues.append(
            Issue("not-supported", f"{at}.request.method", f"{method or 'no method'}: entries are POST or PUT")
        )
    resource: Any = raw.get("resource")
    try:
        rtype = validate_resource(resource, f"{at}.resource")
    except FhirInvalid as e:
        if isinstance(e, Malformed) and not issues:
            raise
        raise FhirInvalid(e.issues + issues) from None  # the resource is wrong: its request line cannot be judged
    resource_id: str | None = None
    if method == "PUT":
        kind, _, resource_id = url.partition("/")
        if kind != rtype or (issue := id_issue(resource_id, f"{at}.request.url")) is not None:
            issues.append(issue or Issue("value", f"{at}.request.url", f"a PUT names {rtype}/<id>, not {url!r}"))
        elif resource.get("id") not in (None, resource_id):
            issues.append(Issue("value", f"{at}.resource.id", f"the id differs from the request url {url}"))
    elif method == "POST" and url != rtype:
        issues.append(Issue("value", f"{at}.request.url", f"a POST of a {rtype} goes to {rtype!r}, not {url!r}"))
    if issues:
        raise FhirInvalid(issues)
    conditions = {k: str(request[k]) for k in ("ifNoneExist", "ifMatch", "ifNoneMatch") if request.get(k)}
    if conditions.get("ifNoneExist") and method != "POST":
        raise FhirInvalid([Issue("invariant", f"{at}.request.ifNoneExist", "ifNoneExist is for POST entries")])
    if (conditions.get("ifMatch") or conditions.get("ifNoneMatch")) and method != "PUT":
        raise FhirInvalid([Issue("invariant", f"{at}.request", "ifMatch and ifNoneMatch are for PUT entries")])
    return Entry(
        i,
        str(raw.get("fullUrl") or ""),
        method,
        resource,
        resource_id,
        conditions.get("ifNoneExist"),
        conditions.get("ifMatch"),
        conditions.get("ifNoneMatch"),
    )


def envelope(body: bytes, limits: Limits = Limits()) -> Envelope:
    """Check the Bundle itself: size, JSON, resourceType, type (transaction | batch), entry count."""
    data = parse_json(body, limits)
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise Malformed([Issue("structure", "Bundle", "POST /fhir takes a Bundle")])
    bundle_type = data.get("type")
    if bundle_type not in ("transaction", "batch"):
        raise FhirInvalid(
            [Issue("code-invalid", "Bundle.type", f"{bundle_type!r}: POST /fhir takes a transaction or batch")]
        )
    raw_entries = data.get("entry") or []
    if not isinstance(raw_entries, list):
        raise Malformed([Issue("structure", "Bundle.entry", "entry is a list")])
    if len(raw_entries) > limits.max_entries:
        raise TooCostly(
            [Issue("too-costly", "Bundle.entry", f"{len(raw_entries)} entries; at most {limits.max_entries}")]
        )
    return Envelope(str(bundle_type), raw_entries)


def transaction_entries(env: Envelope) -> list[Entry]:
    """Every entry of a transaction, checked together: one bad entry rejects the whole bundle, and the refusal lists
    every problem of every entry."""
    entries: list[Entry] = []
    issues: list[Issue] = []
    for i, raw in enumerate(env.raw_entries):
        try:
            entries.append(entry(raw, i))
        except FhirInvalid as e:
            issues += e.issues
    seen: dict[str, int] = {}
    for checked in entries:
        if not checked.full_url:
            continue
        if checked.full_url in seen:
            where, first = f"Bundle.entry[{checked.index}].fullUrl", seen[checked.full_url]
            issues.append(Issue("invariant", where, f"{checked.full_url} repeats entry {first}"))
        seen[checked.full_url] = checked.index
    for checked in entries:
        if all(ref in seen or not ref.startswith("urn:uuid:") for ref in reference_values(checked.resource)):
            continue
        for ref, where in references(checked.resource, f"Bundle.entry[{checked.index}].resource"):
            if ref.startswith("urn:uuid:") and ref not in seen:
                issues.append(Issue("invariant", where, f"{ref} names no entry of this bundle"))
    if issues:
        raise FhirInvalid(issues)
    return entries


def batch_entry(raw: Any, i: int) -> Entry:
    """One entry of a batch: checked on its own, since a batch's entries are independent (FHIR). A reference to
    another entry by its `urn:uuid:` fullUrl cannot be resolved in a batch: that takes a transaction."""
    checked = entry(raw, i)
    checked.full_url = ""
    issues = [
        Issue(
            "invariant",
            where,
            f"{ref} points at another entry: a batch's entries are independent; send a transaction Bundle"
            " to have references between entries resolved",
        )
        for ref, where in references(checked.resource, f"Bundle.entry[{i}].resource")
        if ref.startswith(("urn:uuid:", "urn:oid:"))
    ]
    if issues:
        raise FhirInvalid(issues)
    return checked
