"""Settings of the HTTP API, read from the environment and ``.env`` (prefix ``PACS_``)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PACS_", env_file=".env", extra="ignore")

    http_port: int = Field(8000, ge=1, le=65535, description="HTTP listening port.")
    http_host: str = Field(
        "127.0.0.1",
        description="Address the HTTP API binds to. Loopback only until the API has sign-in "
        "(a reverse proxy on the same machine can publish it).",
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
