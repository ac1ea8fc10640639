"""De-identified research data: FHIR resources with the HIPAA Safe Harbor identifiers removed, as NDJSON per type.

Pure functions; what they do to a resource (docs/DEIDENTIFICATION.md has the reasoning):
- only clinical types are exported (`EXPORTED_TYPES`); documents, notes, claims, provenance and the like are not;
- identifiers, names, telecom, contacts, photos, links and every reference to something outside the export
  (practitioners, organizations, locations) are removed; the subject becomes `Patient/<study pseudonym>`, and every
  exported resource gets an id keyed per study, so references inside the export still resolve;
- free text is dropped: narrative, `text` of every CodeableConcept, notes and comments, `display` of every Coding and
  Reference, string and markdown values, titles, descriptions, conclusions, instructions, attachments;
- addresses keep state, country and the first three digits of the ZIP code, or `000` for the three-digit areas of
  20,000 people or fewer (`RESTRICTED_ZIP3`); street, city, district, geolocation and period go;
- every date is shifted by a secret per-patient (and per-study) offset of 1 to 365 days back, intervals preserved;
  year-only values, which Safe Harbor allows, stay;
- ages over 89: a subject aged 90 or more (at death, or at the export) loses the birth date and carries the
  extension `AGE_90_OR_OLDER`; Age quantities above 89 years become `>= 90`;
- extensions are kept only when known to be safe (race, ethnicity and birth sex categories, without their text).

`dataset_digest` fixes the export's content as one digest: what `Trials:AnchorDataset` anchors and anyone can check
a copy against (`python -m records.deidentify digest EXPORT.zip`).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import json
import re
import sys
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

EXPORTED_TYPES = frozenset(
    {
        "Patient",
        "AllergyIntolerance",
        "CarePlan",
        "CareTeam",
        "Condition",
        "Device",
        "DiagnosticReport",
        "Encounter",
        "Goal",
        "ImagingStudy",
        "Immunization",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationRequest",
        "MedicationStatement",
        "Observation",
        "Procedure",
        "SupplyDelivery",
    }
)
# Elements removed wherever they appear: identifiers, contact details, free text, binary content, unique numbers.
DROPPED = frozenset(
    {
        "identifier",
        "name",
        "telecom",
        "contact",
        "photo",
        "link",
        "text",
        "div",
        "display",
        "note",
        "comment",
        "title",
        "summary",
        "conclusion",
        "patientInstruction",
        "presentedForm",
        "attachment",
        "content",
        "data",
        "contained",
        "meta",
        "implicitRules",
        "udiCarrier",
        "serialNumber",
        "lotNumber",
        "distinctIdentifier",
        "uid",
        "valueString",
        "valueMarkdown",
        "valueAttachment",
        "valueBase64Binary",
        "valueUri",
        "valueUrl",
        "generalPractitioner",
        "managingOrganization",
    }
)
ADDRESS_KEYS = frozenset({"address", "valueAddress"})
KEPT_ADDRESS_PARTS = ("use", "type", "state", "country")
# Three-digit ZIP areas of 20,000 people or fewer (2000 Census, per HHS's Safe Harbor guidance): released as 000.
RESTRICTED_ZIP3 = frozenset(
    {
        "036",
        "059",
        "063",
        "102",
        "203",
        "556",
        "692",
        "790",
        "821",
        "823",
        "830",
        "831",
        "878",
        "879",
        "884",
        "890",
        "893",
    }
)
SAFE_EXTENSIONS = frozenset(
    {
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
    }
)
AGE_90_OR_OLDER = "urn:careledger:extension:age-90-or-older"
DATE = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?(T.*)?$")
UCUM = "http://unitsofmeasure.org"
VERBATIM = frozenset({"resourceType", "url", "system", "code", "version", "unit", "reference"})  # never dates


@dataclass(frozen=True)
class Subject:
    """One study subject as the export shows it: a pseudonym and a date offset, both keyed per study by the
    custodian's secret for the patient, so neither can be computed by the sponsor or linked across studies."""

    pseudonym: str
    offset_days: int  # negative: dates move back by 1 to 365 days
    key: bytes  # keys the ids of the subject's exported resources

    @classmethod
    def keyed(cls, patient_secret: bytes, study_id: str) -> Subject:
        study_key = hmac.new(patient_secret, b"careledger/research/v1|" + study_id.encode(), hashlib.sha256).digest()
        pseudonym = hmac.new(study_key, b"subject", hashlib.sha256).hexdigest()
        drawn = int.from_bytes(hmac.new(study_key, b"date-offset", hashlib.sha256).digest()[:4], "big")
        return cls(pseudonym, -(1 + drawn % 365), study_key)

    def resource_id(self, rtype: str, rid: str) -> str:
        if rtype == "Patient":
            return self.pseudonym
        return hmac.new(self.key, f"resource|{rtype}/{rid}".encode(), hashlib.sha256).hexdigest()


