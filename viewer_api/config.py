"""Settings of the HTTP API, read from the environment and ``.env`` (prefix ``PACS_``)."""

from pathlib import Path

from limits import parse
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PACS_", env_file=".env", extra="ignore")

    http_port: int = Field(8000, ge=1, le=65535, description="HTTP listening port.")
    http_host: str = Field(
        "127.0.0.1",
        description="Address the HTTP API binds to. Off loopback it needs HTTPS "
        "(PACS_HTTPS_CERTIFICATE) or a TLS-terminating proxy on this machine.",
    )
    token_hours: float = Field(
        8.0, gt=0, le=24 * 7, description="How long an access token of ours lasts (a shift)."
    )
    token_secret: SecretStr | None = Field(
        None,
        description="Secret our access tokens are signed with (at least 32 characters); "
        "default: one made once and kept in the index, shared by every node.",
        min_length=32,
    )
    rate_limit: str = Field(
        "3000/minute",
        description="Requests one user (or one address, before signing in) may make, as "
        "N/second, N/minute or N/hour; beyond, 429 with Retry-After.",
    )
    sign_in_rate_limit: str = Field(
        "10/minute", description="Sign-in attempts per address and per user name."
    )
    rate_limit_storage: str = Field(
        "memory://",
        description="Where rate limits are counted: this process (memory://) or Redis shared "
        "by every node (redis://host:6379).",
    )

    metrics_token: SecretStr | None = Field(
        None,
        min_length=32,
        description="A bearer token Prometheus may read /metrics with (no patient data); "
        "default: only an administrator's token.",
    )

    @model_validator(mode="after")
    def _an_audience(self) -> "ApiSettings":
        """A provider's token for another application must not open the archive."""
        if self.oidc_issuer and not (self.oidc_audience or self.oidc_client_id):
            raise ValueError(
                "PACS_OIDC_ISSUER needs PACS_OIDC_AUDIENCE (or PACS_OIDC_CLIENT_ID): the "
                "audience the provider's tokens must name"
            )
        return self

    @field_validator("rate_limit", "sign_in_rate_limit")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        parse(value)  # ValueError: not a rate such as 600/minute
        return value

    oidc_issuer: str | None = Field(
        None,
        description="An OpenID Connect provider whose tokens are accepted besides ours "
        "(https://sso.example.vn/realms/pacs); its discovery document and JWKS are used.",
    )
    oidc_audience: str | None = Field(
        None, description="The audience (aud) its tokens must name; default: the client ID."
    )
    oidc_role_claim: str = Field(
        "roles",
        description="Dotted path of the claim that holds a user's roles (Keycloak realm roles: "
        "realm_access.roles); roles named as ours: admin, radiologist, technologist, "
        "referring, auditor.",
    )
    oidc_hospital_claim: str = Field(
        "hospital", description="Dotted path of the claim that holds a user's hospital code."
    )
    oidc_client_id: str | None = Field(
        None,
        description="The archive's client ID at the OIDC provider: with it, the sign-in page "
        "offers signing in at the provider (authorization code flow with PKCE).",
    )
    oidc_client_secret: SecretStr | None = Field(
        None, description="That client's secret, for a confidential client."
    )
    oidc_name_claim: str = Field(
        "preferred_username", description="Claim that holds the user's name (default: sub)."
    )
    public_url: str | None = Field(
        None,
        description="The URL clients reach the HTTP API at (https://pacs.example.vn), for the "
        "links in DICOMweb answers; default: from X-Forwarded-* headers or the Host header.",
    )
    qido_max_results: int = Field(
        1000, ge=1, le=100_000, description="Most matches one QIDO-RS answer returns."
    )
    ohif_dir: Path | None = Field(
        None,
        description="Folder of the prebuilt OHIF viewer served at /; default: the one "
        "scripts/fetch-ohif installs.",
    )
    viewer_transfer_syntax: str | None = Field(
        None,
        description="Transfer syntax OHIF asks frames in, e.g. 1.2.840.10008.1.2.4.80 (JPEG-LS "
        "lossless) for sites on slow links; default: as stored.",
    )
    cors_origins: str = Field(
        "",
        description="Other origins (comma-separated, e.g. https://viewer.hospital.vn) whose "
        "pages may call the API from a browser; the viewer served here needs none.",
    )
    transcode_cache_mb: int = Field(
        4096,
        ge=0,
        description="Disk for instances transcoded for a client (in <data-dir>/cache), in MiB.",
    )
    decode_workers: int = Field(
        2, ge=1, le=64, description="Processes that decode and encode pixel data for the API."
    )
    decode_memory_mb: int = Field(
        2048,
        ge=256,
        description="Address space each decoding process may use, in MiB; an image that needs "
        "more is refused (406) instead of taking the server down.",
    )
    stow_max_mb: int = Field(
        4096, ge=1, description="Largest STOW-RS request body, in MiB (413 beyond)."
    )
    # -- HTTPS
    https_certificate: Path | None = Field(
        None,
        description="PEM file of the HTTP API's certificate, followed by its intermediate "
        "CAs; with PACS_HTTPS_PRIVATE_KEY the API speaks HTTPS only (BCP 195: TLS 1.2 or 1.3).",
    )
    https_private_key: Path | None = Field(
        None, description="PEM file of that certificate's private key, unencrypted."
    )
    https_ca_certificates: Path | None = Field(
        None,
        description="PEM bundle of the CAs that sign HTTPS clients' certificates; a client "
        "that presents a certificate they did not sign is refused.",
    )
    https_require_client_certificate: bool = Field(
        False,
        description="Refuse HTTPS clients that present no certificate signed by "
        "PACS_HTTPS_CA_CERTIFICATES (mutual TLS).",
    )
    report_signing_ca: Path | None = Field(
        None,
        description="PEM file of the CA certificates that radiologists' report-signing "
        "certificates must chain to (a province CA, or the government CA); their "
        "certificates are then imported (`pacs user certificate import`). Default: the "
        "archive's own small CA in <data-dir>/report-signing-ca/ca.pem, made by the first "
        "`pacs user certificate issue`.",
    )

    @model_validator(mode="after")
    def check_https_settings(self) -> "ApiSettings":
        """HTTPS settings that only make sense together (uvicorn reads the files at start)."""
        if (self.https_certificate is None) != (self.https_private_key is None):
            raise ValueError("PACS_HTTPS_CERTIFICATE and PACS_HTTPS_PRIVATE_KEY go together")
        if self.https_certificate is None and (
            self.https_ca_certificates is not None or self.https_require_client_certificate
        ):
            raise ValueError(
                "client certificates (PACS_HTTPS_CA_CERTIFICATES, "
                "PACS_HTTPS_REQUIRE_CLIENT_CERTIFICATE) need HTTPS: PACS_HTTPS_CERTIFICATE "
                "and PACS_HTTPS_PRIVATE_KEY"
            )
        if self.https_require_client_certificate and self.https_ca_certificates is None:
            raise ValueError(
                "PACS_HTTPS_REQUIRE_CLIENT_CERTIFICATE needs PACS_HTTPS_CA_CERTIFICATES, the "
                "CAs that sign the client certificates"
            )
        return self
