"""Tokens of an external OpenID Connect provider (as Keycloak issues them): a real HTTP
provider on 127.0.0.1 serves its discovery document and JWKS; the archive takes the role
and hospital from the configured claims, follows a key rotation, and refuses a wrong
audience, an expired token, a key not in the JWKS and a token without a role of ours."""

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from storage import Archive, Source, stage_file
from tests import factories
from tests.auth import ensure_user
from tests.conftest import audit_row, free_port
from tests.viewer_api.conftest import Web, serve
from viewer_api.auth import OidcProvider
from viewer_api.config import ApiSettings


class Provider:
    """A minimal OIDC provider: discovery, JWKS, and tokens signed with its keys."""

    def __init__(self) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/realms/lamdong"
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.codes: dict[str, dict[str, str]] = {}
        self.rotate()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == "/realms/lamdong/.well-known/openid-configuration":
                    base = f"{provider.issuer}/protocol/openid-connect"
                    body: Any = {
                        "issuer": provider.issuer,
                        "jwks_uri": f"{base}/certs",
                        "authorization_endpoint": f"{base}/auth",
                        "token_endpoint": f"{base}/token",
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }
                elif path == "/realms/lamdong/protocol/openid-connect/auth":
                    # The user signs in at once (they have a session at the provider).
                    asked = dict(parse_qsl(query))
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = asked
                    back = f"{asked['redirect_uri']}?code={code}&state={asked['state']}"
                    self.send_response(302)
                    self.send_header("Location", back)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                elif self.path == "/realms/lamdong/protocol/openid-connect/certs":
                    body = {"keys": [provider.jwk(kid) for kid in provider.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                form = dict(
                    parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode())
                )
                asked = provider.codes.pop(form.get("code", ""), None)
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                if (
                    asked is None
                    or asked["client_id"] != form.get("client_id")
                    or asked["redirect_uri"] != form.get("redirect_uri")
                    or asked["code_challenge"] != challenge
                ):
                    self.send_error(400)
                    return
                data = json.dumps({"access_token": provider.token(), "token_type": "Bearer"})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rotate(self) -> str:
        kid = f"key-{len(self.keys) + 1}"
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def jwk(self, kid: str) -> dict[str, Any]:
        public = RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
        return public | {"kid": kid, "use": "sig", "alg": "RS256"}

    def token(self, kid: str | None = None, **claims: Any) -> str:
        kid = kid or next(iter(self.keys))
        now = int(time.time())
        base = {
            "iss": self.issuer,
            "aud": "dalat-pacs",
            "sub": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "preferred_username": "bs.lan",
            "realm_access": {"roles": ["offline_access", "radiologist"]},
            "hospital": "BV-DALAT",
            "iat": now,
            "exp": now + 300,
        }
        return jwt.encode(base | claims, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider() -> Iterator[Provider]:
    running = Provider()
    yield running
    running.close()


@pytest.fixture
def web(archive: Archive, provider: Provider, tmp_path: Path) -> Iterator[Web]:
    for hospital in ("BV-DALAT", "BV-BAOLOC"):
        path = factories.write(factories.image(patient_id=hospital), tmp_path / hospital)
        source = Source("dimse", aet="CT", hospital=hospital)
        archive.store(stage_file(path, archive.staging_dir), source=source)
    with serve(
        archive,
        oidc_issuer=provider.issuer,
        oidc_audience="dalat-pacs",
        oidc_role_claim="realm_access.roles",
        oidc_client_id="dalat-pacs",
    ) as running:
        yield running


def _studies(web: Web, token: str) -> httpx.Response:
    return httpx.get(f"{web.url}/dicom-web/studies", headers={"Authorization": f"Bearer {token}"})


def test_a_providers_token_signs_a_user_in_with_role_and_hospital(
    web: Web, provider: Provider
) -> None:
    answer = _studies(web, provider.token())
    assert answer.status_code == 200, answer.text
    assert [s["00100020"]["Value"][0] for s in answer.json()] == ["BV-DALAT"]
    row = audit_row(web.archive, action="query", actor="bs.lan")
    assert (row.role, row.hospital) == ("radiologist", "BV-DALAT")
    me = httpx.get(
        f"{web.url}/auth/me", headers={"Authorization": f"Bearer {provider.token()}"}
    ).json()
    assert me == me | {"name": "bs.lan", "role": "radiologist", "via": "oidc"}


def test_a_rotated_key_is_fetched_when_a_token_names_it(
    web: Web, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OidcProvider, "refresh_cooldown", 0.5)  # 30 s in service
    assert _studies(web, provider.token()).status_code == 200  # the JWKS is cached now
    new = provider.rotate()
    time.sleep(0.6)
    assert _studies(web, provider.token(kid=new)).status_code == 200


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"aud": "another-client"}, 401),
        ({"exp": int(time.time()) - 300}, 401),
        ({"realm_access": {"roles": ["offline_access"]}}, 403),
    ],
    ids=["wrong-audience", "expired", "no-role-of-ours"],
)
def test_provider_tokens_are_checked(
    web: Web, provider: Provider, claims: dict[str, Any], status: int
) -> None:
    assert _studies(web, provider.token(**claims)).status_code == status


