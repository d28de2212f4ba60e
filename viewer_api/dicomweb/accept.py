"""Content negotiation for DICOMweb (PS3.18 8.7): the Accept header as media ranges, and
the choices the retrieve resources make from them. Pure functions.

Quoted and unquoted parameters are both understood (``type="application/dicom"`` and
``type=application/dicom``); parts that cannot be parsed or are not understood are
ignored; :class:`~viewer_api.errors.NotAcceptable` is raised only when nothing acceptable
remains.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from viewer_api.errors import NotAcceptable

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
ANY = "*"
NATIVE_SYNTAXES = frozenset({IMPLICIT_LE, EXPLICIT_LE})
"""Syntaxes whose frames are raw little-endian pixels, sent as they are."""

FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
}
"""The media type of a compressed frame, by the transfer syntax it is in (PS3.18 8.7.3)."""


@dataclass(frozen=True, slots=True)
class MediaRange:
    type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, most preferred first (q=0 dropped)."""
    ranges: list[MediaRange] = []
    for part in _split(header or "", ","):
        pieces = _split(part, ";")
        if not pieces or "/" not in pieces[0]:
            continue
        params: dict[str, str] = {}
        for piece in pieces[1:]:
            name, sep, value = piece.partition("=")
            if sep:
                params[name.strip().lower()] = value.strip().strip('"').strip()
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            continue
        if q > 0:
            ranges.append(MediaRange(pieces[0].strip().lower(), params, q))
    return sorted(ranges, key=lambda r: -r.q)


def _split(text: str, separator: str) -> list[str]:
    """Split on `separator` outside double quotes; empty pieces dropped."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return [p.strip() for p in pieces if p.strip()]


def instance_syntax(header: str | None) -> str:
    """The transfer syntax to send instances in (``*``: as stored), for
    ``multipart/related; type="application/dicom"``; Explicit VR Little Endian by default.

    Raises:
        NotAcceptable: the Accept header allows nothing of the kind.
    """
    ranges = parse_accept(header)
    if not ranges:
        return EXPLICIT_LE
    for media in ranges:
        if media.type == "multipart/related":
            if media.params.get("type", "application/dicom").lower() in (
                "application/dicom",
                "*/*",
            ):
                return media.params.get("transfer-syntax", EXPLICIT_LE)
        elif media.type in ("*/*", "multipart/*", "application/dicom"):
            return media.params.get("transfer-syntax", EXPLICIT_LE)
    raise NotAcceptable(
        f"nothing in Accept: {header!r} can be served; instances are sent as "
        'multipart/related; type="application/dicom"'
    )


def accepts_json(header: str | None) -> bool:
    ranges = parse_accept(header)
    return not ranges or any(
        m.type in ("application/dicom+json", "application/json", "*/*", "application/*")
        for m in ranges
    )


def frame_media_type(stored_syntax: str) -> str:
    return FRAME_MEDIA_TYPES.get(stored_syntax, "application/octet-stream")


def frame_acceptable(header: str | None, stored_syntax: str) -> bool:
    """Whether frames stored in `stored_syntax` may be sent as they are.

    ``type=application/octet-stream; transfer-syntax=*`` (what OHIF sends) takes any
    frame, compressed ones in their own media types.
    """
    ranges = parse_accept(header)
    if not ranges:
        return stored_syntax in NATIVE_SYNTAXES
    media_type = frame_media_type(stored_syntax)
    native = stored_syntax in NATIVE_SYNTAXES
    for media in ranges:
        if media.type in ("*/*", "multipart/*"):
            return True
        if media.type != "multipart/related":
            if media.type == media_type:
                return True
            continue
        wanted = media.params.get("type", "application/octet-stream").lower()
        default = EXPLICIT_LE if wanted == "application/octet-stream" else ANY
        syntax = media.params.get("transfer-syntax", default)
        if wanted == "*/*" or (wanted == "application/octet-stream" and syntax == ANY):
            return True
        if wanted == media_type and (
            syntax in (ANY, stored_syntax) or (native and syntax in NATIVE_SYNTAXES)
        ):
            return True
    return False


def wants_multipart(header: str | None) -> bool:
    """Whether the client asks for a multipart body (else a single part is sent)."""
    return any(m.type.startswith("multipart/") for m in parse_accept(header))


_DEFAULT_SYNTAX = {
    "application/octet-stream": EXPLICIT_LE,
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/jpeg": "1.2.840.10008.1.2.4.50",
}


def frame_target(
    header: str | None, stored: str, produce: Callable[[str], bool]
) -> tuple[str, str]:
    """(media type, transfer syntax) to send an instance's frames in: as stored when the
    Accept header allows it, else the first syntax asked for that `produce` can make.

    Raises:
        NotAcceptable: neither.
    """
    if frame_acceptable(header, stored):
        if stored in NATIVE_SYNTAXES:
            return "application/octet-stream", EXPLICIT_LE
        return frame_media_type(stored), stored
    for media in parse_accept(header):
        if media.type != "multipart/related":
            continue
        wanted = media.params.get("type", "application/octet-stream").lower()
        syntax = media.params.get("transfer-syntax") or _DEFAULT_SYNTAX.get(wanted)
        if syntax is None or syntax == ANY:
            continue
        native = syntax in NATIVE_SYNTAXES
        if (wanted == "application/octet-stream") != native:
            continue
        if not native and frame_media_type(syntax) != wanted:
            continue
        if produce(syntax):
            return wanted, EXPLICIT_LE if native else syntax
    raise NotAcceptable(
        f"the frames are stored in {stored} and cannot be sent in what Accept: {header!r} "
        'names; multipart/related; type="application/octet-stream"; transfer-syntax=* '
        "takes them as stored"
    )


def rendered_media_type(header: str | None) -> str:
    """image/jpeg (the default) or image/png; raises NotAcceptable otherwise."""
    ranges = parse_accept(header)
    if not ranges:
        return "image/jpeg"
    for media in ranges:
        if media.type in ("image/jpeg", "image/png"):
            return media.type
        if media.type in ("*/*", "image/*"):
            return "image/jpeg"
    raise NotAcceptable("rendered images are image/jpeg or image/png")
