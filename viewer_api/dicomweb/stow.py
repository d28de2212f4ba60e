"""STOW-RS (PS3.18 10.5): a multipart body parsed as it arrives, each part staged and
stored through the same path as C-STORE, and the answer per instance."""

import logging
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydicom import dcmread
from pydicom.dataset import Dataset

from storage import (
    Archive,
    InconsistentInstance,
    InvalidInstance,
    Outcome,
    Source,
    StagedFile,
    StagingWriter,
    StorageUnavailable,
    stage_file,
)
from storage.staging import HEAD_SIZE, part10_head
from viewer_api.auth import Forbidden, principal_of
from viewer_api.config import ApiSettings
from viewer_api.dicomweb.dicomjson import JsonObject, attribute
from viewer_api.dicomweb.http import DICOM_JSON, check_uids
from viewer_api.dicomweb.multipart import PartReader, related_boundary
from viewer_api.errors import (
    RETRY_AFTER_SECONDS,
    ApiError,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from viewer_api.urls import base_url, client_address

log = logging.getLogger(__name__)


async def receive(
    archive: Archive, settings: ApiSettings, request: Request, study: str | None
) -> Response:
    """Store the instances of a STOW-RS request; raises ApiError for a request that cannot
    be read at all."""
    check_uids(StudyInstanceUID=study)
    boundary = related_boundary(request.headers.get("content-type"), part_type="application/dicom")
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
                raise PayloadTooLarge(f"the body is over PACS_STOW_MAX_MB ({settings.stow_max_mb})")
            await run_in_threadpool(reader.write, chunk)
        reader.finish()
        if sink.error:
            raise sink.error
    except BaseException:
        sink.discard()
        raise
    principal = principal_of(request)
    if principal.hospital is None and principal.role != "admin":
        raise Forbidden(f"{principal.name} belongs to no hospital, so cannot store studies")
    # The sender's hospital owns what it stores (an administrator's stores belong to none).
    source = Source(
        "stow", address=client_address(request), hospital=principal.hospital, user=principal.name
    )
    outcomes: list[dict[str, Any]] = []
    try:
        for staged in sink.staged:
            if outcomes and outcomes[-1].get("code") == _OUT_OF_RESOURCES:
                # The archive cannot store now (index or S3 down or silent, disk full): each
                # remaining part would wait as long for the same answer, past the client's
                # timeout for a large study. They are refused at once.
                found = _identity(staged)
                staged.path.unlink(missing_ok=True)
                outcomes.append(_failure(found, _OUT_OF_RESOURCES, outcomes[-1]["reason"]))
                continue
            outcomes.append(await run_in_threadpool(_store_part, archive, staged, source, study))
    finally:  # a client gone mid-way leaves no staged parts behind
        for staged in sink.staged[len(outcomes) :]:
            staged.path.unlink(missing_ok=True)
    return _stow_response(base_url(request, settings), outcomes)


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
        if len(self._head) < HEAD_SIZE:
            self._head += chunk
            if len(self._head) >= HEAD_SIZE:
                self._write_head()
            return
        self._writer.write(chunk)

    def _write_head(self) -> None:
        assert self._writer is not None
        head, self._head = self._head, self._head[:HEAD_SIZE]
        prefix = part10_head(head)
        self._bare = prefix is None
        self._writer.write(head if prefix is None else prefix)

    def end(self) -> None:
        if self._writer is None:
            return
        if len(self._head) < HEAD_SIZE:
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
                return _failure(_uids(found), _DIFFERENT_STUDY, "not of the study in the URL")
        result = archive.store(staged, source=source)
    except InconsistentInstance as exc:
        return _failure(exc.instance, _INCONSISTENT, exc.reason)
    except InvalidInstance as exc:
        return _failure(exc.instance, _FAILED_PROCESSING, exc.reason)
    except StorageUnavailable as exc:
        return _failure(exc.instance, _OUT_OF_RESOURCES, exc.reason)
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


_IDENTITY = ["SOPClassUID", "SOPInstanceUID"]


def _identity(staged: StagedFile) -> tuple[str, str] | None:
    """(SOP Class UID, SOP Instance UID) of a part refused without being stored, for the
    client to know which; None if its header cannot be read."""
    try:
        with staged.path.open("rb") as file:
            found = dcmread(file, stop_before_pixels=True, force=True, specific_tags=_IDENTITY)
        return _uids(found)
    except Exception:  # a part that cannot be read is named by nothing
        return None


def _uids(found: Dataset) -> tuple[str, str]:
    return str(found.get("SOPClassUID", "")), str(found.get("SOPInstanceUID", ""))


def _failure(identity: tuple[str, str] | None, code: int, reason: str) -> dict[str, Any]:
    """A refused part: FailedSOPSequence names it when its UIDs could be read."""
    log.warning("STOW-RS part refused (0x%04X): %s", code, reason)
    sop_class_uid, sop_instance_uid = identity or ("", "")
    return {
        "ok": False,
        "code": code,
        "reason": reason,
        "sop_instance_uid": sop_instance_uid,
        "sop_class_uid": sop_class_uid,
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
    headers = {}
    if status == 409 and any(o.get("code") == _OUT_OF_RESOURCES for o in outcomes):
        status = 503  # nothing stored because storage is down or full: worth a retry
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON, headers=headers)