def shift(value: str, days: int) -> str:
    """A FHIR date, dateTime or instant moved by whole days (time of day and zone kept); year-only stays."""
    m = DATE.match(value)
    if m is None:
        return value
    year, month, day, rest = m.groups()
    try:
        moved = date(int(year), int(month), int(day or 1)) + timedelta(days=days)
    except ValueError:
        return value
    if day is None:
        return f"{moved.year:04d}-{moved.month:02d}"
    return moved.isoformat() + (rest or "")


def zip3(postal_code: str) -> str | None:
    digits = postal_code.strip()[:5]
    if not re.fullmatch(r"\d{5}", digits):
        return None
    return "000" if digits[:3] in RESTRICTED_ZIP3 else digits[:3]


def _address(address: dict[str, Any]) -> dict[str, Any]:
    out = {k: address[k] for k in KEPT_ADDRESS_PARTS if isinstance(address.get(k), str)}
    if isinstance(address.get("postalCode"), str) and (z := zip3(address["postalCode"])) is not None:
        out["postalCode"] = z
    return out


def _age_years(born: str, at: str) -> int | None:
    b, a = DATE.match(born), DATE.match(at)
    if b is None or a is None or b.group(3) is None:
        return None
    birth = date(int(b.group(1)), int(b.group(2)), int(b.group(3)))
    then = date(int(a.group(1)), int(a.group(2)), int(a.group(3) or 1))
    return then.year - birth.year - ((then.month, then.day) < (birth.month, birth.day))


def aged_90_or_more(patient: Mapping[str, Any], today: date) -> bool:
    """Whether the patient is (or was, at death) 90 or older; unknown birth dates count as not."""
    born = str(patient.get("birthDate") or "")
    if re.fullmatch(r"\d{4}", born):
        return today.year - int(born) >= 90
    at = str(patient.get("deceasedDateTime") or today.isoformat())
    age = _age_years(born, at)
    return age is not None and age >= 90


class _Drop:
    pass


DROP = _Drop()


def deidentify(
    resource: Mapping[str, Any], subject: Subject, exported: Mapping[str, str], today: date
) -> dict[str, Any] | None:
    """The resource as a study sees it, or None when its type is not exported. `exported` maps every reference
    to a resource in the export (`Type/id`, and `urn:uuid:id` as Synthea writes them) to its new `Type/id`."""
    rtype = str(resource.get("resourceType"))
    if rtype not in EXPORTED_TYPES:
        return None
    old = rtype == "Patient" and aged_90_or_more(resource, today)

    def walk(node: Any, key: str) -> Any:
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str) or (key.endswith("Reference") and "identifier" in node):
                target = exported.get(str(node.get("reference") or ""))
                return {"reference": target} if target else DROP
            if key in ADDRESS_KEYS:
                return _address(node) or DROP
            over_89 = isinstance(node.get("value"), (int, float)) and node["value"] > 89
            if key.endswith("Age") and node.get("system") == UCUM and node.get("code") == "a" and over_89:
                return {**node, "value": 90, "comparator": ">=", "unit": "a"}
            out: dict[str, Any] = {}
            for k, v in node.items():
                if k in DROPPED or (k == "description" and isinstance(v, str)):
                    continue
                if k == "url" and key not in ("extension", "modifierExtension"):
                    continue
                kept = walk(v, k)
                if kept is not DROP:
                    out[k] = kept
            return out or DROP
        if isinstance(node, list):
            if key in ("extension", "modifierExtension"):
                node = [e for e in node if _safe_extension(e)]
            items = [walk(v, key) for v in node]
            kept_items = [v for v in items if v is not DROP]
            return kept_items or DROP
        if isinstance(node, str):
            if key in VERBATIM:
                return node
            return shift(node, subject.offset_days)
        return node

    body = {k: v for k, v in resource.items() if k not in ("id", "resourceType")}
    if old:
        body.pop("birthDate", None)
    out = walk(body, "")
    result: dict[str, Any] = {"resourceType": rtype, "id": subject.resource_id(rtype, str(resource.get("id")))}
    if isinstance(out, dict):
        result |= out
    if old:
        result.setdefault("extension", []).append({"url": AGE_90_OR_OLDER, "valueBoolean": True})
    return result


