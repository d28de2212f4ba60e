"""All settings, from the environment and ``.env`` (prefix ``PACS_``).

Each package declares its own settings class; this one combines them, so every variable
has one definition and one description (``pacs config`` prints them).
"""

from enum import StrEnum

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from dicom_node import DicomSettings
from inference.config import InferenceSettings
from storage import StorageSettings
from viewer_api import ApiSettings


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class Settings(StorageSettings, DicomSettings, ApiSettings, InferenceSettings):
    model_config = SettingsConfigDict(env_prefix="PACS_", env_file=".env", extra="ignore")

    host: str = Field(
        "127.0.0.1",
        description="Address the DICOM listeners bind to; 0.0.0.0 for all interfaces.",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: LogFormat = Field(LogFormat.TEXT, description="text for people, json for tools.")