def test_a_key_outside_the_jwks_is_refused(web: Web, provider: Provider) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": provider.issuer, "aud": "dalat-pacs", "sub": "x", "exp": now + 60}
    claims |= {"realm_access": {"roles": ["admin"]}}
    for kid in ("key-1", "unknown"):  # a known key id, and one the JWKS never had
        forged = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": kid})
        assert _studies(web, forged).status_code == 401
    # Nor can our own secret stand in for the provider's key (algorithm confusion).
    public_pem = provider.jwk("key-1")["n"]
    confused = jwt.encode(claims, public_pem, algorithm="HS256", headers={"kid": "key-1"})
    assert _studies(web, confused).status_code == 401


def test_the_browser_signs_in_at_the_provider(web: Web, provider: Provider) -> None:
    """The authorization code flow with PKCE, as a browser follows it: the sign-in page
    offers the provider, the provider sends the browser back with a code, and the archive's
    session cookie then opens the hospital's studies."""
    page = httpx.get(f"{web.url}/signin?next=/viewer")
    assert "/auth/oidc/login" in page.text
    with httpx.Client(base_url=web.url) as browser:
        start = browser.get("/auth/oidc/login", params={"next": "/viewer?x=1"})
        assert start.status_code == 303
        at_provider = httpx.get(start.headers["location"])
        assert at_provider.status_code == 302
        back = browser.get(at_provider.headers["location"])
        assert back.status_code == 303, back.text
        assert back.headers["location"] == "/viewer?x=1"
        found = browser.get("/dicom-web/studies")
        assert found.status_code == 200
        assert [s["00100020"]["Value"][0] for s in found.json()] == ["BV-DALAT"]
        me = browser.get("/auth/me").json()
        assert (me["name"], me["role"], me["via"]) == ("bs.lan", "radiologist", "oidc")
        replayed = browser.get(at_provider.headers["location"])  # the code is spent
        assert replayed.status_code in (400, 401)
    row = audit_row(web.archive, action="sign-in", actor="bs.lan", outcome="success")
    assert row.detail == "OIDC provider"
    forged = httpx.get(f"{web.url}/auth/oidc/callback", params={"code": "x", "state": "y"})
    assert forged.status_code == 400


def test_provider_tokens_that_would_confuse_identities_are_refused(
    web: Web, provider: Provider
) -> None:
    no_hospital = provider.token(
        realm_access={"roles": ["technologist"]}, hospital=None, preferred_username="ktv.x"
    )
    assert _studies(web, no_hospital).status_code == 403
    ensure_user(web.archive, "ktv.builtin", "technologist", "BV-BAOLOC")
    taken = provider.token(preferred_username="ktv.builtin")  # a built-in user's name
    assert _studies(web, taken).status_code == 401


def test_an_issuer_without_an_audience_is_refused() -> None:
    with pytest.raises(ValueError, match="PACS_OIDC_AUDIENCE"):
        ApiSettings(_env_file=None, oidc_issuer="https://sso.example/realms/x")  # type: ignore[call-arg]
