"""Who is asking: bearer tokens (JWT) from our own token endpoint or an OpenID Connect
provider, a session cookie holding the same token for the browser, capability links.

Our own tokens are HS256-signed with a secret the index keeps (``storage.access``), name
the user, role and hospital, and last a shift (``PACS_TOKEN_HOURS``); an OIDC provider's
are checked against the keys its discovery document points to (JWKS), with role and
hospital read from configurable claims. The issuer (``iss``) decides which check applies;
any other issuer, a bad signature, an expired token or a wrong audience is refused with 401
and ``WWW-Authenticate: Bearer`` (RFC 6750). A built-in user who is disabled loses access
within seconds, not when their token expires; a revoked link at its next request.

Tokens are never logged: a refusal logs the reason, not the credential.
"""

import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Generic, TypeVar

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jwt.types import Options

from storage import Archive
from storage.access import LINK_PREFIX, Actor, link_in_force, resolve_link, signing_secret
from storage.scope import EVERYTHING, NOTHING, Scope
from storage.users import ROLES, Account, account
from viewer_api.config import ApiSettings
from viewer_api.errors import ApiError
from viewer_api.limits import RateLimits
from viewer_api.urls import client_address

log = logging.getLogger(__name__)
T = TypeVar("T")

ISSUER = "dalat-pacs"
AUDIENCE = "dalat-pacs"
COOKIE = "pacs_session"
LINK_ROLE = "link"
"""The role of whoever holds a capability link: read-only, its studies only."""
_ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
_LEEWAY = 30  # seconds of clock difference tolerated between us and an OIDC provider


class Unauthorized(ApiError):
    """No credential, or one that is not valid (401, with a WWW-Authenticate challenge)."""

    status = 401


class Forbidden(ApiError):
    """A valid credential whose role may not use this resource at all (403). Never used
    for one study: someone else's study is not found (404)."""

    status = 403


@dataclass(frozen=True, slots=True)
class Principal:
    """The person (or link holder) a request is for."""

    name: str
    role: str
    hospital: str | None
    scope: Scope
    """The studies they may see."""
    via: str
    """password, oidc or link."""
    expires_at: datetime


def scope_of(role: str, name: str, hospital: str | None, link: int | None = None) -> Scope:
    """What a role sees: an administrator everything; an auditor the audit trail and no
    images; a link its studies; the others their hospital's studies and what is shared
    with them or their hospital, or assigned to them."""
    if role == "admin":
        return EVERYTHING
    if role == LINK_ROLE:
        return Scope(link=link)
    if role == "auditor":
        return NOTHING
    return Scope(hospital=hospital, user=name)


