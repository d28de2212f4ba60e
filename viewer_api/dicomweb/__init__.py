"""DICOMweb (PS3.18): QIDO-RS, WADO-RS, STOW-RS and WADO-URI over the archive."""

from viewer_api.dicomweb.decoding import Decoder
from viewer_api.dicomweb.renditions import Renditions
from viewer_api.dicomweb.routes import dicomweb_router, wado_uri_router

__all__ = ["Decoder", "Renditions", "dicomweb_router", "wado_uri_router"]
