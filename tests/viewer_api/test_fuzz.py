"""Schemathesis fuzzes the live API from its own OpenAPI schema: no request, valid or not,
from an administrator, from a hospital's user, from nobody or with a forged token, gets a
5xx; and every endpoint that is not public refuses those without a valid token (401, or
429 once an address has sent too many bad ones).

Each operation gets cases that fit the schema, cases that break it, and cases on UIDs that
exist (so that retrieval, rendering and frames run for real). The DICOMweb resources read
parameters the schema does not declare (QIDO-RS keys, ``window``, WADO-URI's ``objectUID``),
so their cases also carry one or two of those, and an Accept header. Responses are checked
for their status only: the schema does not describe the DICOMweb answers
(application/dicom+json, multipart/related), so checking conformance would only report that."""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error

from storage import Archive, Source, stage_file
from tests import factories
from tests.auth import ADMIN_HEADERS, ensure_user
from tests.reliability.figures import ONE_AT_A_TIME, figures_of, sized
from tests.viewer_api.conftest import Web, serve

Operation = APIOperation[Any, Any, Any, Any]

# One backend is enough: the schema and the handlers are the same over both.
pytestmark = [
    ONE_AT_A_TIME,
    pytest.mark.parametrize("storage_settings", ["embedded"], indirect=True),
]

EXAMPLES = sized(25, 100)
"""Cases per operation and caller (and as many again while shrinking a failure): 25 in CI,
100 in the reliability suite's full run (PACS_RELIABILITY=full)."""

PUBLIC = {"/health", "/auth/token", "/auth/session", "/auth/signout"}
"""Operations without patient data, open to anyone."""

A, B = "BV-DALAT", "BV-BAOLOC"

_NUMBERS = ("0", "1", "-1", "-0", "1.5", "²", "٣", "9" * 20, "9" * 5000)


def _values(*samples: str) -> st.SearchStrategy[str]:
    """Values a parameter may take badly, or any text."""
    return st.sampled_from(samples) | st.text(max_size=16)


_QIDO = {
    "PatientName": _values("Nguy*", "*", "?", "\\", "\x00"),
    "00100020": _values("PB", "P*"),
    "StudyDate": _values("20261120-", "-", "20261301", "99999999"),
    "StudyTime": _values("10-11", "256060", "1030.5"),
    "SeriesNumber": _values(*_NUMBERS),
    "PatientWeight": _values("1e400", "nan", "-inf", "1,2"),
    "ModalitiesInStudy": _values("CT\\MR", "CT,MR", ","),
    "StudyInstanceUID": _values("1.2.3\\1.2.4", "1..2", "1" * 65),
    "includefield": _values("all", "00100010,StudyDescription", "NoSuchKeyword", "7FE00010"),
    "fuzzymatching": _values("true", "false"),
    "limit": _values(*_NUMBERS),
    "offset": _values(*_NUMBERS),
}
"""QIDO-RS keys and controls (PS3.18 8.3.4)."""
_RENDERING = {
    "window": _values("40,400", "40,400,sigmoid", "nan,400", "40,inf", "1e308,1e-308", "40,0"),
    "viewport": _values("64,64", "0,1", "4097,1", "²,1", "9" * 5000 + ",1"),
    "quality": _values(*_NUMBERS),
}
"""Rendered images and thumbnails (PS3.18 8.3.5)."""


