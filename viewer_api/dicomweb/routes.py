"""The DICOMweb resources (PS3.18): QIDO-RS, WADO-RS, STOW-RS under ``/dicom-web``, and
WADO-URI at ``/wado``.

Queries and metadata are answered from the index (the stored header of each instance);
instances stream from the blob store part by part; frames are ranged reads of the blob.
"""

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import chain
from typing import Any, BinaryIO

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from storage import (
    Archive,
    InconsistentInstance,
    InstanceDetails,
    InvalidInstance,
    Level,
    NotFound,
    Outcome,
    Source,
    StagedFile,
    StagingWriter,
    StorageUnavailable,
    build_query,
    header_datasets,
    stage_file,
)
from storage.errors import CannotTranscode
from storage.staging import MAGIC, PREAMBLE
from storage.transcode import can_transcode, effective_syntax
from storage.uids import uid_problem
from viewer_api.config import ApiSettings
from viewer_api.dicomweb.accept import (
    ANY,
    EXPLICIT_LE,
    NATIVE_SYNTAXES,
    accepts_json,
    frame_target,
    instance_syntax,
    rendered_media_type,
    wants_multipart,
)
from viewer_api.dicomweb.cache import TranscodeCache
from viewer_api.dicomweb.decoding import Decoder
from viewer_api.dicomweb.dicomjson import JsonObject, attribute, index_object, tag_and_vr
from viewer_api.dicomweb.frames import frames_of_file, parse_frame_list, read_frames
from viewer_api.dicomweb.headerjson import header_json
from viewer_api.dicomweb.multipart import (
    PartReader,
    closing,
    multipart_type,
    new_boundary,
    part_header,
    parts_of,
    related_boundary,
)
from viewer_api.dicomweb.qido import parse_qido
from viewer_api.dicomweb.rendering import parse_options
from viewer_api.errors import (
    ApiError,
    BadRequest,
    NotAcceptable,
    NotFoundError,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from viewer_api.urls import base_url

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
_CHUNK = 1 << 20
_PIECE = 4 << 20
"""Bytes per piece of a multi-instance response."""
_BULK_THRESHOLD = 64 * 1024
"""Binary values longer than this are given as BulkDataURI in metadata, shorter inline."""


def _check_uids(**uids: str | None) -> None:
    for name, value in uids.items():
        if value is not None and (problem := uid_problem(value)):
            raise BadRequest(f"{name} {value[:70]!r} {problem}")


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def dicomweb_router(
    archive: Archive, settings: ApiSettings, decoder: Decoder, renditions: "Renditions"
) -> APIRouter:
    router = APIRouter(prefix="/dicom-web", tags=["DICOMweb"])

    def audit(request: Request, action: str, detail: str, study: str | None = None) -> None:
        archive.audit(
            action=action,
            outcome="success",
            actor="http",
            source_address=_client(request),
            study_instance_uid=study,
            detail=detail[:500],
        )

    # -- QIDO-RS ---------------------------------------------------------------------------

    def qido(request: Request, level: Level, **scope: str) -> Response:
        _check_uids(**scope)
        if not accepts_json(request.headers.get("accept")):
            raise NotAcceptable("QIDO-RS answers in application/dicom+json")
        parsed = parse_qido(
            level,
            request.query_params.multi_items(),
            scope,
            max_results=settings.qido_max_results,
        )
        matches = archive.find(parsed.query)
        more = len(matches) > parsed.limit
        matches = matches[: parsed.limit]
        extras: dict[int, Dataset] = {}
        wants_header = parsed.include or (parsed.include_all and level is Level.IMAGE)
        if wants_header and matches:
            with archive.read() as conn:
                extras = header_datasets(conn, level, [m.pk for m in matches])
        base = base_url(request, settings)
        body = []
        for match in matches:
            item = index_object(match.values, match.values)
            tag, element = attribute("RetrieveURL", _retrieve_url(base, level, match.values))
            item[tag] = element
            tag, element = attribute("InstanceAvailability", "ONLINE")
            item[tag] = element
            header = extras.get(match.pk)
            if header is not None:
                item.update(_header_json(header, parsed.include, all_=parsed.include_all))
            body.append(dict(sorted(item.items())))
        asked = "&".join(f"{k}={v}" for k, v in request.query_params.multi_items())
        audit(request, "query", f"QIDO-RS {level.value} [{asked}] -> {len(body)} match(es)")
        headers = {}
        if more:
            headers["Warning"] = (
                '299 dalat-pacs "There are additional results that can be requested"'
            )
        return JSONResponse(body, media_type=DICOM_JSON, headers=headers)

    @router.get("/studies", summary="QIDO-RS: search for studies")
    def search_studies(request: Request) -> Response:
        return qido(request, Level.STUDY)

    @router.get("/series", summary="QIDO-RS: search for series")
    def search_series(request: Request) -> Response:
        return qido(request, Level.SERIES)

    @router.get("/instances", summary="QIDO-RS: search for instances")
    def search_instances(request: Request) -> Response:
        return qido(request, Level.IMAGE)

    @router.get("/studies/{study}/series", summary="QIDO-RS: search for a study's series")
    def search_study_series(request: Request, study: str) -> Response:
        return qido(request, Level.SERIES, StudyInstanceUID=study)

    @router.get("/studies/{study}/instances", summary="QIDO-RS: search a study's instances")
    def search_study_instances(request: Request, study: str) -> Response:
        return qido(request, Level.IMAGE, StudyInstanceUID=study)

    @router.get(
        "/studies/{study}/series/{series}/instances",
        summary="QIDO-RS: search for a series' instances",
    )
    def search_series_instances(request: Request, study: str, series: str) -> Response:
        return qido(request, Level.IMAGE, StudyInstanceUID=study, SeriesInstanceUID=series)

    # -- WADO-RS ---------------------------------------------------------------------------

    def instances(study: str, series: str | None = None, sop: str | None = None) -> list[Any]:
        _check_uids(StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=sop)
        keys = {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": sop}
        found = archive.instance_details(build_query(Level.IMAGE, keys))
        if not found:
            what = "instance" if sop else "series" if series else "study"
            raise NotFoundError(f"no such {what} in the archive")
        return found

    def retrieve(
        request: Request, study: str, series: str | None = None, sop: str | None = None
    ) -> Response:
        syntax = instance_syntax(request.headers.get("accept"))
        found = instances(study, series, sop)
        for instance in found:
            _check_transcodable(instance, syntax)
        renditions.prepare(found, syntax)
        boundary = new_boundary()
        audit(
            request,
            "retrieve",
            f"WADO-RS {len(found)} instance(s) as {syntax}",
            study=study,
        )
        return StreamingResponse(
            _instance_stream(renditions, found, syntax, boundary),
            media_type=multipart_type(boundary, "application/dicom"),
            headers=_length_header(found, syntax, boundary),
        )

    @router.get("/studies/{study}", summary="WADO-RS: a study's instances")
    def retrieve_study(request: Request, study: str) -> Response:
        return retrieve(request, study)

    @router.get("/studies/{study}/series/{series}", summary="WADO-RS: a series' instances")
    def retrieve_series(request: Request, study: str, series: str) -> Response:
        return retrieve(request, study, series)

    @router.get("/studies/{study}/series/{series}/instances/{sop}", summary="WADO-RS: an instance")
    def retrieve_instance(request: Request, study: str, series: str, sop: str) -> Response:
        return retrieve(request, study, series, sop)

    def metadata(
        request: Request, study: str, series: str | None = None, sop: str | None = None
    ) -> Response:
        if not accepts_json(request.headers.get("accept")):
            raise NotAcceptable("metadata is sent as application/dicom+json")
        found = instances(study, series, sop)
        base = base_url(request, settings)
        body = [_metadata(archive, instance, base) for instance in found]
        audit(request, "retrieve", f"WADO-RS metadata of {len(found)} instance(s)", study)
        return JSONResponse(body, media_type=DICOM_JSON)

    @router.get("/studies/{study}/metadata", summary="WADO-RS: a study's metadata")
    def study_metadata(request: Request, study: str) -> Response:
        return metadata(request, study)

    @router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: a series' metadata")
    def series_metadata(request: Request, study: str, series: str) -> Response:
        return metadata(request, study, series)

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/metadata",
        summary="WADO-RS: an instance's metadata",
    )
    def instance_metadata(request: Request, study: str, series: str, sop: str) -> Response:
        return metadata(request, study, series, sop)

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
        summary="WADO-RS: frames of an instance",
    )
    def retrieve_frames(
        request: Request, study: str, series: str, sop: str, frames: str
    ) -> Response:
        numbers = parse_frame_list(frames)
        (instance,) = instances(study, series, sop)
        stored = instance.transfer_syntax_uid
        part_type, syntax = frame_target(
            request.headers.get("accept"),
            stored,
            lambda target: can_transcode(stored, target, has_pixels=_has_pixels(instance)),
        )
        if syntax == stored or (stored in NATIVE_SYNTAXES and syntax in NATIVE_SYNTAXES):
            header = archive.header_of(instance)
            data = read_frames(
                instance,
                header,
                numbers,
                lambda offset, length: archive.read_range(instance.blob_key, offset, length),
            )
        else:
            count = instance.number_of_frames or 1
            if max(numbers) > count:
                raise NotFoundError(f"the instance has {count} frame(s), not frame {max(numbers)}")
            data = frames_of_file(renditions.get(instance, syntax), numbers)
        boundary = new_boundary()
        audit(request, "retrieve", f"WADO-RS frames {frames} of {sop}", study)
        return StreamingResponse(
            parts_of(boundary, f"{part_type}; transfer-syntax={syntax}", data),
            media_type=multipart_type(boundary, part_type),
        )

    # -- rendered and thumbnails -------------------------------------------------------------

    def rendered(
        request: Request,
        instance: InstanceDetails,
        frame: int,
        *,
        thumbnail: bool,
    ) -> Response:
        if not _has_pixels(instance):
            raise NotFoundError(f"instance {instance.sop_instance_uid} has no image")
        count = instance.number_of_frames or 1
        if frame > count:
            raise NotFoundError(f"the instance has {count} frame(s), not frame {frame}")
        media_type = rendered_media_type(request.headers.get("accept"))
        options = parse_options(request.query_params, media_type, thumbnail=thumbnail)
        with archive.blob_file(instance.blob_key) as path:
            body = decoder.render(path, frame - 1, options)
        kind = "thumbnail" if thumbnail else "rendered"
        audit(
            request,
            "view",
            f"WADO-RS {kind} frame {frame} of {instance.sop_instance_uid}",
            instance.study_instance_uid,
        )
        return Response(body, media_type=media_type)

    def representative(found: list[InstanceDetails]) -> InstanceDetails:
        images = [i for i in found if _has_pixels(i)]
        if not images:
            raise NotFoundError("nothing with an image here")
        first_series = [i for i in images if i.series_instance_uid == images[0].series_instance_uid]
        return first_series[len(first_series) // 2]

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/rendered",
        summary="WADO-RS: an instance rendered (first frame)",
    )
    def instance_rendered(request: Request, study: str, series: str, sop: str) -> Response:
        (instance,) = instances(study, series, sop)
        return rendered(request, instance, 1, thumbnail=False)

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered",
        summary="WADO-RS: a frame rendered",
    )
    def frame_rendered(
        request: Request, study: str, series: str, sop: str, frames: str
    ) -> Response:
        numbers = parse_frame_list(frames)
        if len(numbers) != 1:
            raise BadRequest("one frame is rendered at a time")
        (instance,) = instances(study, series, sop)
        return rendered(request, instance, numbers[0], thumbnail=False)

    @router.get("/studies/{study}/thumbnail", summary="WADO-RS: a study's thumbnail")
    def study_thumbnail(request: Request, study: str) -> Response:
        return rendered(request, representative(instances(study)), 1, thumbnail=True)

    @router.get(
        "/studies/{study}/series/{series}/thumbnail", summary="WADO-RS: a series' thumbnail"
    )
    def series_thumbnail(request: Request, study: str, series: str) -> Response:
        return rendered(request, representative(instances(study, series)), 1, thumbnail=True)

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/thumbnail",
        summary="WADO-RS: an instance's thumbnail",
    )
    def instance_thumbnail(request: Request, study: str, series: str, sop: str) -> Response:
        (instance,) = instances(study, series, sop)
        return rendered(request, instance, 1, thumbnail=True)

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail",
        summary="WADO-RS: a frame's thumbnail",
    )
    def frame_thumbnail(
        request: Request, study: str, series: str, sop: str, frames: str
    ) -> Response:
        numbers = parse_frame_list(frames)
        if len(numbers) != 1:
            raise BadRequest("one frame is rendered at a time")
        (instance,) = instances(study, series, sop)
        return rendered(request, instance, numbers[0], thumbnail=True)

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/bulkdata/{tag}",
        summary="WADO-RS: a bulk data value of an instance",
    )
    def retrieve_bulkdata(
        request: Request, study: str, series: str, sop: str, tag: str
    ) -> Response:
        (instance,) = instances(study, series, sop)
        pieces: Iterable[bytes]
        if tag.upper() == "7FE00010":  # pixel data: ranged reads of the blob
            if instance.pixel_data_offset is None:
                raise NotFoundError("the instance has no pixel data")
            start = instance.pixel_data_offset
            length = instance.pixel_data_length or instance.size - start
            pieces = _ranges(archive, instance.blob_key, start, length)
        else:  # anything else: from the stored header
            if len(tag) != 8 or not all(c in "0123456789abcdefABCDEF" for c in tag):
                raise BadRequest(f"{tag!r} is not an 8-digit tag")
            header = archive.header_of(instance)
            try:
                element = header[int(tag, 16)]
            except KeyError:
                raise NotFoundError(f"the instance has no bulk data at {tag}") from None
            value = element.value if isinstance(element.value, bytes) else b""
            pieces, length = (value,), len(value)
        audit(request, "retrieve", f"WADO-RS bulk data {tag} of {sop}", study)
        if not wants_multipart(request.headers.get("accept")):  # OHIF's "singlepart"
            return StreamingResponse(
                pieces,
                media_type="application/octet-stream",
                headers={"Content-Length": str(length)},
            )
        boundary = new_boundary()
        return StreamingResponse(
            chain((part_header(boundary, "application/octet-stream"),), pieces,
                  (b"\r\n", closing(boundary))),
            media_type=multipart_type(boundary, "application/octet-stream"),
        )  # fmt: skip

    # -- STOW-RS ---------------------------------------------------------------------------

    async def stow(request: Request, study: str | None) -> Response:
        _check_uids(StudyInstanceUID=study)
        boundary = related_boundary(
            request.headers.get("content-type"), part_type="application/dicom"
        )
        declared = request.headers.get("content-length")
        limit = settings.stow_max_mb * 1024 * 1024
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body is over PACS_STOW_MAX_MB ({settings.stow_max_mb})")
        sink = _StagingSink(archive)
        reader = PartReader(boundary, sink)
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise PayloadTooLarge(
                        f"the body is over PACS_STOW_MAX_MB ({settings.stow_max_mb})"
                    )
                await run_in_threadpool(reader.write, chunk)
            reader.finish()
            if sink.error:
                raise sink.error
        except BaseException:
            sink.discard()
            raise
        source = Source("stow", address=_client(request))
        outcomes = []
        try:
            for staged in sink.staged:
                outcomes.append(
                    await run_in_threadpool(_store_part, archive, staged, source, study)
                )
        finally:  # a client gone mid-way leaves no staged parts behind
            for staged in sink.staged[len(outcomes) :]:
                staged.path.unlink(missing_ok=True)
        return _stow_response(base_url(request, settings), outcomes)

    @router.post("/studies", summary="STOW-RS: store instances")
    async def store_instances(request: Request) -> Response:
        return await stow(request, None)

    @router.post("/studies/{study}", summary="STOW-RS: store instances of one study")
    async def store_study_instances(request: Request, study: str) -> Response:
        return await stow(request, study)

    return router


