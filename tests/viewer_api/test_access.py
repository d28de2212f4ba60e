"""Who sees what over HTTP: sign-in, tokens refused for every reason, hospitals as tenants
(someone else's study is a 404 on every endpoint, generated from the OpenAPI schema so a
new endpoint cannot be missed), shares that expire and are revoked, capability links, roles,
rate limits; and every access leaves its audit row."""

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydicom.dataset import Dataset

from storage import Archive, Source, stage_file
from storage.users import set_active, set_password
from tests import factories
from tests.auth import PASSWORD, SECRET, ensure_user
from tests.conftest import audit_row
from tests.viewer_api.conftest import Web, serve
from viewer_api.auth import TokenIssuer

A, B = "BV-DALAT", "BV-BAOLOC"


@dataclass
class Site:
    web: Web
    a: Dataset
    """A study of hospital A (a CT slice)."""
    b: Dataset
    """A study of hospital B."""
    users: dict[str, dict[str, str]]
    """Authorization headers: rad-a, tech-b, ref-b, auditor, reader (a province-wide
    radiologist of no hospital), admin."""

    def get(self, who: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.web.url}{path}", headers=self.users[who], **kwargs)

    def post(
        self, who: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = self.users[who] | (headers or {})
        return httpx.post(f"{self.web.url}{path}", headers=headers, **kwargs)

    def delete(self, who: str, path: str) -> httpx.Response:
        return httpx.delete(f"{self.web.url}{path}", headers=self.users[who])

    def studies(self, who: str) -> set[str]:
        found = self.get(who, "/dicom-web/studies")
        assert found.status_code == 200, found.text
        return {s["0020000D"]["Value"][0] for s in found.json()}


def _store(archive: Archive, ds: Dataset, folder: Path, hospital: str) -> None:
    path = factories.write(ds, folder)
    source = Source("dimse", aet=f"CT-{hospital[-3:]}", hospital=hospital)
    archive.store(stage_file(path, archive.staging_dir), source=source)


@pytest.fixture
def site(archive: Archive, tmp_path: Path) -> Iterator[Site]:
    a = factories.image(name="Nguyễn^Văn An", patient_id="PA")
    b = factories.image(name="Trần^Thị Bình", patient_id="PB")
    _store(archive, a, tmp_path / "a", A)
    _store(archive, b, tmp_path / "b", B)
    users = {
        "rad-a": ensure_user(archive, "rad-a", "radiologist", A),
        "tech-b": ensure_user(archive, "tech-b", "technologist", B),
        "ref-b": ensure_user(archive, "ref-b", "referring", B),
        "auditor": ensure_user(archive, "auditor", "auditor", None),
        "reader": ensure_user(archive, "reader", "radiologist", None),
    }
    with serve(archive) as web:
        users["admin"] = ensure_user(archive)
        yield Site(web, a, b, users)


# -- signing in -------------------------------------------------------------------------


def test_sign_in_gives_a_token_that_opens_the_api(site: Site) -> None:
    answer = httpx.post(
        f"{site.web.url}/auth/token",
        data={"grant_type": "password", "username": "rad-a", "password": PASSWORD},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer"  # noqa: S105 (a token type, not a password)
    assert 8 * 3600 - 60 < body["expires_in"] <= 8 * 3600
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    me = httpx.get(f"{site.web.url}/auth/me", headers=headers).json()
    assert (me["name"], me["role"], me["hospital"]) == ("rad-a", "radiologist", A)
    assert httpx.get(f"{site.web.url}/dicom-web/studies", headers=headers).status_code == 200
    audit_row(site.web.archive, action="sign-in", actor="rad-a", outcome="success")


def test_a_wrong_password_is_refused_and_audited(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    answer = httpx.post(
        f"{site.web.url}/auth/token", data={"username": "rad-a", "password": "not it at all"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    assert "not it at all" not in answer.text
    assert "Failed sign-in as 'rad-a'" in caplog.text
    assert "not it at all" not in caplog.text
    row = audit_row(site.web.archive, action="sign-in", actor="rad-a", outcome="failure")
    assert row.source_address == "127.0.0.1"


def test_without_a_token_patient_data_is_refused(site: Site) -> None:
    for path in ("/dicom-web/studies", "/wado", "/api/ai/jobs", "/api/audit", "/metrics"):
        answer = httpx.get(f"{site.web.url}{path}")
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(f"{site.web.url}/health").status_code == 200


def _forge(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    now = int(time.time())
    base = {"iss": "dalat-pacs", "aud": "dalat-pacs", "sub": "rad-a", "role": "radiologist"}
    base |= {"hospital": A, "iat": now, "exp": now + 600}
    return jwt.encode(base | claims, secret, algorithm=algorithm)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: _forge({})[:-4] + "AAAA", id="tampered-signature"),
        pytest.param(lambda: _tamper_claims(_forge({}), {"hospital": B}), id="tampered-claims"),
        pytest.param(lambda: _forge({"exp": int(time.time()) - 120}), id="expired"),
        pytest.param(lambda: _forge({"iss": "https://evil.example"}), id="wrong-issuer"),
        pytest.param(lambda: _forge({"aud": "another-app"}), id="wrong-audience"),
        pytest.param(lambda: _forge({}, secret="another secret " * 4), id="another-key"),
        pytest.param(lambda: _forge({"sub": "nobody"}), id="unknown-user"),
        pytest.param(lambda: _unsigned(), id="alg-none"),
        pytest.param(lambda: "not a token", id="garbage"),
    ],
)
def test_bad_tokens_are_refused(site: Site, token: Any) -> None:
    answer = httpx.get(
        f"{site.web.url}/dicom-web/studies", headers={"Authorization": f"Bearer {token()}"}
    )
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"].startswith("Bearer")
    audit_row(site.web.archive, action="sign-in", outcome="failure")


def _tamper_claims(token: str, change: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False}) | change
    body = jwt.utils.base64url_encode(jwt.api_jws.json.dumps(claims).encode()).decode()
    return f"{header}.{body}.{signature}"


def _unsigned() -> str:
    now = int(time.time())
    claims = {"iss": "dalat-pacs", "aud": "dalat-pacs", "sub": "admin", "role": "admin"}
    return jwt.encode(claims | {"iat": now, "exp": now + 600}, None, algorithm="none")


def test_a_disabled_user_loses_access_at_once(site: Site) -> None:
    assert site.get("rad-a", "/dicom-web/studies").status_code == 200
    set_active(site.web.archive, "rad-a", False, by="tests")
    time.sleep(2.1)  # the authenticator remembers an account for 2 s
    assert site.get("rad-a", "/dicom-web/studies").status_code == 401


# -- hospitals as tenants ---------------------------------------------------------------


def test_each_hospital_sees_its_own_studies(site: Site) -> None:
    a, b = site.a.StudyInstanceUID, site.b.StudyInstanceUID
    assert site.studies("rad-a") == {a}
    assert site.studies("tech-b") == {b}
    assert site.studies("ref-b") == {b}
    assert site.studies("reader") == set()  # no hospital: only what is assigned
    assert site.studies("admin") == {a, b}
    assert site.get("auditor", "/dicom-web/studies").status_code == 403
    row = audit_row(site.web.archive, action="query", actor="tech-b")
    assert (row.role, row.hospital) == ("technologist", B)


def _fill(path: str, ds: Dataset) -> str:
    values = {
        "study": ds.StudyInstanceUID,
        "series": ds.SeriesInstanceUID,
        "sop": ds.SOPInstanceUID,
        "instance": ds.SOPInstanceUID,
        "frames": "1",
        "frame": "1",
        "tag": "7FE00010",
        "grant_id": "1",
        "link_id": "1",
        "n": "1",
    }
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)


PUBLIC = {"/health", "/auth/token", "/auth/session", "/auth/signout"}
"""Endpoints without patient data, open to anyone."""
COLLECTIONS = {
    "/dicom-web/studies",
    "/dicom-web/series",
    "/dicom-web/instances",
    "/api/ai/jobs",
    "/api/audit",
    "/api/worklist",
    "/api/report-templates",
    "/api/ai/performance",
    "/metrics",
    "/auth/me",
}
"""Endpoints that answer with a list (or nothing of a study): they must not name A's."""


def test_someone_elses_study_is_not_found_on_any_endpoint(site: Site) -> None:
    """Every GET of the OpenAPI schema, as B's users, on A's study: 404 (or 403 where the
    role may not use the endpoint at all), never its data; and the same request on B's own
    study is not a 404 (so the 404 comes from tenancy, not from a bad request)."""
    schema = httpx.get(f"{site.web.url}/openapi.json").json()
    checked = 0
    for path, operations in schema["paths"].items():
        for method in operations:
            if path in PUBLIC:
                continue
            if method != "get":
                assert path in WRITES, f"classify the new endpoint {method.upper()} {path}"
                continue
            if path in COLLECTIONS or operations[method]["summary"].startswith("QIDO-RS"):
                for who in ("tech-b", "ref-b"):  # a search finds nothing of A's
                    answer = site.get(who, _fill(path, site.a))
                    assert answer.status_code in (200, 403), (who, path, answer.status_code)
                    assert site.a.SOPInstanceUID not in answer.text, (who, path)
                    assert site.a.SeriesInstanceUID not in answer.text, (who, path)
                    if "{study}" not in path:
                        assert site.a.StudyInstanceUID not in answer.text, (who, path)
                continue
            assert "{study}" in path or path == "/wado", f"classify the new endpoint GET {path}"
            params = {}
            if path == "/wado":
                params = {
                    "requestType": "WADO",
                    "studyUID": site.a.StudyInstanceUID,
                    "seriesUID": site.a.SeriesInstanceUID,
                    "objectUID": site.a.SOPInstanceUID,
                }
            for who in ("tech-b", "ref-b"):
                answer = site.get(who, _fill(path, site.a), params=params, timeout=30)
                assert answer.status_code in (403, 404), (who, path, answer.status_code)
                assert site.a.PatientID not in answer.text
            own = {k: v.replace(site.a.StudyInstanceUID, site.b.StudyInstanceUID)
                   .replace(site.a.SeriesInstanceUID, site.b.SeriesInstanceUID)
                   .replace(site.a.SOPInstanceUID, site.b.SOPInstanceUID)
                   for k, v in params.items()}  # fmt: skip
            if "/report/versions/" in path:  # B's study has no report: 404 is right
                checked += 1
                continue
            answer = site.get("tech-b", _fill(path, site.b), params=own, timeout=30)
            assert answer.status_code != 404, (path, answer.text)
            checked += 1
    assert checked >= 15  # the WADO-RS family, rendered, thumbnails, bulk data, WADO-URI


WRITES = {
    "/dicom-web/studies",
    "/dicom-web/studies/{study}",
    "/api/studies/{study}/shares",
    "/api/shares/{grant_id}",
    "/api/links",
    "/api/links/{link_id}",
    "/api/worklist/{study}/claim",
    "/api/studies/{study}/priors/{other}",
    "/api/studies/{study}/report/draft",
    "/api/studies/{study}/report/sign",
    "/api/ai/jobs/{job}/review",
}
"""Endpoints that change something; each has its own test below (priors: test_priors;
reports and AI reviews: test_reports)."""


def test_a_hospital_cannot_add_to_or_share_anothers_study(site: Site, tmp_path: Path) -> None:
    a = site.a.StudyInstanceUID
    intruder = factories.image(patient_id="PA", study_uid=a)
    body, content_type = _stow_body(factories.write(intruder, tmp_path / "x"))
    stored = site.post("tech-b", "/dicom-web/studies", content=body, headers=content_type)
    assert stored.status_code == 409, stored.text
    assert site.studies("admin") == {a, site.b.StudyInstanceUID}
    assert len(httpx.get(
        f"{site.web.url}/dicom-web/studies/{a}/instances", headers=site.users["admin"]
    ).json()) == 1  # fmt: skip
    until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    b = site.b.StudyInstanceUID
    assert site.post("tech-b", f"/api/worklist/{b}/claim").status_code == 403  # reads nothing
    assert site.post("rad-a", f"/api/worklist/{b}/claim").status_code == 404
    assert site.delete("rad-a", f"/api/worklist/{b}/claim").status_code == 404
    assert site.post("rad-a", f"/api/studies/{a}/priors/{b}").status_code == 404
    assert site.delete("rad-a", f"/api/studies/{a}/priors/{b}").status_code == 404
    shared = site.post("tech-b", f"/api/studies/{a}/shares", json={"hospital": B})
    assert shared.status_code == 404
    linked = site.post(
        "tech-b", "/api/links", json={"studies": [a], "label": "x", "expires_at": until}
    )
    assert linked.status_code == 404
    assert site.get("tech-b", f"/api/studies/{a}/shares").status_code == 404
    assert (
        site.post(
            "ref-b", f"/api/studies/{site.b.StudyInstanceUID}/shares", json={"hospital": A}
        ).status_code
        == 403
    )


def _stow_body(path: Path) -> tuple[bytes, dict[str, str]]:
    boundary = "dalat-boundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    header = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return body, {"Content-Type": header}


def test_stow_belongs_to_the_senders_hospital(site: Site, tmp_path: Path) -> None:
    new = factories.image(patient_id="PB2")
    body, content_type = _stow_body(factories.write(new, tmp_path / "new"))
    stored = site.post("tech-b", "/dicom-web/studies", content=body, headers=content_type)
    assert stored.status_code == 200, stored.text
    assert new.StudyInstanceUID in site.studies("tech-b")
    assert new.StudyInstanceUID not in site.studies("rad-a")
    assert (
        site.post("ref-b", "/dicom-web/studies", content=body, headers=content_type).status_code
        == 403
    )
    row = audit_row(site.web.archive, action="store", actor="tech-b")
    assert row.hospital == B


# -- sharing ----------------------------------------------------------------------------


def test_a_share_opens_a_study_until_it_is_revoked(site: Site) -> None:
    a = site.a.StudyInstanceUID
    assert a not in site.studies("ref-b")
    shared = site.post("rad-a", f"/api/studies/{a}/shares", json={"hospital": B})
    assert shared.status_code == 201, shared.text
    assert a in site.studies("ref-b")
    assert site.get("ref-b", f"/dicom-web/studies/{a}/metadata").status_code == 200
    row = audit_row(site.web.archive, action="share", actor="rad-a", study_instance_uid=a)
    assert B in row.detail
    listed = site.get("rad-a", f"/api/studies/{a}/shares").json()
    assert [(g["hospital"], g["revoked_at"]) for g in listed] == [(B, None)]
    assert site.delete("tech-b", f"/api/shares/{shared.json()['id']}").status_code == 404
    assert site.delete("rad-a", f"/api/shares/{shared.json()['id']}").status_code == 204
    assert a not in site.studies("ref-b")
    assert site.get("ref-b", f"/dicom-web/studies/{a}/metadata").status_code == 404


def test_a_share_with_a_user_expires(site: Site) -> None:
    a = site.a.StudyInstanceUID
    until = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    shared = site.post(
        "rad-a", f"/api/studies/{a}/shares", json={"user": "ref-b", "expires_at": until}
    )
    assert shared.status_code == 201, shared.text
    assert a in site.studies("ref-b")
    assert a not in site.studies("tech-b")  # the user, not the hospital
    time.sleep(2.5)
    assert a not in site.studies("ref-b")
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    late = site.post(
        "rad-a", f"/api/studies/{a}/shares", json={"user": "ref-b", "expires_at": past}
    )
    assert late.status_code == 400


def test_a_reading_assignment_and_a_whole_patient_share(site: Site, tmp_path: Path) -> None:
    a = site.a.StudyInstanceUID
    assigned = site.post(
        "admin", f"/api/studies/{a}/shares", json={"user": "reader", "purpose": "reading"}
    )
    assert assigned.status_code == 201, assigned.text
    assert site.studies("reader") == {a}
    wrong = site.post(
        "admin", f"/api/studies/{a}/shares", json={"user": "ref-b", "purpose": "reading"}
    )
    assert wrong.status_code == 400  # a referring physician does not read
    later = factories.image(name="Nguyễn^Văn An", patient_id="PA")  # A's patient, a new study
    _store(site.web.archive, later, tmp_path / "later", A)
    site.post("rad-a", f"/api/studies/{a}/shares", json={"hospital": B, "whole_patient": True})
    assert {a, later.StudyInstanceUID} <= site.studies("tech-b")


def test_an_id_beyond_the_databases_integers_is_refused(site: Site) -> None:
    for path in ("/api/shares", "/api/links"):
        assert site.delete("rad-a", f"{path}/{2**63}").status_code == 422  # not a 500
        assert site.delete("rad-a", f"{path}/{2**63 - 1}").status_code == 404


# -- capability links -------------------------------------------------------------------


def test_a_link_opens_its_studies_read_only_until_revoked(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = site.a.StudyInstanceUID
    until = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    made = site.post(
        "rad-a", "/api/links", json={"studies": [a], "label": "Dr Lê, Chợ Rẫy", "expires_at": until}
    )
    assert made.status_code == 201, made.text
    link = made.json()
    assert link["url"].endswith(f"/share/{link['token']}")
    holder = {"Authorization": f"Bearer {link['token']}"}
    found = httpx.get(f"{site.web.url}/dicom-web/studies", headers=holder).json()
    assert [s["0020000D"]["Value"][0] for s in found] == [a]  # that study, nothing else
    body, content_type = _stow_body(factories.write(factories.image(), tmp_path / "s"))
    refused = httpx.post(
        f"{site.web.url}/dicom-web/studies", content=body, headers=holder | content_type
    )
    assert refused.status_code == 403
    # In a browser: the link signs the viewer in, on the link's studies.
    opened = httpx.get(link["url"], follow_redirects=False)
    assert opened.status_code == 303
    assert opened.headers["location"] == f"/viewer?StudyInstanceUIDs={a}"
    cookie = opened.cookies["pacs_session"]
    assert "httponly" in opened.headers["set-cookie"].lower()
    assert "samesite=strict" in opened.headers["set-cookie"].lower()
    browser = {"Cookie": f"pacs_session={cookie}"}
    metadata = httpx.get(f"{site.web.url}/dicom-web/studies/{a}/metadata", headers=browser)
    assert metadata.status_code == 200
    row = audit_row(site.web.archive, action="retrieve", actor=f"link:{link['id']}")
    assert row.role == "link"
    assert site.delete("tech-b", f"/api/links/{link['id']}").status_code == 404
    assert site.delete("rad-a", f"/api/links/{link['id']}").status_code == 204
    assert httpx.get(f"{site.web.url}/dicom-web/studies", headers=holder).status_code == 401
    assert httpx.get(f"{site.web.url}/dicom-web/studies", headers=browser).status_code == 401
    assert httpx.get(link["url"]).status_code == 404
    assert link["token"] not in caplog.text  # a credential: never logged


# -- roles and limits -------------------------------------------------------------------


def test_only_auditors_read_the_audit_trail(site: Site) -> None:
    assert site.get("auditor", "/api/audit").status_code == 200
    assert site.get("admin", "/api/audit").status_code == 200
    for who in ("rad-a", "tech-b", "ref-b"):
        assert site.get(who, "/api/audit").status_code == 403
    assert site.get("rad-a", "/metrics").status_code == 403


def test_requests_and_sign_ins_are_rate_limited(archive: Archive) -> None:
    headers = ensure_user(archive, "busy", "radiologist", A)
    with serve(archive, rate_limit="5/minute", sign_in_rate_limit="3/minute") as web:
        answers = [httpx.get(f"{web.url}/dicom-web/studies", headers=headers) for _ in range(6)]
        assert [a.status_code for a in answers] == [200] * 5 + [429]
        assert 1 <= int(answers[-1].headers["retry-after"]) <= 61
        tries = [
            httpx.post(f"{web.url}/auth/token", data={"username": "x", "password": "y" * 12})
            for _ in range(4)
        ]
        assert [t.status_code for t in tries] == [400, 400, 400, 429]
        # The right password does not help once the address is over its limit.
        right = httpx.post(f"{web.url}/auth/token", data={"username": "busy", "password": PASSWORD})
        assert right.status_code == 429


def test_a_token_of_ours_is_valid_on_every_node(archive: Archive) -> None:
    """Without PACS_TOKEN_SECRET the key is made once and kept in the index: two API
    processes over one index accept each other's tokens."""
    ensure_user(archive, "rad-a", "radiologist", A)
    with serve(archive, token_secret=None) as one, serve(archive, token_secret=None) as two:
        token = httpx.post(
            f"{one.url}/auth/token", data={"username": "rad-a", "password": PASSWORD}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{two.url}/dicom-web/studies", headers=headers).status_code == 200
        forged = TokenIssuer(SECRET.encode(), hours=1).issue("rad-a", "radiologist", A)[0]
        forged_headers = {"Authorization": f"Bearer {forged}"}
        assert httpx.get(f"{two.url}/dicom-web/studies", headers=forged_headers).status_code == 401


def test_prometheus_reads_metrics_with_its_own_token(archive: Archive) -> None:
    scraper = "a-long-random-token-for-prometheus-only-0123"
    with serve(archive, metrics_token=scraper) as web:
        ok = httpx.get(f"{web.url}/metrics", headers={"Authorization": f"Bearer {scraper}"})
        assert ok.status_code == 200
        assert "pacs_" in ok.text or "python_" in ok.text
        wrong = httpx.get(f"{web.url}/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        # The scraper's token opens nothing else.
        other = httpx.get(f"{web.dicomweb}/studies", headers={"Authorization": f"Bearer {scraper}"})
        assert other.status_code == 401


def test_nodes_share_their_rate_limits_through_redis(archive: Archive) -> None:
    """With PACS_RATE_LIMIT_STORAGE=redis://, a user's requests are counted across nodes."""
    name = f"busy-{uuid.uuid4().hex[:8]}"  # Redis outlives the test: a name of its own
    headers = ensure_user(archive, name, "radiologist", A)
    shared = {"rate_limit": "4/minute", "rate_limit_storage": "redis://127.0.0.1:6379"}
    with serve(archive, **shared) as one, serve(archive, **shared) as two:
        codes = [
            httpx.get(f"{web.url}/dicom-web/studies", headers=headers).status_code
            for web in (one, two, one, two, one)
        ]
    assert codes == [200, 200, 200, 200, 429]


def test_naming_anothers_patient_opens_nothing_of_theirs(site: Site, tmp_path: Path) -> None:
    """The review's attack: B sends an instance naming A's issuer and patient ID, then
    shares "the whole patient": B's instance gets a patient record of B's own, so neither
    A's demographics nor A's studies come through."""
    bait = factories.image(patient_id="PA", name="Bait^Patient")
    bait.IssuerOfPatientID = A  # the issuer A's instances were filed under
    body, content_type = _stow_body(factories.write(bait, tmp_path / "bait"))
    assert (
        site.post("tech-b", "/dicom-web/studies", content=body, headers=content_type).status_code
        == 200
    )
    found = site.get(
        "tech-b", "/dicom-web/studies", params={"PatientID": "PA", "includefield": "all"}
    )
    assert "Nguyễn" not in found.text
    assert [s["0020000D"]["Value"][0] for s in found.json()] == [bait.StudyInstanceUID]
    shared = site.post(
        "tech-b", f"/api/studies/{bait.StudyInstanceUID}/shares",
        json={"hospital": B, "whole_patient": True},
    )  # fmt: skip
    assert shared.status_code == 201
    assert site.a.StudyInstanceUID not in site.studies("tech-b")
    # A's own whole-patient share is neither listed to B nor revocable by B.
    a_share = site.post(
        "rad-a", f"/api/studies/{site.a.StudyInstanceUID}/shares",
        json={"user": "reader", "whole_patient": True},
    ).json()["id"]  # fmt: skip
    listed = site.get("tech-b", f"/api/studies/{bait.StudyInstanceUID}/shares").json()
    assert a_share not in [g["id"] for g in listed]
    assert site.delete("tech-b", f"/api/shares/{a_share}").status_code == 404


def test_a_user_of_no_hospital_cannot_store(site: Site, tmp_path: Path) -> None:
    body, content_type = _stow_body(factories.write(factories.image(), tmp_path / "x"))
    refused = site.post("reader", "/dicom-web/studies", content=body, headers=content_type)
    assert refused.status_code == 403


def test_another_sites_form_cannot_sign_a_browser_in(site: Site) -> None:
    form = {"username": "rad-a", "password": PASSWORD, "next": "/"}
    cross = httpx.post(
        f"{site.web.url}/auth/session", data=form, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status_code == 403
    assert "pacs_session" not in cross.cookies
    own = httpx.post(
        f"{site.web.url}/auth/session", data=form, headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert own.status_code == 303
    assert "pacs_session" in own.cookies


def test_guesses_past_the_limit_leave_no_audit_row_each(archive: Archive) -> None:
    from sqlalchemy import func, select

    from storage.index.tables import AuditEvent

    with serve(archive, sign_in_rate_limit="3/minute") as web:
        codes = [
            httpx.get(
                f"{web.dicomweb}/studies", headers={"Authorization": f"Bearer junk{n}"}
            ).status_code
            for n in range(10)
        ]
        links = [httpx.get(f"{web.url}/share/pacs-link-guess{n}").status_code for n in range(3)]
    assert codes == [401] * 3 + [429] * 7
    assert links == [429] * 3
    time.sleep(0.3)  # audit rows of refusals are committed in the next batch
    with archive.read() as conn:
        rows = conn.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "sign-in")
        )
    assert rows == 3


def test_signing_out_or_a_new_password_ends_every_session(site: Site) -> None:
    def token() -> dict[str, str]:
        answer = httpx.post(
            f"{site.web.url}/auth/token", data={"username": "rad-a", "password": PASSWORD}
        )
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def studies(headers: dict[str, str]) -> int:
        return httpx.get(f"{site.web.dicomweb}/studies", headers=headers).status_code

    laptop, workstation = token(), token()
    assert studies(laptop) == studies(workstation) == 200
    out = httpx.post(f"{site.web.url}/auth/signout", headers=laptop, follow_redirects=False)
    assert out.status_code == 303
    time.sleep(2.1)  # the authenticator remembers an account for 2 s
    assert studies(laptop) == studies(workstation) == 401
    again = token()
    assert studies(again) == 200
    set_password(site.web.archive, "rad-a", PASSWORD, by="tests")
    time.sleep(2.1)
    assert studies(again) == 401
    row = audit_row(site.web.archive, action="sign-out", actor="rad-a")
    assert row.source_address == "127.0.0.1"
