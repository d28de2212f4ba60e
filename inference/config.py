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
    ai_routing: Path | None = Field(
        None,
        description="The rules file saying which model reads which series "
        "(default: routing.toml in the models folder).",
    )
    ai_workers: int = Field(
        1, ge=1, le=64, description="Model processes in pacs serve or in one pacs worker."
    )
    ai_threads: int = Field(1, ge=1, le=256, description="CPU threads of each model process.")
    ai_job_timeout: float = Field(
        900.0,
        gt=0,
        description="Seconds one model run may take; past it the run is stopped and its job "
        "fails with the reason.",
    )
    ai_ct_ensemble: int = Field(
        3, ge=1, le=12, description="How many of the head-CT ensemble's models run per study."
    )
    ai_broker: str | None = Field(
        None,
        description="redis://... or amqp://...: jobs go through this queue to `pacs worker` "
        "processes instead of the model processes of pacs serve.",
    )
    ai_queue: str = Field("dalat-ai", description="The queue's name on the broker.")
    ai_webhook_url: str | None = Field(
        None, description="Where a flag is announced (an HTTP POST of JSON), with retries."
    )
    ai_webhook_severities: str = Field(
        "critical", description="Flags of these severities are announced (comma-separated)."
    )
    ai_webhook_attempts: int = Field(
        8, ge=1, le=100, description="Tries per flag before the webhook gives it up."
    )

    def routing_path(self) -> Path:
        return self.ai_routing or self.models_dir / "routing.toml"
