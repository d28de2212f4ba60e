"""The HTTP edge of the archive (FastAPI), standing on ``storage``.

The app is built by :func:`viewer_api.app.create_app`; importing this package alone loads
only the settings.
"""

from viewer_api.config import ApiSettings

__all__ = ["ApiSettings"]
