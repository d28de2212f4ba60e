"""Where clients reach the API, for links in answers (RetrieveURL, BulkDataURI, the viewer's
configuration): the configured public URL, else what a reverse proxy says, else the Host
the client used; never the address the server is bound to. And where a client is."""

from starlette.requests import Request

from viewer_api.config import ApiSettings


def client_address(request: Request) -> str | None:
    """The client's address (behind a proxy on this machine, uvicorn has put the address
    the proxy names here)."""
    return request.client.host if request.client else None


def base_url(request: Request, settings: ApiSettings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    headers = request.headers
    scheme = headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = headers.get("x-forwarded-host", headers.get("host", "")).split(",")[0].strip()
    prefix = headers.get("x-forwarded-prefix", "").rstrip("/")
    return f"{scheme}://{host}{prefix}"