def _some_of(params: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[dict[str, str]]:
    """One or two of `params`: more would mostly be refused for the first bad one."""
    chosen = st.lists(st.sampled_from(sorted(params)), min_size=1, max_size=2, unique=True)
    return chosen.flatmap(lambda names: st.fixed_dictionaries({n: params[n] for n in names}))


def _wado_uri(anchors: dict[str, str]) -> st.SearchStrategy[dict[str, str]]:
    """WADO-URI's parameters (PS3.18 9), mostly naming B's stored instance."""
    required = {"requestType": _values("WADO")} | {
        param: _values(anchors[name])
        for param, name in (("studyUID", "study"), ("seriesUID", "series"), ("objectUID", "sop"))
    }
    optional = {
        "contentType": _values("application/dicom", "image/jpeg"),
        "transferSyntax": _values("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50", "1.2"),
    }
    return st.fixed_dictionaries(required, optional=optional)


def _undeclared(operation: Operation, anchors: dict[str, str]) -> st.SearchStrategy[dict[str, str]]:
    """Parameters that `operation` reads but the schema does not declare."""
    if operation.path == "/wado":
        return _wado_uri(anchors)
    if operation.path.endswith(("/rendered", "/thumbnail")):
        return _some_of(_RENDERING)
    if operation.method.upper() == "GET" and operation.path.endswith(
        ("/studies", "/series", "/instances")
    ):
        return _some_of(_QIDO)
    return st.just({})


_MEDIA_TYPES = [
    "*/*",
    "application/dicom+json",
    'multipart/related; type="application/dicom"',
    'multipart/related; type="application/dicom"; transfer-syntax=*',
    'multipart/related; type="application/octet-stream"',
    "multipart/related; type=image/jpeg",
    "image/png",
    "image/jpeg;q=0",
    "text/html",
    "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90",
]
_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_ACCEPTS = (
    st.none()
    | st.sampled_from(_MEDIA_TYPES)
    | st.text(_PRINTABLE, max_size=40).map(str.strip)  # (requests sends no leading space)
)


@dataclass
class Attempt:
    case: Case[Operation]
    query: dict[str, str]
    """Parameters the schema does not declare."""
    accept: str | None


@dataclass
class Fuzz:
    web: Web
    anchors: dict[str, str]
    """Path parameters that name B's stored instance."""
    users: dict[str, dict[str, str] | None]
    """Authorization headers: admin, tech-b (a technologist of B), nobody (none sent) and
    forger (None: what schemathesis makes up for the bearer scheme)."""


def _uid(name: str) -> str:
    return str(generate_uid(entropy_srcs=["test_fuzz", name]))


def _image(label: str, patient: str, patient_id: str) -> Dataset:
    """A CT slice with fixed UIDs and pixels, so that each run sends the same requests."""
    return factories.image(
        name=patient,
        patient_id=patient_id,
        study_uid=_uid(f"{label}-study"),
        series_uid=_uid(f"{label}-series"),
        sop_uid=_uid(f"{label}-sop"),
        seed=1,
    )


def _store(archive: Archive, ds: Dataset, folder: Path, hospital: str) -> None:
    path = factories.write(ds, folder)
    source = Source("dimse", aet=f"CT-{hospital[-3:]}", hospital=hospital)
    archive.store(stage_file(path, archive.staging_dir), source=source)


@pytest.fixture
def fuzz(archive: Archive, tmp_path: Path) -> Iterator[Fuzz]:
    a = _image("a", "Nguyễn^Văn An", "PA")
    b = _image("b", "Trần^Thị Bình", "PB")
    j2k = factories.j2k_ct(
        patient_id="PB",
        study_uid=b.StudyInstanceUID,
        series_uid=b.SeriesInstanceUID,
        sop_uid=_uid("b-j2k"),
    )
    _store(archive, a, tmp_path / "a", A)
    _store(archive, b, tmp_path / "b", B)
    _store(archive, j2k, tmp_path / "j2k", B)
    users = {
        "admin": ADMIN_HEADERS,
        "tech-b": ensure_user(archive, "tech-b", "technologist", B),
        "nobody": {},
        "forger": None,
    }
    anchors = {"study": b.StudyInstanceUID, "series": b.SeriesInstanceUID, "sop": b.SOPInstanceUID}
    with serve(archive) as web:
        yield Fuzz(web, anchors, users)


def _attempts(operation: Operation, anchors: dict[str, str]) -> st.SearchStrategy[Attempt]:
    """Cases that fit the schema, that break it, and that fit it on B's stored UIDs; with
    undeclared parameters and an Accept header on the DICOMweb resources."""
    names = set(re.findall(r"\{(\w+)\}", operation.path))
    known = {name: value for name, value in anchors.items() if name in names}
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
        operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known),
    )
    if not operation.path.startswith(("/dicom-web", "/wado")):
        return st.builds(Attempt, cases, st.just({}), st.none())
    return st.builds(Attempt, cases, _undeclared(operation, anchors), _ACCEPTS)


def _fuzz(operation: Operation, fuzz: Fuzz, who: str) -> int:
    """Fuzz one operation as `who`; raises for the first wrong answer (shrunk). The number
    of requests sent."""
    sent = 0
    headers = fuzz.users[who]
    refusals = {401} if who == "nobody" else {401, 429}  # 429: too many refused tokens

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(_attempts(operation, fuzz.anchors))
    def check(attempt: Attempt) -> None:
        nonlocal sent
        sent += 1
        case = attempt.case
        case.query.update(attempt.query)  # in the case, so that its curl command has them
        if attempt.accept is not None:
            case.headers["Accept"] = attempt.accept
        if who == "nobody":  # not even the token schemathesis makes up
            case.headers.pop("Authorization", None)
        response = case.call(headers=headers, timeout=30)
        case.validate_response(response, checks=[not_a_server_error], headers=headers)
        if who in ("nobody", "forger") and operation.path not in PUBLIC:
            # FastAPI decodes a JSON body before any dependency runs: a body that is not
            # JSON at all gets its 422 (or, not even text, its 400) before the token is
            # looked at (and learns nothing).
            undecodable = (response.status_code == 422 and "json_invalid" in response.text) or (
                response.status_code == 400 and "error parsing the body" in response.text
            )
            assert response.status_code in refusals or undecodable, (
                case.as_curl_command(),
                response.text,
            )

    check()
    return sent


@pytest.mark.parametrize("who", ["admin", "tech-b", "nobody", "forger"])
def test_no_request_gets_a_server_error(
    fuzz: Fuzz, who: str, request: pytest.FixtureRequest
) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz.web.url}/openapi.json")
    operations = [operation for methods in schema.values() for operation in methods.values()]
    assert len(operations) > 30, "the schema lost its operations"
    problems = []
    sent = 0
    for operation in operations:
        try:
            sent += _fuzz(operation, fuzz, who)
        except (AssertionError, BaseExceptionGroup, requests.RequestException) as exc:
            problems.append(f"{operation.label} as {who}: {exc}")  # and on to the next
    figures = figures_of(request.node.nodeid.split("::", 1)[-1])
    figures.record(f"operations fuzzed as {who}", len(operations))
    figures.record(f"requests sent as {who} (up to {EXAMPLES} per operation)", sent)
    figures.record(f"operations with a server error or a wrong refusal, as {who}", len(problems))
    assert not problems, "\n\n".join(problems)
