"""Settings of the inference service, read from the environment and ``.env`` (``PACS_``)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "models"


class InferenceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PACS_", env_file=".env", extra="ignore")

    models_dir: Path = Field(
        SHIPPED_MODELS,
        description="Folder of model bundles (one folder each); default: the models shipped.",
    )
    ai_enabled: bool = Field(
        True, description="Run the chest X-ray triage model on arriving studies in pacs serve."
    )
    ai_quiet_seconds: float = Field(
        20.0,
        ge=0,
        description="Seconds a study must be quiet (no new instance) before the model reads it.",
    )
