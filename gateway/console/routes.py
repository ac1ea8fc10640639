"""The console's routes: login and logout, the start page, static files, and each section's router."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from gateway.auth import authenticate
from gateway.console import claims, network, patients, render, supply
from gateway.console.auth import COOKIE, ConsoleDep, ViewerDep
from gateway.deps import ServicesDep
from gateway.outcome import HttpProblem

log = logging.getLogger("careledger.gateway")
router = APIRouter(prefix="/console")
COOKIE_MAX_AGE_S = 8 * 3600  # the token's own expiry ends the session sooner
LOGIN_MAX_BYTES = 64 * 1024


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, console: ConsoleDep) -> HTMLResponse:
    return render.templates.TemplateResponse(request, "login.html", {"org": console.org, "problem": ""})


@router.post("/login")
async def login(request: Request, console: ConsoleDep, svc: ServicesDep) -> Response:
    """Check the token (a urlencoded form field) as the API would; keep it in an HttpOnly cookie for this console."""
    form = parse_qs((await request.body())[:LOGIN_MAX_BYTES].decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    try:
        client = authenticate(svc.config.tokens, f"Bearer {token}")
    except HttpProblem as e:
        context = {"org": console.org, "problem": str(e)}
        return render.templates.TemplateResponse(request, "login.html", context, status_code=401)
    log.info("console login", extra={"org": console.org.name, "subject": client.subject})
    answer = RedirectResponse("/console/", status_code=303)
    answer.set_cookie(
        COOKIE, token, max_age=COOKIE_MAX_AGE_S, path="/console", secure=True, httponly=True, samesite="strict"
    )
    return answer


@router.post("/logout")
async def logout() -> Response:
    answer = RedirectResponse("/console/login", status_code=303)
    answer.delete_cookie(COOKIE, path="/console", secure=True, httponly=True, samesite="strict")
    return answer


@router.get("/")
async def start(console: ConsoleDep, who: ViewerDep) -> Response:
    return RedirectResponse("/console/network", status_code=303)


def install(app: FastAPI) -> None:
    """Add the console to a gateway app."""
    app.mount("/console/static", StaticFiles(directory=str(render.STATIC)), name="console-static")
    for r in (router, network.router, claims.router, patients.router, supply.router):
        app.include_router(r)