def wado_uri_router(archive: Archive, renditions: "Renditions") -> APIRouter:
    """WADO-URI (PS3.18 9): one instance as a Part 10 file."""
    router = APIRouter(tags=["DICOMweb"])

    @router.get("/wado", summary="WADO-URI: an instance")
    def wado(request: Request) -> Response:
        params = request.query_params
        if params.get("requestType") != "WADO":
            raise BadRequest("requestType=WADO is required")
        study, series, sop = (params.get(k) for k in ("studyUID", "seriesUID", "objectUID"))
        if not (study and series and sop):
            raise BadRequest("studyUID, seriesUID and objectUID are required")
        _check_uids(studyUID=study, seriesUID=series, objectUID=sop)
        content_type = params.get("contentType", "application/dicom")
        if content_type != "application/dicom":
            raise NotAcceptable(f"contentType {content_type!r} is not served; application/dicom is")
        keys = {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": sop}
        found = archive.instance_details(build_query(Level.IMAGE, keys))
        if not found:
            raise NotFoundError("no such instance in the archive")
        instance = found[0]
        syntax = params.get("transferSyntax") or EXPLICIT_LE
        _check_transcodable(instance, syntax)
        renditions.prepare([instance], syntax)
        archive.audit(
            action="retrieve",
            outcome="success",
            actor="http",
            source_address=_client(request),
            study_instance_uid=study,
            detail=f"WADO-URI {sop}",
        )
        return StreamingResponse(
            renditions.stream(instance, syntax), media_type="application/dicom"
        )

    return router


# -- helpers -----------------------------------------------------------------------------


def _retrieve_url(base: str, level: Level, values: dict[str, Any]) -> str:
    url = f"{base}/dicom-web/studies/{values.get('StudyInstanceUID')}"
    if level in (Level.SERIES, Level.IMAGE):
        url += f"/series/{values.get('SeriesInstanceUID')}"
    if level is Level.IMAGE:
        url += f"/instances/{values.get('SOPInstanceUID')}"
    return url


def _header_json(header: Dataset, include: frozenset[str], *, all_: bool) -> JsonObject:
    out: JsonObject = {}
    for element in header:
        if element.tag.group == 0x0002:
            continue
        if all_ or element.keyword in include:
            value = element.to_json_dict(_no_bulk, _BULK_THRESHOLD)
            if value.get("BulkDataURI") != "":  # large binary values: not for queries
                out[f"{int(element.tag):08X}"] = value
    return out


def _no_bulk(_: Any) -> str:
    return ""


def _metadata(archive: Archive, instance: InstanceDetails, base: str) -> JsonObject:
    uri = (
        f"{base}/dicom-web/studies/{instance.study_instance_uid}/series/"
        f"{instance.series_instance_uid}/instances/{instance.sop_instance_uid}"
    )

    def bulk(element: Any) -> str:
        return f"{uri}/bulkdata/{int(element.tag):08X}"

    body: JsonObject | None = None
    bits = 16
    if instance.header is not None:
        body = header_json(
            instance.header, lambda tag: f"{uri}/bulkdata/{tag:08X}", _BULK_THRESHOLD
        )
    if body is None:
        header = archive.header_of(instance)
        body = header.to_json_dict(_BULK_THRESHOLD, bulk, suppress_invalid_tags=True)
    if instance.pixel_data_offset is not None:
        allocated = body.get("00280100", {}).get("Value")
        bits = int(allocated[0]) if allocated else bits
        native = instance.pixel_data_length is not None
        body["7FE00010"] = {
            "vr": "OW" if native and bits > 8 else "OB",
            "BulkDataURI": f"{uri}/bulkdata/7FE00010",
        }
    tag, vr = tag_and_vr("AvailableTransferSyntaxUID")
    body[tag] = {"vr": vr, "Value": [instance.transfer_syntax_uid]}
    return body


def _ranges(archive: Archive, key: str, start: int, length: int) -> Iterator[bytes]:
    """Bytes of a blob in ranged reads of a few MiB (S3: one GET each)."""
    end = start + length
    while start < end:
        size = min(_PIECE, end - start)
        yield archive.read_range(key, start, size)
        start += size


def _has_pixels(instance: InstanceDetails) -> bool:
    return instance.pixel_data_offset is not None


def _check_transcodable(instance: InstanceDetails, syntax: str) -> None:
    stored = instance.transfer_syntax_uid
    if syntax == ANY or can_transcode(stored, syntax, has_pixels=_has_pixels(instance)):
        return
    raise NotAcceptable(
        f"instance {instance.sop_instance_uid} is stored in {UID(stored).name} and cannot "
        f"be sent in {syntax}; ask with transfer-syntax=*"
    )


def _sent_syntax(instance: InstanceDetails, syntax: str) -> str:
    if syntax == ANY:
        return instance.transfer_syntax_uid
    return effective_syntax(instance.transfer_syntax_uid, syntax, has_pixels=_has_pixels(instance))


class Renditions:
    """Instances in a syntax other than the stored one: transcoded once, then cached."""

    def __init__(self, archive: Archive, settings: ApiSettings, decoder: Decoder) -> None:
        self._archive = archive
        self._cache = TranscodeCache(
            archive.settings.data_dir / "cache" / "transcoded",
            settings.transcode_cache_mb * 1024 * 1024,
        )
        self._decoder = decoder

    def get(self, instance: InstanceDetails, syntax: str) -> bytes:
        """Raises CannotTranscode, NotFound, StorageUnavailable."""
        cached = self._cache.get(instance.blob_key, syntax)
        if cached is not None:
            return cached
        with self._archive.blob_file(instance.blob_key) as path:
            data = self._decoder.transcode(path, syntax)
        try:
            self._cache.put(instance.blob_key, syntax, data)
        except OSError as exc:  # a cache: the client still gets its rendition
            log.warning("Transcoded %s not cached: %s", instance.sop_instance_uid, exc)
        return data

    def prepare(self, found: list[InstanceDetails], syntax: str) -> None:
        """Transcode the first instance that needs it before anything is sent, so that a
        codec that fails fails the request with a status, not a broken stream."""
        for instance in found:
            sent = _sent_syntax(instance, syntax)
            if sent != instance.transfer_syntax_uid:
                try:
                    self.get(instance, sent)
                except CannotTranscode as exc:
                    raise NotAcceptable(
                        f"{exc.reason}; ask with transfer-syntax=* for the instances as stored"
                    ) from None
                return

    @contextmanager
    def open_stored(self, instance: InstanceDetails) -> Iterator[BinaryIO]:
        try:
            with self._archive.blobs.open(instance.blob_key) as blob:
                yield blob
        except (NotFound, OSError) as exc:
            log.error("Instance %s cannot be read: %s", instance.sop_instance_uid, exc)
            raise

    def stream(self, instance: InstanceDetails, syntax: str) -> Iterator[bytes]:
        """The instance's file in `syntax`: as stored, streamed, or a cached rendition."""
        sent = _sent_syntax(instance, syntax)
        if sent == instance.transfer_syntax_uid:
            with self.open_stored(instance) as blob:
                while chunk := blob.read(_CHUNK):
                    yield chunk
            return
        try:
            yield self.get(instance, sent)
        except CannotTranscode as exc:  # headers are sent: all that is left is to stop
            log.error("Instance %s: %s", instance.sop_instance_uid, exc.reason)
            raise


def _length_header(found: list[InstanceDetails], syntax: str, boundary: str) -> dict[str, str]:
    """Content-Length when every instance goes as stored (their sizes are in the index):
    clients can show progress, and read a plain body rather than chunks."""
    total = len(closing(boundary))
    for instance in found:
        sent = _sent_syntax(instance, syntax)
        if sent != instance.transfer_syntax_uid:
            return {}
        header = part_header(boundary, f"application/dicom; transfer-syntax={sent}")
        total += len(header) + instance.size + 2
    return {"Content-Length": str(total)}


def _instance_stream(
    renditions: Renditions, found: list[InstanceDetails], syntax: str, boundary: str
) -> Iterator[bytes | memoryview]:
    """The multipart body in pieces of a few MiB. Each piece of a streaming response costs
    a hand-over between threads, so part headers and instances share pieces; instances
    sent as stored are read straight into the piece (no copy in between)."""
    buffer = bytearray(_PIECE)
    filled = 0

    def add(data: bytes) -> Iterator[memoryview]:
        nonlocal buffer, filled
        view = memoryview(data)
        while view:
            room = _PIECE - filled
            buffer[filled : filled + min(room, len(view))] = view[:room]
            filled += min(room, len(view))
            view = view[room:]
            if filled == _PIECE:
                yield memoryview(buffer)
                buffer, filled = bytearray(_PIECE), 0

    for instance in found:
        sent = _sent_syntax(instance, syntax)
        yield from add(part_header(boundary, f"application/dicom; transfer-syntax={sent}"))
        if sent == instance.transfer_syntax_uid:
            with renditions.open_stored(instance) as blob:
                while True:
                    read = blob.readinto(memoryview(buffer)[filled:])  # type: ignore[attr-defined]
                    if not read:
                        break
                    filled += read
                    if filled == _PIECE:
                        yield memoryview(buffer)
                        buffer, filled = bytearray(_PIECE), 0
        else:
            for piece in renditions.stream(instance, syntax):
                yield from add(piece)
        yield from add(b"\r\n")
    yield from add(closing(boundary))
    yield memoryview(buffer)[:filled]


class _StagingSink:
    """Each part of a STOW-RS body into its own staged (hashed) file, its preamble zeroed
    as on every path in (PS3.10 7.5). A part that starts at its File Meta Information, as
    some clients write it, gets the preamble; a bare dataset gets File Meta Information
    made from it."""

    def __init__(self, archive: Archive) -> None:
        self._archive = archive
        self._writer: StagingWriter | None = None
        self._head = b""
        self._bare = False
        self.staged: list[StagedFile] = []
        self.error: ApiError | None = None

    def begin(self, content_type: str) -> None:
        media = content_type.split(";")[0].strip().lower()
        if media not in ("application/dicom", "") and self.error is None:
            self.error = UnsupportedMediaType(
                f"a part is {media}; only application/dicom parts are accepted"
            )
        self._head = b""
        self._bare = False
        try:
            self._writer = StagingWriter(self._archive.staging_dir, prefix="stow-")
        except OSError as exc:
            self._writer = None
            self.error = self.error or _unavailable(exc)

    def data(self, chunk: bytes) -> None:
        if self._writer is None:
            return
        if len(self._head) < _HEAD:
            self._head += chunk
            if len(self._head) >= _HEAD:
                self._write_head()
            return
        self._writer.write(chunk)

    def _write_head(self) -> None:
        assert self._writer is not None
        head, self._head = self._head, self._head[:_HEAD]
        if head[128:132] == MAGIC:
            self._writer.write(PREAMBLE + head[128:])
        elif head[:2] == b"\x02\x00":  # File Meta Information without preamble
            self._writer.write(PREAMBLE + MAGIC + head)
        else:
            self._bare = True
            self._writer.write(head)

    def end(self) -> None:
        if self._writer is None:
            return
        if len(self._head) < _HEAD:
            self._write_head()
        writer, self._writer = self._writer, None
        try:
            staged = writer.finish()
            if self._bare:
                bare = staged.path
                try:
                    staged = stage_file(bare, self._archive.staging_dir)
                except InvalidInstance:
                    staged = StagedFile(bare, staged.sha256, staged.size)  # refused when stored
                else:
                    bare.unlink(missing_ok=True)
            self.staged.append(staged)
        except (OSError, StorageUnavailable) as exc:
            writer.discard()
            self.error = self.error or _unavailable(exc)

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.discard()
            self._writer = None
        for staged in self.staged:
            staged.path.unlink(missing_ok=True)
        self.staged = []


_HEAD = 132


def _unavailable(exc: Exception) -> ApiError:
    return Unavailable(f"the archive cannot take the upload: {exc}")


_FAILED_PROCESSING = 0xC000
_INCONSISTENT = 0xA900
_OUT_OF_RESOURCES = 0xA700
_DIFFERENT_STUDY = 0xC122  # "Referenced SOP Instance UID does not belong to the study"


def _store_part(
    archive: Archive, staged: StagedFile, source: Source, study: str | None
) -> dict[str, Any]:
    """Store one STOW-RS part; what the response says about it."""
    try:
        if study is not None:
            with staged.path.open("rb") as file:
                found = dcmread(file, stop_before_pixels=True, force=True)
            if str(found.get("StudyInstanceUID", "")) != study:
                staged.path.unlink(missing_ok=True)
                return _failure(found, _DIFFERENT_STUDY, "not of the study in the URL")
        result = archive.store(staged, source=source)
    except InconsistentInstance as exc:
        return _failure(None, _INCONSISTENT, exc.reason)
    except InvalidInstance as exc:
        return _failure(None, _FAILED_PROCESSING, exc.reason)
    except StorageUnavailable as exc:
        return _failure(None, _OUT_OF_RESOURCES, exc.reason)
    except Exception as exc:  # a malformed part must not take the request down
        staged.path.unlink(missing_ok=True)
        log.warning("STOW-RS part could not be read: %s", exc)
        return _failure(None, _FAILED_PROCESSING, f"cannot be read: {exc}")
    outcome = result.outcome
    return {
        "ok": True,
        "sop_instance_uid": result.sop_instance_uid,
        "study_instance_uid": result.study_instance_uid,
        "sop_class_uid": result.sop_class_uid,
        "series_instance_uid": result.series_instance_uid,
        "warning": outcome is Outcome.KEPT_FIRST,
    }


def _failure(found: Dataset | None, code: int, reason: str) -> dict[str, Any]:
    log.warning("STOW-RS part refused (0x%04X): %s", code, reason)
    return {
        "ok": False,
        "code": code,
        "reason": reason,
        "sop_instance_uid": str(found.get("SOPInstanceUID", "")) if found else "",
        "sop_class_uid": str(found.get("SOPClassUID", "")) if found else "",
    }


def _stow_response(base: str, outcomes: list[dict[str, Any]]) -> Response:
    referenced, failed = [], []
    studies = set()
    for outcome in outcomes:
        item: JsonObject = {}
        if outcome["sop_class_uid"]:
            tag, element = attribute("ReferencedSOPClassUID", outcome["sop_class_uid"])
            item[tag] = element
        if outcome["sop_instance_uid"]:
            tag, element = attribute("ReferencedSOPInstanceUID", outcome["sop_instance_uid"])
            item[tag] = element
        if outcome["ok"]:
            studies.add(outcome["study_instance_uid"])
            url = (
                f"{base}/dicom-web/studies/{outcome['study_instance_uid']}/series/"
                f"{outcome['series_instance_uid']}/instances/{outcome['sop_instance_uid']}"
            )
            tag, element = attribute("RetrieveURL", url)
            item[tag] = element
            if outcome["warning"]:
                tag, element = attribute("WarningReason", 0xB000)
                item[tag] = element
            referenced.append(item)
        else:
            tag, element = attribute("FailureReason", outcome["code"])
            item[tag] = element
            failed.append(item)
    body: JsonObject = {}
    if len(studies) == 1:
        tag, element = attribute("RetrieveURL", f"{base}/dicom-web/studies/{studies.pop()}")
        body[tag] = element
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    warned = any(outcome.get("warning") for outcome in outcomes)
    status = 409 if failed and not referenced else 202 if failed or warned else 200
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON)
