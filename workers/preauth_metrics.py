"""The prior-authorisation figures payers must publish (CMS-0057-F), computed from the chain alone: every request,
its priority, when it was submitted and decided, and how (Claims:PreauthsByPeriod)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Figures:
    priority: str
    requests: int
    approved: int
    denied: int
    approved_after_appeal: int
    undecided: int
    late: int  # decided after the time it was due, or still undecided past it
    mean_hours: float | None
    median_hours: float | None


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def figures(requests: list[dict[str, Any]], now: datetime) -> list[Figures]:
    """One row per priority (expedited, standard), then all."""
    rows = []
    for priority in ("expedited", "standard", "all"):
        mine = [r for r in requests if priority in ("all", r.get("priority"))]
        decided = [r for r in mine if r.get("decidedAt")]
        hours = [(_at(r["decidedAt"]) - _at(r["submittedAt"])).total_seconds() / 3600 for r in decided]
        late = sum(
            1
            for r in mine
            if any(d.get("late") for d in r.get("decisions") or [])
            or (r["status"] != "decided" and r.get("dueAt") and _at(r["dueAt"]) < now)
        )
        rows.append(
            Figures(
                priority,
                len(mine),
                sum(1 for r in mine if r.get("outcome") == "approved" and not r.get("appealedAt")),
                sum(1 for r in mine if r["status"] == "decided" and r.get("outcome") == "denied"),
                sum(1 for r in mine if r.get("outcome") == "approved" and r.get("appealedAt")),
                sum(1 for r in mine if r["status"] != "decided" and r["status"] != "cancelled"),
                late,
                statistics.fmean(hours) if hours else None,
                statistics.median(hours) if hours else None,
            )
        )
    return rows
