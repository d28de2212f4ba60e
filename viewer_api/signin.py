"""Signing in: the OAuth 2 token endpoint (password grant) for programs, a sign-in page and
session cookie for the browser (OHIF then needs no change: its requests carry the cookie),
signing out, and capability links opened in the browser.

Each sign-in, failed or not, is audited with the name tried and the source address; a
password is never logged. The session cookie is HttpOnly (no script reads it),
SameSite=Strict (no other site's page sends it) and Secure when served over HTTPS.
"""

import html
import logging
import time
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from storage import Archive
from storage.access import link_studies, resolve_link
from storage.users import check_password, end_sessions
from viewer_api.auth import (
    COOKIE,
    LINK_ROLE,
    STAFF,
    Authenticator,
    Forbidden,
    Principal,
    Unauthorized,
    require,
)
from viewer_api.errors import NotFoundError
from viewer_api.limits import TooManyRequests
from viewer_api.urls import client_address

log = logging.getLogger(__name__)

_OTHER = {"en": ("vi", "Tiếng Việt"), "vi": ("en", "English")}
_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Sign in",
        "name": "User name",
        "password": "Password",
        "submit": "Sign in",
        "failed": "The name or the password is wrong, or the account is disabled.",
        "wait": "Too many attempts: try again in {seconds} seconds.",
        "sso": "Sign in with the hospital's account (single sign-on)",
    },
    "vi": {
        "title": "Đăng nhập",
        "name": "Tên người dùng",
        "password": "Mật khẩu",
        "submit": "Đăng nhập",
        "failed": "Tên hoặc mật khẩu không đúng, hoặc tài khoản đã bị khóa.",
        "wait": "Quá nhiều lần thử: vui lòng thử lại sau {seconds} giây.",
        "sso": "Đăng nhập bằng tài khoản bệnh viện (đăng nhập một lần)",
    },
}


def signin_router(archive: Archive, auth: Authenticator, *, single_sign_on: bool) -> APIRouter:
    """`single_sign_on`: the page also offers signing in at the OIDC provider."""
    router = APIRouter(tags=["sign-in"])

    def sign_in(request: Request, name: str, password: str) -> tuple[str, datetime] | None:
        auth.limits.sign_in(client_address(request), name)
        found = check_password(archive, name, password)
        archive.audit(
            action="sign-in",
            outcome="success" if found else "failure",
            actor=name[:64],
            role=found.role if found else None,
            hospital=found.hospital if found else None,
            source_address=client_address(request),
            detail="password" if found else "wrong name or password, or account disabled",
        )
        if found is None:
            log.warning("Failed sign-in as %r from %s", name[:64], client_address(request))
            return None
        return auth.issuer.issue(found.name, found.role, found.hospital)

    @router.post("/auth/token", summary="An access token for a user name and password")
    async def token(
        request: Request,
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=1024)],
        grant_type: Annotated[str, Form(pattern="^password$")] = "password",  # noqa: ARG001 (checked by its pattern)
    ) -> JSONResponse:
        """OAuth 2 resource owner password grant (RFC 6749 4.3); refused with
        ``invalid_grant`` (400) as 5.2 names."""
        issued = await run_in_threadpool(sign_in, request, username, password)
        if issued is None:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "wrong name or password"},
                status_code=400,
                headers={"Cache-Control": "no-store"},
            )
        value, expires = issued
        return JSONResponse(
            {"access_token": value, "token_type": "Bearer", "expires_in": _seconds(expires)},
            headers={"Cache-Control": "no-store"},
        )

    @router.get("/signin", include_in_schema=False)
    def page(
        request: Request, failed: bool = False, wait: int = 0, next: str = "/"
    ) -> HTMLResponse:
        return HTMLResponse(
            _page(_language(request), failed, wait, local_path(next), single_sign_on)
        )

    @router.post("/auth/session", summary="Sign in the browser (sets the session cookie)")
    async def session(
        request: Request,
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=1024)],
        next: Annotated[str, Form(max_length=2048)] = "/",
    ) -> Response:
        target = local_path(next)
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            # Another site's page posting a form here would sign the browser in as its
            # author (login CSRF); browsers say where a request comes from.
            raise Forbidden("sign in from this site's own page")
        try:
            issued = await run_in_threadpool(sign_in, request, username, password)
        except TooManyRequests as exc:
            where = f"/signin?wait={exc.retry_after}&next={_quoted(target)}"
            return RedirectResponse(where, status_code=303)
        if issued is None:
            return RedirectResponse(f"/signin?failed=1&next={_quoted(target)}", status_code=303)
        return with_session(request, RedirectResponse(target, status_code=303), *issued)

    @router.post("/auth/signout", summary="Sign the browser out (clears the session cookie)")
    def signout(request: Request) -> Response:
        """Ends the session: for a built-in user, every token they hold stops working."""
        try:
            principal: Principal | None = auth.principal(request)
        except Unauthorized:
            principal = None
        if principal is not None and principal.via == "password":
            end_sessions(archive, principal.name, by=principal.name, audit=False)
        archive.audit(
            action="sign-out",
            outcome="success",
            actor=principal.name if principal else None,
            role=principal.role if principal else None,
            hospital=principal.hospital if principal else None,
            source_address=client_address(request),
            detail="every session of the user ended" if principal else None,
        )
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @router.get("/auth/me", summary="Who the credential belongs to")
    def me(
        principal: Annotated[Principal, Depends(require(auth, (*STAFF, "auditor", LINK_ROLE)))],
    ) -> dict[str, Any]:
        return {
            "name": principal.name,
            "role": principal.role,
            "hospital": principal.hospital,
            "via": principal.via,
            "expires_at": principal.expires_at.isoformat(),
        }

    @router.get("/share/{token}", include_in_schema=False)
    def open_link(request: Request, token: str) -> Response:
        """A capability link opened in the browser: the viewer, on the link's studies."""
        found = resolve_link(archive, token[:200])
        if found is None:
            auth.limits.refused(client_address(request))  # guessing links is guessing too
            archive.audit(
                action="sign-in",
                outcome="failure",
                actor=None,
                source_address=client_address(request),
                detail="a link that does not exist, has expired or was revoked",
            )
            raise NotFoundError("this link does not exist, has expired or was revoked")
        studies = link_studies(archive, found.id)
        archive.audit(
            action="sign-in",
            outcome="success",
            actor=f"link:{found.id}",
            role=LINK_ROLE,
            source_address=client_address(request),
            detail=f"link {found.id} ({found.label}) opened",
        )
        value, expires = auth.issuer.issue(
            f"link:{found.id}", LINK_ROLE, None, link=found.id, until=found.expires_at
        )
        target = "/viewer?StudyInstanceUIDs=" + ",".join(studies)
        return with_session(request, RedirectResponse(target, status_code=303), value, expires)

    return router