def _safe_extension(extension: Any) -> bool:
    if not isinstance(extension, dict):
        return False
    url = extension.get("url")
    return url in SAFE_EXTENSIONS or url in ("ombCategory", "detailed")


def references_of(
    resources: Iterable[Mapping[str, Any]], subject: Subject, patient_id: str | None = None
) -> dict[str, str]:
    """The reference map for one subject's exported resources (both `Type/id` and `urn:uuid:id` forms), and for the
    subject's own Patient (`patient_id`) even when that resource itself is not released."""
    out: dict[str, str] = {}
    if patient_id:
        out[f"Patient/{patient_id}"] = out[f"urn:uuid:{patient_id}"] = f"Patient/{subject.pseudonym}"
    for r in resources:
        rtype, rid = str(r.get("resourceType")), str(r.get("id"))
        if rtype in EXPORTED_TYPES:
            new = f"{rtype}/{subject.resource_id(rtype, rid)}"
            out[f"{rtype}/{rid}"] = new
            out[f"urn:uuid:{rid}"] = new
    return out


def subject_export(
    resources: Sequence[Mapping[str, Any]], subject: Subject, today: date, patient_id: str | None = None
) -> list[dict[str, Any]]:
    """One subject's resources, de-identified (types that are not exported left out); `patient_id`: the subject's
    Patient id at the custodian."""
    refs = references_of(resources, subject, patient_id)
    return [d for r in resources if (d := deidentify(r, subject, refs, today)) is not None]


# ----- the dataset: NDJSON per type, a manifest, one digest ------------------------------------------------------


def ndjson_files(resources: Iterable[Mapping[str, Any]]) -> dict[str, bytes]:
    """`<Type>.ndjson` per resource type: one canonical JSON line per resource, lines sorted (so a dataset's bytes
    depend only on its content)."""
    by_type: dict[str, list[bytes]] = {}
    for r in resources:
        line = json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        by_type.setdefault(str(r["resourceType"]), []).append(line)
    return {f"{t}.ndjson": b"\n".join(sorted(lines)) + b"\n" for t, lines in by_type.items()}


def manifest(study_id: str, version: str, files: Mapping[str, bytes]) -> dict[str, Any]:
    return {
        "studyId": study_id,
        "version": version,
        "files": [
            {"name": name, "sha256": hashlib.sha256(files[name]).hexdigest(), "lines": files[name].count(b"\n")}
            for name in sorted(files)
        ],
    }


def dataset_digest(study_id: str, version: str, files: Mapping[str, bytes]) -> str:
    """SHA-256 of the canonical manifest (study, version, and each file's name, SHA-256 and line count)."""
    text = json.dumps(manifest(study_id, version, files), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


MANIFEST = "manifest.json"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def write_zip(study_id: str, version: str, files: Mapping[str, bytes]) -> bytes:
    """The export as one ZIP (entries in name order, fixed times): the NDJSON files and manifest.json."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            z.writestr(zipfile.ZipInfo(name, ZIP_TIME), files[name], zipfile.ZIP_DEFLATED)
        doc = manifest(study_id, version, files) | {"digest": dataset_digest(study_id, version, files)}
        z.writestr(zipfile.ZipInfo(MANIFEST, ZIP_TIME), json.dumps(doc, indent=2) + "\n", zipfile.ZIP_DEFLATED)
    return out.getvalue()


def read_zip(data: bytes) -> tuple[str, str, dict[str, bytes]]:
    """(study, version, NDJSON files) of an export; the digest is recomputed from the files, never read."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        doc = json.loads(z.read(MANIFEST))
        files = {n: z.read(n) for n in z.namelist() if n != MANIFEST}
    return str(doc["studyId"]), str(doc["version"]), files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m records.deidentify")
    sub = parser.add_subparsers(dest="command", required=True)
    digest = sub.add_parser("digest", help="recompute an export's digest (compare it with Trials:VerifyDataset)")
    digest.add_argument("export", help="the export ZIP")
    args = parser.parse_args(argv)
    with open(args.export, "rb") as f:
        study, version, files = read_zip(f.read())
    print(json.dumps({"studyId": study, "version": version, "digest": dataset_digest(study, version, files)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
