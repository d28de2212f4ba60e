"""multipart/related bodies: written as streams, read by python-multipart as they arrive."""

import uuid
from collections.abc import Iterator
from typing import Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState

from viewer_api.dicomweb.accept import parse_accept
from viewer_api.errors import BadRequest, UnsupportedMediaType


def new_boundary() -> str:
    return uuid.uuid4().hex


def part_header(boundary: str, content_type: str, location: str | None = None) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    if location:
        lines.append(f"Content-Location: {location}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode()


def multipart_type(boundary: str, part_type: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def parts_of(boundary: str, content_type: str, parts: list[bytes]) -> Iterator[bytes]:
    """A whole multipart body of in-memory parts (frames, bulk data)."""
    for part in parts:
        yield part_header(boundary, content_type)
        yield part
        yield b"\r\n"
    yield closing(boundary)


def related_boundary(content_type: str | None, *, part_type: str) -> str:
    """The boundary of a ``multipart/related`` request body whose parts are `part_type`.

    Raises:
        UnsupportedMediaType: not multipart/related, or of another part type.
        BadRequest: no boundary.
    """
    ranges = parse_accept(content_type)
    media = ranges[0] if ranges else None
    if media is None or media.type != "multipart/related":
        raise UnsupportedMediaType(
            f'the body must be multipart/related; type="{part_type}", not {content_type!r}'
        )
    sent_type = media.params.get("type", part_type).lower()
    if sent_type != part_type:
        raise UnsupportedMediaType(f"only {part_type} parts are accepted, not {sent_type}")
    boundary = media.params.get("boundary", "")
    if not boundary or len(boundary) > 70:
        raise BadRequest("the multipart/related Content-Type has no valid boundary")
    return boundary


class PartReader:
    """Feeds body chunks to python-multipart and hands each part's bytes to `sink`.

    `sink` gets ``begin(content_type)``, ``data(bytes)`` and ``end()`` per part.
    """

    def __init__(self, boundary: str, sink: "PartSink") -> None:
        self._sink = sink
        self._field = b""
        self._value = b""
        self._headers: dict[str, str] = {}
        self.parts = 0
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._end,
            },
        )

    def write(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except (MultipartParseError, ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed multipart body: {exc}") from None

    def finish(self) -> None:
        try:
            self._parser.finalize()
        except (MultipartParseError, ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed multipart body: {exc}") from None
        if self._parser.state != MultipartState.END:
            raise BadRequest("the multipart body ends before its closing boundary")
        if not self.parts:
            raise BadRequest("the multipart body has no parts")

    def _begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]  # python-multipart bounds the header's size

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._headers[name] = self._value.decode("latin-1").strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        self.parts += 1
        self._sink.begin(self._headers.get("content-type", ""))

    def _data(self, data: bytes, start: int, end: int) -> None:
        self._sink.data(data[start:end])

    def _end(self) -> None:
        self._sink.end()


class PartSink(Protocol):
    def begin(self, content_type: str) -> None: ...

    def data(self, chunk: bytes) -> None: ...

    def end(self) -> None: ...
