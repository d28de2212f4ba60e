"""Headers that make a browser treat the archive's pages and answers safely.

Every answer says its type is what it claims (``nosniff``), leaks no address in the
Referer, and may be framed only by the archive's own pages. API answers (DICOMweb, JSON)
carry a Content Security Policy that lets nothing run; the viewer's pages one that lets
only the archive's own scripts, styles, workers and WebAssembly codecs run and talk only
to the archive. The API documentation pages (``/docs``, ``/redoc``) load FastAPI's assets
from its CDN and keep the browser's defaults.
"""

import base64
import hashlib
import re
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
API_POLICY = b"default-src 'none'; frame-ancestors 'self'"
VIEWER_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-eval' 'wasm-unsafe-eval'{hashes}; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
    "worker-src 'self' blob:; connect-src 'self' data: blob:; object-src 'none'; "
    "base-uri 'self'; frame-ancestors 'self'"
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def error_headers() -> dict[str, str]:
    """The headers of an answer sent outside the middleware (a fault of ours)."""
    headers = {name.decode(): value.decode() for name, value in COMMON}
    headers["content-security-policy"] = API_POLICY.decode()
    return headers


def viewer_policy(index_html: Path | None) -> bytes:
    """The viewer's policy, letting the inline scripts of its index.html (and no other)
    run, by their SHA-256."""
    scripts = _INLINE_SCRIPT.findall(index_html.read_text()) if index_html else []
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in scripts
    )
    return VIEWER_POLICY.format(hashes=hashes).encode()


API_PREFIXES = (
    "/dicom-web",
    "/wado",
    "/api/",
    "/auth/",
    "/share/",
    "/health",
    "/metrics",
    "/openapi.json",
)
DOCS_PREFIXES = ("/docs", "/redoc")


class SecurityHeaders:
    """ASGI middleware adding the headers above to every HTTP answer."""

    def __init__(self, app: ASGIApp, *, viewer: bytes) -> None:
        self.app = app
        self.viewer = viewer

    def policy_for(self, path: str) -> bytes | None:
        """The Content Security Policy for an answer to `path`; None: the browser's
        default."""
        if path.startswith(DOCS_PREFIXES):
            return None
        if path.startswith(API_PREFIXES):
            return API_POLICY
        return self.viewer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.policy_for(scope["path"])
        https = scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += COMMON
                if https:  # browsers keep to HTTPS for this host from now on
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                if policy is not None:
                    headers.append((b"content-security-policy", policy))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
