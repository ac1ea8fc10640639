"""Templates, and the console's answers to errors (the mapping itself is `gateway.outcome`'s)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from gateway.console.auth import Viewer, sections
from gateway.console.service import Console

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))


def money(cents: int | None, currency: str = "") -> str:
    return f"{(cents or 0) / 100:,.2f} {currency}".strip()


def when(text: str | None) -> str:
    """An ISO timestamp as `YYYY-MM-DD HH:MM:SS` UTC (the chain's nanoseconds dropped)."""
    if not text:
        return ""
    return text.replace("T", " ")[:19]


def short(text: str, keep: int = 12) -> str:
    return text if len(text) <= keep else f"{text[:keep]}…"


templates.env.filters.update(money=money, when=when, short=short)


def page(request: Request, name: str, console: Console, who: Viewer, **context: Any) -> HTMLResponse:
    """A whole page, with the org's menu."""
    base = {"org": console.org, "viewer": who, "sections": sections(console, who), "now": datetime.now(UTC)}
    return templates.TemplateResponse(request, name, {**base, **context})


def fragment(request: Request, name: str, **context: Any) -> HTMLResponse:
    """A piece of a page, for htmx."""
    return templates.TemplateResponse(request, name, context)


def render_text(name: str, **context: Any) -> str:
    return str(templates.get_template(name).render(**context))


def error(request: Request, status: int, outcome: dict[str, Any]) -> Response:
    """The console's answer to an error `gateway.outcome` mapped: the login page for 401, else an error page (a
    fragment for htmx requests)."""
    if status == 401:
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": "/console/login"})
        return RedirectResponse("/console/login", status_code=303)
    messages = [str(i.get("diagnostics", "")) for i in outcome.get("issue", [])]
    name = "_error.html" if request.headers.get("hx-request") else "error.html"
    return templates.TemplateResponse(request, name, {"status": status, "messages": messages}, status_code=status)
