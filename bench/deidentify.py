"""De-identified export rate: how many resources per second the custodian's de-identification turns into a study's
dataset (Safe Harbor rules, reference rewriting, NDJSON per type, the manifest digest), measured in this process on
the published Synthea bundles in tests/data/synthea. Reading the rows from the store and the HTTP response are not
included; the export over the gateway is tested in tests/integration/test_privacy.py.

    .venv/bin/python bench/deidentify.py [--subjects 200]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

from records import deidentify

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "data" / "synthea"


def _bundles() -> list[list[dict[str, object]]]:
    return [[e["resource"] for e in json.loads(p.read_text())["entry"]] for p in sorted(FIXTURES.glob("*.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=200, help="subjects exported (each one Synthea bundle)")
    args = parser.parse_args()
    bundles, today = _bundles(), date.today()
    exported: list[dict[str, object]] = []
    taken = 0
    started = time.perf_counter()
    for i in range(args.subjects):
        resources = bundles[i % len(bundles)]
        subject = deidentify.Subject.keyed(os.urandom(32), "BENCH-STUDY")
        patient_id = str(next(r["id"] for r in resources if r["resourceType"] == "Patient"))
        exported += deidentify.subject_export(resources, subject, today, patient_id)
        taken += len(resources)
    shaped = time.perf_counter()
    files = deidentify.ndjson_files(exported)
    digest = deidentify.dataset_digest("BENCH-STUDY", "v1", files)
    done = time.perf_counter()
    size = sum(len(b) for b in files.values())
    print(f"subjects                      {args.subjects}")
    print(f"resources read                {taken}")
    print(f"resources exported            {len(exported)} in {len(files)} NDJSON files, {size / 2**20:.1f} MiB")
    print(f"de-identification             {taken / (shaped - started):,.0f} resources/s read")
    print(f"NDJSON and digest             {len(exported) / (done - shaped):,.0f} resources/s exported")
    print(f"whole export                  {taken / (done - started):,.0f} resources/s ({done - started:.1f} s)")
    print(f"dataset digest                {digest[:16]}…")


if __name__ == "__main__":
    main()