class TokenIssuer:
    """Our own access tokens: HS256 with the archive's secret."""

    def __init__(self, secret: bytes, *, hours: float) -> None:
        self._secret = secret
        self.lifetime = timedelta(hours=hours)

    def issue(
        self,
        name: str,
        role: str,
        hospital: str | None,
        *,
        link: int | None = None,
        until: datetime | None = None,
        via: str | None = None,
    ) -> tuple[str, datetime]:
        """A token for `name` and when it expires (`until` at the latest)."""
        now = datetime.now(UTC)
        expires = now + self.lifetime
        if until is not None:
            expires = min(expires, until)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": name,
            "role": role,
            "iat": now.timestamp(),  # to the microsecond: signing out voids what came before
            "exp": int(expires.timestamp()),
            "jti": uuid.uuid4().hex,
        }
        if hospital is not None:
            claims["hospital"] = hospital
        if link is not None:
            claims["link"] = link
        if via is not None:
            claims["via"] = via
        return jwt.encode(claims, self._secret, algorithm="HS256"), expires

    def seal(self, purpose: str, values: dict[str, str], *, seconds: int) -> str:
        """`values`, signed and expiring, for a round trip through the browser; never
        usable as an access token (its audience is `purpose`)."""
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": purpose, "iat": now, "exp": now + seconds, **values}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def unseal(self, purpose: str, sealed: str) -> dict[str, Any]:
        """What `seal` sealed for `purpose`; raises jwt.InvalidTokenError."""
        return jwt.decode(
            sealed,
            self._secret,
            algorithms=["HS256"],
            audience=purpose,
            issuer=ISSUER,
            options={"require": ["exp", "iss", "aud"]},
        )

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token of ours; raises jwt.InvalidTokenError."""
        return jwt.decode(
            token,
            self._secret,
            algorithms=["HS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )


class OidcProvider:
    """An external OpenID Connect provider (Keycloak or any other): its keys come from the
    JWKS its discovery document names, fetched on first use and refreshed when a token
    names a key we do not have yet (at most every `refresh_cooldown` seconds, so tokens
    naming made-up keys cannot make us flood the provider)."""

    refresh_cooldown = 30.0

    def __init__(self, settings: ApiSettings) -> None:
        assert settings.oidc_issuer is not None
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.audience = settings.oidc_audience or settings.oidc_client_id
        self.role_claim = settings.oidc_role_claim
        self.hospital_claim = settings.oidc_hospital_claim
        self.name_claim = settings.oidc_name_claim
        self._jwks: jwt.PyJWKClient | None = None
        self._discovery: dict[str, Any] | None = None
        self._algorithms: list[str] = _ASYMMETRIC

    def discovery(self) -> dict[str, Any]:
        """The provider's discovery document (fetched once)."""
        if self._discovery is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            try:
                response = httpx.get(url, timeout=10)
                response.raise_for_status()
                found = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise Unauthorized(f"the sign-in provider cannot be reached ({exc})") from None
            if not isinstance(found, dict) or str(found.get("issuer", "")).rstrip("/") != (
                self.issuer
            ):
                raise Unauthorized("the sign-in provider's discovery names another issuer")
            self._discovery = found
        return self._discovery

    def _keys(self) -> jwt.PyJWKClient:
        if self._jwks is None:
            discovery = self.discovery()
            offered = discovery.get("id_token_signing_alg_values_supported") or _ASYMMETRIC
            self._algorithms = [a for a in offered if a in _ASYMMETRIC] or _ASYMMETRIC
            self._jwks = jwt.PyJWKClient(
                str(discovery["jwks_uri"]),
                lifespan=3600,
                timeout=10,
                cooldown_duration=self.refresh_cooldown,
            )
        return self._jwks

    def verify(self, token: str) -> dict[str, Any]:
        try:
            key = self._keys().get_signing_key_from_jwt(token)
        except jwt.PyJWKClientError as exc:
            raise jwt.InvalidTokenError(f"no key of the provider signed it ({exc})") from None
        options: Options = {"require": ["exp", "iss", "sub", "aud"]}
        return jwt.decode(
            token,
            key.key,
            algorithms=self._algorithms,
            audience=self.audience,
            issuer=self.issuer,
            leeway=_LEEWAY,
            options=options,
        )

    def identity(self, claims: Mapping[str, Any]) -> tuple[str, str, str | None]:
        """Name, role and hospital from the provider's claims; raises Forbidden when the
        token carries none of our roles."""
        name = str(_claim(claims, self.name_claim) or claims["sub"])
        found = _claim(claims, self.role_claim)
        offered = [found] if isinstance(found, str) else list(found or [])
        roles = [r for r in ROLES if r in offered]  # the most trusted role first
        if not roles:
            raise Forbidden(f"the sign-in provider gives {name} none of the roles {ROLES}")
        hospital = _claim(claims, self.hospital_claim)
        if isinstance(hospital, list):
            hospital = hospital[0] if hospital else None
        if not hospital and roles[0] in ("technologist", "referring"):
            raise Forbidden(f"the sign-in provider gives {name} a {roles[0]} role but no hospital")
        return name, roles[0], str(hospital) if hospital else None


