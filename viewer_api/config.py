"""Settings of the HTTP API, read from the environment and ``.env`` (prefix ``PACS_``)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PACS_", env_file=".env", extra="ignore")

    http_port: int = Field(8000, ge=1, le=65535, description="HTTP listening port.")
