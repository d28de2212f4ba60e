"""The DICOMweb resources (PS3.18): QIDO-RS, WADO-RS, STOW-RS under ``/dicom-web``, and
WADO-URI at ``/wado``.

Queries and metadata are answered from the index (the stored header of each instance);
instances stream from the blob store part by part; frames are ranged reads of the blob.
"""

from collections.abc import Iterable
from dataclasses import replace
from itertools import chain
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydicom.dataset import Dataset

from storage import (
    Archive,
    InstanceDetails,
    Level,
    build_query,
    header_datasets,
)
from storage.transcode import can_transcode
from viewer_api.auth import (
    READERS,
    SENDERS,
    Authenticator,
    audit_request,
    principal_of,
    require,
)
from viewer_api.config import ApiSettings
from viewer_api.dicomweb.accept import (
    EXPLICIT_LE,
    NATIVE_SYNTAXES,
    accepts_json,
    frame_target,
    instance_syntax,
    rendered_media_type,
    wants_multipart,
)
from viewer_api.dicomweb.decoding import Decoder
from viewer_api.dicomweb.dicomjson import attribute, index_object
from viewer_api.dicomweb.frames import frames_of_file, parse_frame_list, read_frames
from viewer_api.dicomweb.http import DICOM_JSON, check_uids
from viewer_api.dicomweb.metadata import included_attributes, instance_metadata, retrieve_url
from viewer_api.dicomweb.multipart import (
    closing,
    multipart_type,
    new_boundary,
    part_header,
    parts_of,
)
from viewer_api.dicomweb.qido import parse_qido
from viewer_api.dicomweb.rendering import parse_options
from viewer_api.dicomweb.renditions import (
    Renditions,
    check_transcodable,
    has_pixels,
    instance_stream,
    length_header,
    ranges,
)
from viewer_api.dicomweb.stow import receive
from viewer_api.errors import BadRequest, NotAcceptable, NotFoundError
from viewer_api.urls import base_url