def _voided(user: Account, claims: Mapping[str, Any]) -> bool:
    """Whether the token was issued before the user's tokens were voided."""
    after = user.tokens_after
    return after is not None and float(claims.get("iat", 0)) <= after.timestamp()


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by dotted path (Keycloak's realm roles: ``realm_access.roles``)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


class Authenticator:
    """Turns a request's credential into a :class:`Principal`, or refuses it (audited)."""

    def __init__(self, archive: Archive, settings: ApiSettings) -> None:
        self.archive = archive
        self.limits = RateLimits(settings)
        secret = (
            settings.token_secret.get_secret_value().encode()
            if settings.token_secret is not None
            else signing_secret(archive, "access-token")
        )
        self.issuer = TokenIssuer(secret, hours=settings.token_hours)
        self.oidc = OidcProvider(settings) if settings.oidc_issuer else None
        self._accounts = _Recent[Account | None](lambda name: account(archive, name), ttl=2.0)
        self._verified: dict[str, tuple[str, dict[str, Any]]] = {}
        """Tokens whose signature checked out → (``ours`` or ``oidc``, their claims): a
        viewer sends the same token hundreds of times a minute, and checking a signature
        costs more than the rest of the request's authentication."""

    def principal(self, request: Request) -> Principal:
        token = credential(request)
        address = client_address(request)
        if token is None:
            self.limits.request(f"address {address}")  # before signing in: by address
            raise Unauthorized("sign in first: this resource needs a bearer token")
        try:
            found = self._remembered(token) or self._principal(token)
        except (jwt.InvalidTokenError, Unauthorized) as exc:
            reason = str(exc) or type(exc).__name__
            self.limits.refused(address)  # over the limit: 429, and no audit row per guess
            self.archive.audit(
                action="sign-in",
                outcome="failure",
                actor=None,
                source_address=address,
                detail=f"credential refused: {reason}"[:500],
            )
            raise Unauthorized(f"the credential was refused: {reason}") from None
        self.limits.request(found.name)
        return found

    def remembered(self, request: Request) -> Principal | None:
        """The principal of a token seen and checked before whose account (if any) is
        fresh in memory: no I/O, so it may run on the event loop; None: ask `principal`."""
        token = credential(request)
        return self._remembered(token) if token is not None else None

    def _remembered(self, token: str) -> Principal | None:
        seen = self._verified.get(token)
        if seen is None:
            return None
        kind, claims = seen
        if claims["exp"] <= time.time():
            self._verified.pop(token, None)
            return None
        if kind == "oidc":
            return self._oidc(claims)
        if kind == "session":
            return self._session(claims)
        user = self._accounts.peek(claims["sub"])
        if user is None or not user.active or _voided(user, claims):
            return None  # not in memory, disabled or signed out: the long way says which
        return self._of_account(user, claims)

    def vouched(self, token: str) -> Principal:
        """The user an access token of the OIDC provider names (signing in the browser).

        Raises:
            Unauthorized: no provider, or the token is not valid.
            Forbidden: it carries none of our roles.
        """
        if self.oidc is None:
            raise Unauthorized("no OIDC provider is configured")
        try:
            return self._oidc(self.oidc.verify(token))
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"the provider's token was refused: {exc}") from None

    def _remember(self, token: str, kind: str, claims: dict[str, Any]) -> None:
        if len(self._verified) >= 10_000:
            self._verified.clear()
        self._verified[token] = (kind, claims)

    def signed_in(self, request: Request) -> bool:
        """Whether the request carries a valid credential (the viewer page asks)."""
        try:
            self.principal(request)
        except (Unauthorized, Forbidden):
            return False
        return True

    def _principal(self, token: str) -> Principal:
        if token.startswith(LINK_PREFIX):
            link = resolve_link(self.archive, token)
            if link is None:
                raise Unauthorized("the link does not exist, has expired or was revoked")
            return Principal(
                f"link:{link.id}", LINK_ROLE, None, Scope(link=link.id), "link", link.expires_at
            )
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        if issuer == ISSUER:
            return self._ours(token, self.issuer.verify(token))
        if self.oidc is not None and str(issuer).rstrip("/") == self.oidc.issuer:
            claims = self.oidc.verify(token)
            principal = self._oidc(claims)
            if self._accounts.get(principal.name) is not None:  # shares name users
                raise Unauthorized(
                    f"{principal.name} is a built-in user's name, not the provider's"
                )
            self._remember(token, "oidc", claims)
            return principal
        raise Unauthorized("the token comes from an issuer this archive does not trust")

    def _oidc(self, claims: Mapping[str, Any]) -> Principal:
        assert self.oidc is not None
        name, role, hospital = self.oidc.identity(claims)
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        return Principal(name, role, hospital, scope_of(role, name, hospital), "oidc", expires)

    def _ours(self, token: str, claims: dict[str, Any]) -> Principal:
        if claims.get("via") == "oidc" and self.oidc is not None:  # the provider vouched
            self._remember(token, "session", claims)
            return self._session(claims)
        if claims.get("role") == LINK_ROLE:  # checked against revocation every time
            link = claims.get("link")
            if not isinstance(link, int) or not link_in_force(self.archive, link):
                raise Unauthorized("the link has expired or was revoked")
            expires_at = datetime.fromtimestamp(claims["exp"], UTC)
            return Principal(claims["sub"], LINK_ROLE, None, Scope(link=link), "link", expires_at)
        user = self._accounts.get(claims["sub"])
        if user is None or not user.active:
            raise Unauthorized(f"{claims['sub']} may no longer sign in")
        if _voided(user, claims):
            raise Unauthorized("the token was ended by signing out or a new password")
        self._remember(token, "ours", claims)
        return self._of_account(user, claims)

    @staticmethod
    def _session(claims: Mapping[str, Any]) -> Principal:
        """A session opened by signing in at the OIDC provider: the role and hospital it
        gave then, for the session's length (the provider disables its users)."""
        name, role, hospital = claims["sub"], claims.get("role"), claims.get("hospital")
        if role not in ROLES:
            raise Unauthorized("the session names no role of ours")
        expires_at = datetime.fromtimestamp(claims["exp"], UTC)
        return Principal(name, role, hospital, scope_of(role, name, hospital), "oidc", expires_at)

    @staticmethod
    def _of_account(user: Account, claims: Mapping[str, Any]) -> Principal:
        """The role and hospital as they are now, not as when the token was made."""
        expires_at = datetime.fromtimestamp(claims["exp"], UTC)
        scope = scope_of(user.role, user.name, user.hospital)
        return Principal(user.name, user.role, user.hospital, scope, "password", expires_at)


