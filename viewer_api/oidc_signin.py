"""Signing the browser in at an OpenID Connect provider: the authorization code flow with
PKCE (RFC 7636), so a hospital's single sign-on opens the served OHIF too.

``/auth/oidc/login`` sends the browser to the provider with a random state and a code
challenge, both kept in a short-lived signed cookie; the provider sends it back to
``/auth/oidc/callback`` with a code, which the archive exchanges (with the verifier) for
the provider's access token. That token is checked as any bearer token is (signature by
the JWKS, issuer, audience, expiry, a role of ours); then the browser gets the archive's
own session cookie, naming the user, role and hospital the provider gave, for
``PACS_TOKEN_HOURS`` at most. Both outcomes are audited.
"""

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from storage import Archive
from viewer_api.auth import Authenticator, Forbidden, Unauthorized
from viewer_api.config import ApiSettings
from viewer_api.errors import BadRequest
from viewer_api.signin import local_path, with_session
from viewer_api.urls import base_url, client_address

FLOW_COOKIE = "pacs_oidc_flow"
FLOW_SECONDS = 600


def oidc_signin_router(archive: Archive, auth: Authenticator, settings: ApiSettings) -> APIRouter:
    router = APIRouter(tags=["sign-in"])
    provider = auth.oidc
    assert provider is not None
    client_id = settings.oidc_client_id
    secret = settings.oidc_client_secret

    def callback_url(request: Request) -> str:
        return f"{base_url(request, settings)}/auth/oidc/callback"

    @router.get("/auth/oidc/login", summary="Sign the browser in at the OIDC provider")
    async def login(request: Request, next: str = "/") -> Response:
        discovery = await run_in_threadpool(provider.discovery)
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(24)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": callback_url(request),
                "scope": "openid profile",
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        response = RedirectResponse(f"{discovery['authorization_endpoint']}?{query}", 303)
        flow = auth.issuer.seal(
            FLOW_COOKIE,
            {"state": state, "verifier": verifier, "next": local_path(next)},
            seconds=FLOW_SECONDS,
        )
        response.set_cookie(
            FLOW_COOKIE,
            flow,
            max_age=FLOW_SECONDS,
            path="/auth/oidc/",
            httponly=True,
            secure=request.url.scheme == "https",
            samesite="lax",  # it must come back with the provider's top-level redirect
        )
        return response

    @router.get("/auth/oidc/callback", summary="Where the OIDC provider returns the browser")
    async def callback(request: Request, code: str = "", state: str = "") -> Response:
        try:
            flow = auth.issuer.unseal(FLOW_COOKIE, request.cookies.get(FLOW_COOKIE, ""))
            expected, verifier = str(flow["state"]), str(flow["verifier"])
            target = local_path(str(flow["next"]))
        except (jwt.InvalidTokenError, KeyError):
            raise BadRequest("this sign-in was not started here, or took too long") from None
        if not code or not secrets.compare_digest(state.encode(), expected.encode()):
            raise BadRequest("the provider's answer does not match this sign-in")
        try:
            token = await run_in_threadpool(exchange, request, code, verifier)
            principal = await run_in_threadpool(auth.vouched, token)
        except (Unauthorized, Forbidden) as exc:
            archive.audit(
                action="sign-in",
                outcome="failure",
                actor=None,
                source_address=client_address(request),
                detail=f"OIDC sign-in refused: {exc.reason}"[:500],
            )
            raise
        archive.audit(
            action="sign-in",
            outcome="success",
            actor=principal.name,
            role=principal.role,
            hospital=principal.hospital,
            source_address=client_address(request),
            detail="OIDC provider",
        )
        session = auth.issuer.issue(principal.name, principal.role, principal.hospital, via="oidc")
        response = with_session(request, RedirectResponse(target, 303), *session)
        response.delete_cookie(FLOW_COOKIE, path="/auth/oidc/")
        return response

    def exchange(request: Request, code: str, verifier: str) -> str:
        """The provider's access token for `code` (RFC 6749 4.1.3, with the PKCE verifier)."""
        form: dict[str, Any] = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": callback_url(request),
            "client_id": client_id,
            "code_verifier": verifier,
        }
        if secret is not None:
            form["client_secret"] = secret.get_secret_value()
        try:
            answer = httpx.post(provider.discovery()["token_endpoint"], data=form, timeout=15)
            answer.raise_for_status()
            return str(answer.json()["access_token"])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise Unauthorized(f"the provider did not give a token for the code ({exc})") from None

    return router
