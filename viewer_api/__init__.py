"""The HTTP edge of the archive (FastAPI), standing on ``storage``."""

from viewer_api.app import create_app
from viewer_api.config import ApiSettings

__all__ = ["ApiSettings", "create_app"]
