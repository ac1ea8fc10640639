"""Bundle validation rate: how long `records.validation` takes to check the 314-entry Synthea transaction in
tests/data/synthea (envelope + every entry, warm), and how long one resource of each type takes, in this process.

    .venv/bin/python bench/validation.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from records import validation

BUNDLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "synthea" / "lindsay928_gerlach374_2023.json"


def _best_ms(repeat: int, run: object) -> float:
    """The fastest of `repeat` runs (the least disturbed by the rest of the machine), in milliseconds."""
    assert callable(run)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs of each measurement; the fastest counts")
    args = parser.parse_args()
    body = BUNDLE.read_bytes()
    envelope_ms = _best_ms(args.repeat, lambda: validation.envelope(body))
    bundle_ms = _best_ms(args.repeat, lambda: validation.transaction_entries(validation.envelope(body)))
    entries = json.loads(body)["entry"]
    print(f"{len(entries)} entries: envelope {envelope_ms:.1f} ms, envelope + transaction_entries {bundle_ms:.1f} ms")
    by_type: dict[str, list[object]] = defaultdict(list)
    for e in entries:
        by_type[e["resource"]["resourceType"]].append(e["resource"])
    for rtype, resources in sorted(by_type.items(), key=lambda kv: -len(kv[1])):
        ms = _best_ms(args.repeat, lambda rs=resources: [validation.validate_resource(r, "R") for r in rs])
        print(f"{rtype:26} {len(resources):4} x {ms / len(resources) * 1000:7.0f} us")


if __name__ == "__main__":
    main()