def dicomweb_router(
    archive: Archive,
    settings: ApiSettings,
    decoder: Decoder,
    renditions: "Renditions",
    auth: Authenticator,
) -> APIRouter:
    router = APIRouter(
        prefix="/dicom-web", tags=["DICOMweb"], dependencies=[Depends(require(auth, READERS))]
    )
    senders = [Depends(require(auth, SENDERS))]

    def audit(request: Request, action: str, detail: str, study: str | None = None) -> None:
        audit_request(archive, request, action, detail, study=study)

    # -- QIDO-RS ---------------------------------------------------------------------------

    def qido(request: Request, level: Level, **scope: str) -> Response:
        check_uids(**scope)
        if not accepts_json(request.headers.get("accept")):
            raise NotAcceptable("QIDO-RS answers in application/dicom+json")
        parsed = parse_qido(
            level,
            request.query_params.multi_items(),
            scope,
            max_results=settings.qido_max_results,
        )
        matches = archive.find(replace(parsed.query, scope=principal_of(request).scope))
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
            tag, element = attribute("RetrieveURL", retrieve_url(base, level, match.values))
            item[tag] = element
            tag, element = attribute("InstanceAvailability", "ONLINE")
            item[tag] = element
            header = extras.get(match.pk)
            if header is not None:
                item.update(included_attributes(header, parsed.include, all_=parsed.include_all))
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

    def instances(
        request: Request, study: str, series: str | None = None, sop: str | None = None
    ) -> list[Any]:
        """The instances asked for that the caller may see; else 404, as if absent."""
        check_uids(StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=sop)
        keys = {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": sop}
        scope = principal_of(request).scope
        found = archive.instance_details(build_query(Level.IMAGE, keys, scope=scope))
        if not found:
            what = "instance" if sop else "series" if series else "study"
            raise NotFoundError(f"no such {what} in the archive")
        return found

    def retrieve(
        request: Request, study: str, series: str | None = None, sop: str | None = None
    ) -> Response:
        syntax = instance_syntax(request.headers.get("accept"))
        found = instances(request, study, series, sop)
        for instance in found:
            check_transcodable(instance, syntax)
        renditions.prepare(found, syntax)
        boundary = new_boundary()
        audit(
            request,
            "retrieve",
            f"WADO-RS {len(found)} instance(s) as {syntax}",
            study=study,
        )
        return StreamingResponse(
            instance_stream(renditions, found, syntax, boundary),
            media_type=multipart_type(boundary, "application/dicom"),
            headers=length_header(found, syntax, boundary),
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
        found = instances(request, study, series, sop)
        base = base_url(request, settings)
        body = [instance_metadata(archive, instance, base) for instance in found]
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
    def retrieve_instance_metadata(request: Request, study: str, series: str, sop: str) -> Response:
        return metadata(request, study, series, sop)

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
        summary="WADO-RS: frames of an instance",
    )
    def retrieve_frames(
        request: Request, study: str, series: str, sop: str, frames: str
    ) -> Response:
        numbers = parse_frame_list(frames)
        (instance,) = instances(request, study, series, sop)
        stored = instance.transfer_syntax_uid
        part_type, syntax = frame_target(
            request.headers.get("accept"),
            stored,
            lambda target: can_transcode(stored, target, has_pixels=has_pixels(instance)),
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
        if not has_pixels(instance):
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
        images = [i for i in found if has_pixels(i)]
        if not images:
            raise NotFoundError("nothing with an image here")
        first_series = [i for i in images if i.series_instance_uid == images[0].series_instance_uid]
        return first_series[len(first_series) // 2]

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/rendered",
        summary="WADO-RS: an instance rendered (first frame)",
    )
    def instance_rendered(request: Request, study: str, series: str, sop: str) -> Response:
        (instance,) = instances(request, study, series, sop)
        return rendered(request, instance, 1, thumbnail=False)

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered",
        summary="WADO-RS: a frame rendered",
    )
    def frame_rendered(
        request: Request, study: str, series: str, sop: str, frames: str
    ) -> Response:
        (instance,) = instances(request, study, series, sop)
        return rendered(request, instance, _one_frame(frames), thumbnail=False)

    @router.get("/studies/{study}/thumbnail", summary="WADO-RS: a study's thumbnail")
    def study_thumbnail(request: Request, study: str) -> Response:
        return rendered(request, representative(instances(request, study)), 1, thumbnail=True)

    @router.get(
        "/studies/{study}/series/{series}/thumbnail", summary="WADO-RS: a series' thumbnail"
    )
    def series_thumbnail(request: Request, study: str, series: str) -> Response:
        return rendered(
            request, representative(instances(request, study, series)), 1, thumbnail=True
        )

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/thumbnail",
        summary="WADO-RS: an instance's thumbnail",
    )
    def instance_thumbnail(request: Request, study: str, series: str, sop: str) -> Response:
        (instance,) = instances(request, study, series, sop)
        return rendered(request, instance, 1, thumbnail=True)

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail",
        summary="WADO-RS: a frame's thumbnail",
    )
    def frame_thumbnail(
        request: Request, study: str, series: str, sop: str, frames: str
    ) -> Response:
        (instance,) = instances(request, study, series, sop)
        return rendered(request, instance, _one_frame(frames), thumbnail=True)

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/bulkdata/{tag}",
        summary="WADO-RS: a bulk data value of an instance",
    )
    def retrieve_bulkdata(
        request: Request, study: str, series: str, sop: str, tag: str
    ) -> Response:
        (instance,) = instances(request, study, series, sop)
        pieces: Iterable[bytes]
        if tag.upper() == "7FE00010":  # pixel data: ranged reads of the blob
            if instance.pixel_data_offset is None:
                raise NotFoundError("the instance has no pixel data")
            start = instance.pixel_data_offset
            length = instance.pixel_data_length or instance.size - start
            pieces = ranges(archive, instance.blob_key, start, length)
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

    @router.post("/studies", summary="STOW-RS: store instances", dependencies=senders)
    async def store_instances(request: Request) -> Response:
        return await receive(archive, settings, request, None)

    @router.post(
        "/studies/{study}", summary="STOW-RS: store instances of one study", dependencies=senders
    )
    async def store_study_instances(request: Request, study: str) -> Response:
        return await receive(archive, settings, request, study)

    return router


def wado_uri_router(archive: Archive, renditions: "Renditions", auth: Authenticator) -> APIRouter:
    """WADO-URI (PS3.18 9): one instance as a Part 10 file."""
    router = APIRouter(tags=["DICOMweb"], dependencies=[Depends(require(auth, READERS))])

    @router.get("/wado", summary="WADO-URI: an instance")
    def wado(request: Request) -> Response:
        params = request.query_params
        if params.get("requestType") != "WADO":
            raise BadRequest("requestType=WADO is required")
        study, series, sop = (params.get(k) for k in ("studyUID", "seriesUID", "objectUID"))
        if not (study and series and sop):
            raise BadRequest("studyUID, seriesUID and objectUID are required")
        check_uids(studyUID=study, seriesUID=series, objectUID=sop)
        content_type = params.get("contentType", "application/dicom")
        if content_type != "application/dicom":
            raise NotAcceptable(f"contentType {content_type!r} is not served; application/dicom is")
        keys = {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": sop}
        principal = principal_of(request)
        found = archive.instance_details(build_query(Level.IMAGE, keys, scope=principal.scope))
        if not found:
            raise NotFoundError("no such instance in the archive")
        instance = found[0]
        syntax = params.get("transferSyntax") or EXPLICIT_LE
        check_transcodable(instance, syntax)
        renditions.prepare([instance], syntax)
        audit_request(archive, request, "retrieve", f"WADO-URI {sop}", study=study)
        return StreamingResponse(
            renditions.stream(instance, syntax), media_type="application/dicom"
        )

    return router


def _one_frame(frames: str) -> int:
    numbers = parse_frame_list(frames)
    if len(numbers) != 1:
        raise BadRequest("one frame is rendered at a time")
    return numbers[0]
