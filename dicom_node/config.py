"""Settings of the DICOM listener, read from the environment and ``.env`` (prefix ``PACS_``)."""

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class DicomSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PACS_", env_file=".env", extra="ignore")

    aet: str = Field("DALAT", max_length=16, description="Our AE title.")
    dicom_port: int = Field(
        11112, ge=0, le=65535, description="DICOM listening port (0: any free port)."
    )
    dicom_processes: int = Field(
        0,
        ge=0,
        le=32,
        description="Listener processes sharing the DICOM port (SO_REUSEPORT), so parallel "
        "associations use every core; 0: one per CPU core.",
    )
    accept_any_caller: bool = Field(
        False,
        description="Accept associations from AE titles that are not registered peers (demo only).",
    )
    max_pdu_kb: int = Field(
        256,
        ge=16,
        le=4096,
        description="Largest PDU we accept and announce, in KiB; a peer's PDU that declares "
        "more is refused before it is read.",
    )
    max_associations: int = Field(64, ge=1, description="Associations open at once, in all.")
    max_connections_per_address: int = Field(
        16, ge=1, description="TCP connections open at once from one IP address."
    )
    acse_timeout: float = Field(
        30, gt=0, description="Seconds to wait for an association request or response."
    )
    dimse_timeout: float = Field(
        120, gt=0, description="Seconds to wait for a DIMSE message (C-STORE response...)."
    )
    network_timeout: float = Field(
        120, gt=0, description="Seconds an association may stay silent before it is closed."
    )
    find_max_results: int = Field(
        10000, ge=1, description="Most C-FIND matches returned; past it the find fails (A700)."
    )
    commitment_retry_seconds: float = Field(
        5, gt=0, description="How often pending storage commitment reports are retried."
    )
    tls_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="A second DICOM port that speaks TLS (PS3.15 B.9, BCP 195 profile; 2762 by "
        "convention; 0: any free port); none: no TLS.",
    )
    tls_certificate: Path | None = Field(
        None,
        description="PEM file of the certificate the TLS port presents, followed by its "
        "intermediate CAs.",
    )
    tls_private_key: Path | None = Field(
        None, description="PEM file of that certificate's private key, unencrypted."
    )
    tls_ca_certificates: Path | None = Field(
        None,
        description="PEM bundle of the CAs that sign peers' client certificates; a peer that "
        "presents a certificate they did not sign is refused.",
    )
    tls_require_client_certificate: bool = Field(
        False,
        description="Refuse TLS peers that present no client certificate signed by "
        "PACS_TLS_CA_CERTIFICATES.",
    )

    @model_validator(mode="after")
    def check_tls_settings(self) -> Self:
        """The TLS settings that only make sense together (the files are read at start)."""
        if (self.tls_certificate is None) != (self.tls_private_key is None):
            raise ValueError("PACS_TLS_CERTIFICATE and PACS_TLS_PRIVATE_KEY go together")
        if self.tls_port is not None and self.tls_certificate is None:
            raise ValueError("PACS_TLS_PORT needs PACS_TLS_CERTIFICATE and PACS_TLS_PRIVATE_KEY")
        if self.tls_port and self.tls_port == self.dicom_port:
            raise ValueError(f"PACS_TLS_PORT and PACS_DICOM_PORT are both {self.tls_port}")
        if self.tls_require_client_certificate and self.tls_ca_certificates is None:
            raise ValueError(
                "PACS_TLS_REQUIRE_CLIENT_CERTIFICATE needs PACS_TLS_CA_CERTIFICATES, the CAs "
                "that sign the client certificates"
            )
        return self