def credential(request: Request) -> str | None:
    """The bearer token of the Authorization header, else the session cookie."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    return request.cookies.get(COOKIE) or None


class _Recent(Generic[T]):
    """A few seconds' memory of a lookup, so a viewer's burst of frame requests costs one
    query, not hundreds."""

    def __init__(self, lookup: Callable[[str], T], *, ttl: float) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._seen: dict[str, tuple[float, T]] = {}

    def peek(self, key: str) -> T | None:
        """The value if it is remembered and fresh; None otherwise (no lookup)."""
        seen = self._seen.get(key)
        if seen is not None and time.monotonic() - seen[0] < self._ttl:
            return seen[1]
        return None

    def get(self, key: str) -> T:
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self._ttl:
            return seen[1]
        value = self._lookup(key)
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[key] = (now, value)
        return value


READERS = ("admin", "radiologist", "technologist", "referring", LINK_ROLE)
"""Who may look at images (each within their scope)."""
SENDERS = ("admin", "radiologist", "technologist")
"""Who may store images and share them."""
STAFF = ("admin", "radiologist", "technologist", "referring")
RADIOLOGISTS = ("admin", "radiologist")
"""Who claims studies to read them and writes and signs reports."""
AUDITORS = ("admin", "auditor")
ADMINS = ("admin",)

_bearer = HTTPBearer(
    auto_error=False,
    description="An access token from POST /auth/token or the OpenID Connect provider, "
    "or a capability link's token; the browser sends the same in the session cookie.",
)


def require(
    auth: Authenticator, roles: tuple[str, ...]
) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that lets in `roles` only: 401 without a valid credential, 403 for a
    role that may not use the resource at all. The principal is on ``request.state``."""

    async def principal(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        found: Principal | None = getattr(request.state, "principal", None)
        if found is None:
            found = auth.remembered(request) if auth.limits.local else None
            if found is not None:  # no I/O left: stay on the event loop
                auth.limits.request(found.name)
            else:
                found = await run_in_threadpool(auth.principal, request)
            request.state.principal = found
        if found.role not in roles:
            raise Forbidden(f"a {found.role} may not use this resource")
        return found

    return principal


def principal_of(request: Request) -> Principal:
    """The principal a router's dependency let in."""
    found: Principal = request.state.principal
    return found


def actor_of(request: Request) -> Actor:
    """The principal a router's dependency let in, as storage's access rules know them."""
    principal = principal_of(request)
    return Actor(
        principal.name,
        principal.role,
        principal.hospital,
        principal.scope,
        client_address(request),
    )


def audit_request(
    archive: Archive,
    request: Request,
    action: str,
    detail: str,
    *,
    study: str | None = None,
    outcome: str = "success",
) -> None:
    """An audit row for what the principal a router's dependency let in did, from where."""
    principal = principal_of(request)
    archive.audit(
        action=action,
        outcome=outcome,
        actor=principal.name,
        role=principal.role,
        hospital=principal.hospital,
        source_address=client_address(request),
        study_instance_uid=study,
        detail=detail[:500],
    )