def with_session(request: Request, response: Response, value: str, expires: datetime) -> Response:
    response.set_cookie(
        COOKIE,
        value,
        max_age=_seconds(expires),
        path="/",
        secure=request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https",
        httponly=True,
        samesite="strict",
    )
    return response


def _seconds(expires: datetime) -> int:
    return max(0, int(expires.timestamp() - time.time()))


def local_path(target: str) -> str:
    """Only a path of this site: never an open redirect to another."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _quoted(target: str) -> str:
    return quote(target, safe="")


def _language(request: Request) -> str:
    asked = request.query_params.get("lang") or request.headers.get("accept-language", "")
    return "vi" if asked.lower().startswith("vi") else "en"


def _page(language: str, failed: bool, wait: int, target: str, single_sign_on: bool) -> str:
    text = _TEXT[language]
    other, other_name = _OTHER[language]
    error = ""
    if wait > 0:
        error = f'<p class="error" role="alert">{text["wait"].format(seconds=int(wait))}</p>'
    elif failed:
        error = f'<p class="error" role="alert">{text["failed"]}</p>'
    sso = ""
    if single_sign_on:
        where = f"/auth/oidc/login?next={_quoted(target)}"
        sso = f'<p><a class="sso" href="{html.escape(where)}">{text["sso"]}</a></p>'
    return f"""<!doctype html>
<html lang="{language}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Dalat PACS: {text["title"]}</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #0b1a2b; color: #e8eef5;
  display: grid; place-items: center; min-height: 100vh; margin: 0; }}
form {{ background: #13283f; padding: 2rem; border-radius: 8px; width: 20rem; }}
label {{ display: block; margin-top: 1rem; }}
input {{ width: 100%; padding: .5rem; margin-top: .25rem; box-sizing: border-box; }}
button {{ margin-top: 1.5rem; width: 100%; padding: .6rem; background: #3b82f6;
  color: white; border: 0; border-radius: 4px; font-size: 1rem; }}
.error {{ color: #fca5a5; }} a {{ color: #93c5fd; }}
</style></head>
<body><form method="post" action="/auth/session">
<h1>Dalat PACS</h1><h2>{text["title"]}</h2>{error}
<input type="hidden" name="next" value="{html.escape(target)}">
<label>{text["name"]}<input name="username" autocomplete="username" required autofocus></label>
<label>{text["password"]}<input name="password" type="password"
  autocomplete="current-password" required></label>
<button type="submit">{text["submit"]}</button>{sso}
<p><a href="/signin?lang={other}&amp;next={_quoted(target)}">{other_name}</a></p>
</form></body></html>"""
