"""Hostile input (issue 9, part 4; S6-S12 of the reliability notes) against one `pacs serve`.

The corpus of ``tests/reliability/corpus/`` (truncations, wrong VRs and lengths, deep
nesting, huge lengths, bad transfer syntaxes, polyglot preambles, bombs, bad UIDs) goes in
over the three ways in: C-STORE (raw P-DATA over a socket, so that the dataset bytes are
exactly the item's), STOW-RS and ``pacs import``. For every item the archive either stores
it, and then serves it back byte for byte (the preamble zeroed, CVE-2019-11687), its
metadata, rendering, thumbnail and frames without a server error, or refuses it with a
standard status: C-STORE 0xA900, 0xC000 or 0x0122, or a presentation context rejected
(an association aborted only where the A-ASSOCIATE-RQ itself breaks PS3.8); STOW-RS 409
with the FailureReason of each part; ``pacs import`` naming the file and the reason.
After each family the server still answers C-ECHO and /health, without a restart; its peak
resident memory stays within RSS_BOUND_MIB of what it was after ordinary work.

Then fuzzed PDUs (a valid association's bytes, mutated: bit flips, lengths, truncations,
PDU types, random PDUs, reordering) hit the DICOM port: the listener keeps serving, a
normal C-STORE works afterwards, memory stays bounded, and the log holds no traceback.

CI sends every 10th truncation and every item of the other families, and a few hundred
fuzzed PDU streams; the full run (PACS_RELIABILITY=full) sends all and several thousand.
"""

import contextlib
import itertools
import random
import re
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from storage import StorageSettings
from storage.blobs import open_blob_store
from tests import factories
from tests.auth import http
from tests.conftest import OUR_AET, SCU_AET, associate, free_port, run_pacs
from tests.reliability.corpus import FAMILIES, Item, Maker, corpus, meta_end
from tests.reliability.figures import FULL, ONE_AT_A_TIME, Figures, sized
from tests.reliability.wire import (
    COMMAND,
    IMPLICIT_LE,
    LAST,
    RELEASE_RQ,
    VERIFICATION,
    RawAssociation,
    associate_rq,
    c_echo_rq,
    c_store_rq,
    data_pdus,
    p_data,
)
from tests.servers import Server, send

pytestmark = ONE_AT_A_TIME

SETTINGS = {
    "PACS_ACCEPT_DEFLATED": "true",  # off by default; on, the inflate cap is what is tested
    "PACS_INFLATE_LIMIT_MB": "64",
    "PACS_DECODE_MEMORY_MB": "512",  # the cap each pixel worker runs under
    "PACS_DECODE_WORKERS": "1",
    # Few association slots: one held after its connection is gone (as they once were, for
    # the ACSE timeout, after a garbage first PDU) shows within a few hundred fuzzed streams.
    "PACS_MAX_ASSOCIATIONS": "24",
}
RSS_BOUND_MIB = 128
"""How much the server's peak resident memory may grow over the whole corpus. Nothing in
the corpus needs memory in proportion to what it declares: datasets are streamed to disk,
a deflated one is inflated 1 MiB at a time up to PACS_INFLATE_LIMIT_MB, pixel data is
decoded only in worker processes under their own cap (not counted here). What remains is
the parse of headers (a few MiB at most) and the allocator's fragmentation; 128 MiB is
well above that and far below what one unbounded 1 GiB bomb or 4 GiB length would cost."""

C_STORE_REFUSALS = {0xA900, 0xC000, 0x0122}
"""Data set does not match SOP class, cannot understand, SOP class not supported."""
REJECTED_CONTEXTS = {3, 4}
"""Abstract syntax, transfer syntax not supported (PS3.8 9.3.3.2)."""
STOW_FAILURES = {0xA900, 0xC000, 0x0122}
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass
class Outcome:
    item: Item
    channel: str
    stored: bool = False
    status: str = ""
    """What the channel answered: 0xC000, context rejected (0x04), 409 0xA900, rejected..."""
    reason: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass
class Hostile:
    server: Server
    root: Path
    baseline_kib: dict[int, int]
    """Each process's peak resident size (VmHWM) after the warm-up, by pid."""
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    def growth_mib(self) -> float:
        """The most any of the server's processes (serve and its DICOM listeners) grew its
        peak resident size since the warm-up. Per process: a listener's growth would hide
        under the larger peak of serve's own if only the largest were compared."""
        now = _peaks(self.server)
        return max(now[pid] - self.baseline_kib.get(pid, now[pid]) for pid in now) / 1024

    def log(self) -> str:
        assert self.server.log is not None
        return self.server.log.read_text(errors="replace")

    def check_alive(self, after: str) -> list[str]:
        """The server answers C-ECHO and /health; restarted (and counted) if it does not."""
        problems = []
        process = self.server.process
        if process is None or process.poll() is not None:
            problems.append(f"after {after}: the server died ({self._tail()})")
        else:
            try:
                health = http.get(f"{self.url}/health", timeout=30)
                if health.status_code != 200:
                    problems.append(f"after {after}: /health answered {health.status_code}")
            except httpx.HTTPError as exc:
                problems.append(f"after {after}: /health failed: {exc!r}")
            assoc = associate(self.server.dicom_port, VERIFICATION)
            if not assoc.is_established:
                problems.append(f"after {after}: no association for C-ECHO")
            else:
                status = assoc.send_c_echo().get("Status")
                assoc.release()
                if status != 0:
                    problems.append(f"after {after}: C-ECHO answered {status}")
        if problems:
            self.restarts += 1
            if process is not None and process.poll() is None:
                self.server.stop()
            self.server.start()
        return problems

    def _tail(self) -> str:
        return self.log()[-2000:]


def _peaks(server: Server) -> dict[int, int]:
    assert server.process is not None
    peaks = {}
    for pid in (server.process.pid, *server.children()):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks[pid] = int(line.split()[1])
    return peaks


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    root = tmp_path_factory.mktemp("hostile")
    server = Server(root / "archive", free_port(), free_port(), settings=SETTINGS)
    added = server.pacs(
        "remote", "add", "scu", "--aet", SCU_AET, "--host", "127.0.0.1", "--port", str(free_port())
    )
    assert added.returncode == 0, added.stderr
    server.start()
    try:
        # Ordinary work first (a C-STORE, a STOW-RS, a rendering), so that the baseline holds
        # what serving costs anyway: listeners, the pixel worker, the caches warmed.
        path = factories.write(factories.image(), root / "warm-up")
        assert send(server.dicom_port, [path]) == [0]
        ds = factories.image()
        stow = _stow(
            f"http://127.0.0.1:{server.http_port}", factories.write(ds, root / "w2").read_bytes()
        )
        assert stow.status_code == 200, stow.text
        rendered = http.get(
            f"http://127.0.0.1:{server.http_port}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
            f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/rendered",
            timeout=60,
        )
        assert rendered.status_code == 200, rendered.text
        yield Hostile(server, root, _peaks(server))
    finally:
        if server.process is not None and server.process.poll() is None:
            server.stop()


def _chosen(items: list[Item]) -> list[Item]:
    """CI: every 10th truncation and every item of the other families; full: all."""
    if FULL:
        return items
    truncations = [item for item in items if item.family == "truncation"]
    return truncations[::10] + [item for item in items if item.family != "truncation"]


def _by_family(items: list[Item]) -> Iterator[tuple[str, list[Item]]]:
    for family in FAMILIES:
        members = [item for item in items if item.family == family]
        if members:
            yield family, members


# -- checks shared by the channels -----------------------------------------------------------


def _expectation(outcome: Outcome) -> None:
    expect = outcome.item.expect
    if expect == "refused" and outcome.stored:
        outcome.problems.append("stored, but it must be refused")
    elif expect == "stored" and not outcome.stored:
        outcome.problems.append(f"refused ({outcome.status}: {outcome.reason}), but it is valid")


def _single_part(response: httpx.Response) -> bytes:
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    parts = response.content.split(f"--{boundary}".encode())[1:-1]
    assert len(parts) == 1, f"{len(parts)} parts"
    return parts[0].partition(b"\r\n\r\n")[2].removesuffix(b"\r\n")


def _find(url: str, sop_instance_uid: str) -> tuple[str, str] | None:
    """(study, series) of a stored instance, by QIDO-RS."""
    found = http.get(
        f"{url}/dicom-web/instances", params={"SOPInstanceUID": sop_instance_uid}, timeout=30
    )
    if found.status_code != 200 or not found.content:
        return None
    matches = found.json()
    if len(matches) != 1:
        return None
    return matches[0]["0020000D"]["Value"][0], matches[0]["0020000E"]["Value"][0]


def _check_stored(
    url: str, outcome: Outcome, expected: Callable[[bytes], str | None]
) -> Counter[str]:
    """The stored item is found, retrieved as sent (`expected` says what differs), and its
    metadata and pixels are served without a server error. What each request answered."""
    answers: Counter[str] = Counter()
    item = outcome.item
    where = _find(url, item.sop_instance_uid)
    if where is None:
        outcome.problems.append("acknowledged but not found by QIDO-RS")
        return answers
    instance = (
        f"{url}/dicom-web/studies/{where[0]}/series/{where[1]}/instances/{item.sop_instance_uid}"
    )
    retrieved = http.get(instance, headers={"Accept": AS_STORED}, timeout=60)
    if retrieved.status_code != 200:
        outcome.problems.append(f"WADO-RS answered {retrieved.status_code}: {retrieved.text[:200]}")
    else:
        data = _single_part(retrieved)
        if data[:128] != bytes(128) or data[128:132] != b"DICM":
            outcome.problems.append("the retrieved file has no zeroed preamble and DICM")
        elif difference := expected(data):
            outcome.problems.append(difference)
    requests: dict[str, tuple[str, str | None]] = {"metadata": (f"{instance}/metadata", None)}
    if item.pixels:
        native = 'multipart/related; type="application/octet-stream"; transfer-syntax='
        requests |= {
            "rendered": (f"{instance}/rendered", "image/jpeg"),
            "thumbnail": (f"{instance}/thumbnail", "image/jpeg"),
            "frame as stored": (f"{instance}/frames/1", native + "*"),
            "frame native": (f"{instance}/frames/1", native + ExplicitVRLittleEndian),
        }
    for name, (target, accept) in requests.items():
        headers = {"Accept": accept} if accept else {}
        try:
            answer = http.get(target, headers=headers, timeout=120)
        except httpx.HTTPError as exc:
            outcome.problems.append(f"{name}: {exc!r}")
            continue
        answers[f"{name} {answer.status_code}"] += 1
        if answer.status_code >= 500:
            outcome.problems.append(f"{name} answered {answer.status_code}: {answer.text[:200]}")
    return answers


def _same_dataset(sent: bytes) -> Callable[[bytes], str | None]:
    """The retrieved file's dataset (after its File Meta Information) is `sent`."""

    def check(data: bytes) -> str | None:
        end = meta_end(data)
        if end is None or data[end:] != sent:
            return "the retrieved dataset differs from the one sent"
        return None

    return check


def _same_file(sent: bytes) -> Callable[[bytes], str | None]:
    """The retrieved file is `sent` with its preamble zeroed (and added if it had none)."""
    if sent[128:132] == b"DICM":
        return lambda data: (
            None if data[128:] == sent[128:] else "the file changed past its preamble"
        )
    if sent[:2] == b"\x02\x00":
        return lambda data: None if data[132:] == sent else "the file changed"
    return _same_dataset(sent)


def _report(
    figures: Figures, hostile: Hostile, channel: str, outcomes: list[Outcome], answers: Counter[str]
) -> list[str]:
    """Record the channel's figures; the problems found, one line each."""
    for family, _ in _by_family([o.item for o in outcomes]):
        mine = [o for o in outcomes if o.item.family == family]
        stored = sum(o.stored for o in mine)
        refusals = Counter(o.status for o in mine if not o.stored)
        shown = ", ".join(f"{status} x{n}" for status, n in sorted(refusals.items()))
        figures.record(
            f"{channel} {family}",
            f"{len(mine)} tried: {stored} stored, {len(mine) - stored} refused ({shown})",
        )
    figures.record(f"{channel}: items tried", len(outcomes))
    figures.record(
        f"{channel}: items stored and served back identical",
        sum(o.stored and not o.problems for o in outcomes),
    )
    figures.record(
        f"{channel}: items refused with a standard status",
        sum(not o.stored and not o.problems for o in outcomes),
    )
    if answers:
        figures.record(
            f"{channel}: answers about stored items",
            ", ".join(f"{k} x{n}" for k, n in sorted(answers.items())),
        )
    problems = [f"{o.item.family} / {o.item.name}: {p}" for o in outcomes for p in o.problems]
    figures.record(
        f"{channel}: wrong answers (server errors, crashes, wrong status)", len(problems)
    )
    figures.record(f"{channel}: server restarts needed", hostile.restarts)
    figures.record(
        f"{channel}: peak RSS growth since warm-up", round(hostile.growth_mib(), 1), "MiB"
    )
    return problems


def _staging(server: Server) -> Path:
    return open_blob_store(StorageSettings(data_dir=server.data_dir, _env_file=None)).staging_dir


def _finish(hostile: Hostile, problems: list[str]) -> None:
    growth = hostile.growth_mib()
    left = sorted(path.name for path in _staging(hostile.server).iterdir())
    assert not problems, "\n".join(problems[:60])
    assert not left, f"files left in the staging folder: {left[:10]}"
    assert hostile.restarts == 0
    assert growth < RSS_BOUND_MIB, f"peak RSS grew by {growth:.0f} MiB"


# -- C-STORE ---------------------------------------------------------------------------------


def _bad_pdu(uids: tuple[str, str]) -> bool:
    """A UID that makes the A-ASSOCIATE-RQ itself invalid (PS3.8 9.3.2.2: 1 to 64 chars)."""
    return any(not uid or len(uid) > 64 for uid in uids)


def _store_family(port: int, items: list[Item]) -> list[Outcome]:
    """Each item's C-STORE on one association (one per context if a context spoils the
    negotiation); a C-ECHO and a release at the end."""
    outcomes = []
    pairs = sorted({(i.dimse.sop_class, i.dimse.transfer_syntax) for i in items if i.dimse})
    shared = RawAssociation(port, [*pairs, (VERIFICATION, IMPLICIT_LE)])
    alone: dict[tuple[str, str], RawAssociation] = {}
    for item in items:
        dimse = item.dimse
        assert dimse is not None
        pair = (dimse.sop_class, dimse.transfer_syntax)
        outcome = Outcome(item, "C-STORE")
        outcomes.append(outcome)
        assoc = shared
        if shared.outcome != "accepted":
            if pair not in alone:
                alone[pair] = RawAssociation(port, [pair])
            assoc = alone[pair]
        if assoc.outcome != "accepted":
            outcome.status = f"association {assoc.outcome}"
            if not _bad_pdu(pair):
                outcome.problems.append(f"the association ended in negotiation: {assoc.outcome}")
            continue
        if not assoc.accepted(*pair):
            result = assoc.results.get(pair)
            outcome.status = f"context rejected (0x{result or 0:02X})"
            if result not in REJECTED_CONTEXTS:
                outcome.problems.append(f"context result {result}")
            continue
        answer = assoc.store(*pair, dimse.sop_instance, dimse.dataset)
        if answer.status is None:
            outcome.status = f"no answer: {answer.ended_by}"
            outcome.problems.append(
                f"the association ended instead of answering: {answer.ended_by}"
            )
            assoc.close()
            fresh = RawAssociation(port, assoc.contexts)
            if assoc is shared:
                shared = fresh
            else:
                alone[pair] = fresh
            continue
        outcome.status, outcome.reason = f"0x{answer.status:04X}", answer.comment
        outcome.stored = answer.status == 0
        if not outcome.stored and answer.status not in C_STORE_REFUSALS:
            outcome.problems.append(f"status 0x{answer.status:04X}: {answer.comment}")
    for assoc in (shared, *alone.values()):
        if assoc.outcome == "accepted":
            if assoc is shared:
                echo = assoc.echo()
                if echo.status != 0:
                    outcomes[-1].problems.append(f"C-ECHO after the family answered {echo}")
            if not assoc.release():
                outcomes[-1].problems.append("the association was not released cleanly")
        else:
            assoc.close()
    return outcomes


def test_hostile_files_over_c_store(hostile: Hostile, figures: Figures) -> None:
    items = [item for item in _chosen(corpus("c-store")) if item.dimse is not None]
    outcomes: list[Outcome] = []
    alive: list[str] = []
    for family, members in _by_family(items):
        outcomes += _store_family(hostile.server.dicom_port, members)
        alive += hostile.check_alive(f"C-STORE of the {family} family")
    answers: Counter[str] = Counter()
    for outcome in outcomes:
        _expectation(outcome)
        if outcome.stored:
            assert outcome.item.dimse is not None
            answers += _check_stored(
                hostile.url, outcome, _same_dataset(outcome.item.dimse.dataset)
            )
    # The server log names the reason, for one refusal of each family.
    log = hostile.log()
    named = 0
    for family, _ in _by_family(items):
        refused = [
            o
            for o in outcomes
            if o.item.family == family and o.status.startswith("0x") and not o.stored
        ]
        # The Error Comment is the reason's first 64 characters, "\\" made "/".
        sample = next((o for o in refused if o.reason and "/" not in o.reason), None)
        if sample is not None:
            named += 1
            assert f"with {sample.status}: {sample.reason}" in log, sample.item.name
    assert named >= 5
    problems = alive + _report(figures, hostile, "C-STORE", outcomes, answers)
    _finish(hostile, problems)


# -- STOW-RS ---------------------------------------------------------------------------------

_BOUNDARY = "hostile-corpus-9f2c41"


def _stow(url: str, data: bytes) -> httpx.Response:
    body = (
        f"--{_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{_BOUNDARY}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={_BOUNDARY}'
    return http.post(
        f"{url}/dicom-web/studies",
        content=body,
        headers={"Content-Type": content_type},
        timeout=120,
    )


def _stow_outcome(item: Item, response: httpx.Response) -> Outcome:
    outcome = Outcome(item, "STOW-RS", status=str(response.status_code))
    if response.status_code >= 500:
        outcome.problems.append(f"HTTP {response.status_code}: {response.text[:300]}")
        return outcome
    if response.status_code in (400, 413, 415):
        outcome.reason = response.json().get("detail", "")
        if not outcome.reason:
            outcome.problems.append(f"HTTP {response.status_code} without a reason")
        return outcome
    body = response.json()
    referenced = body.get("00081199", {}).get("Value", [])
    failed = body.get("00081198", {}).get("Value", [])
    if response.status_code in (200, 202) and len(referenced) == 1 and not failed:
        outcome.stored = True
    elif response.status_code == 409 and len(failed) == 1 and not referenced:
        code = failed[0].get("00081197", {}).get("Value", [None])[0]
        outcome.status = f"409 0x{code or 0:04X}"
        if code not in STOW_FAILURES:
            outcome.problems.append(f"FailureReason {code}")
    else:
        outcome.problems.append(f"HTTP {response.status_code}: {response.text[:300]}")
    return outcome


def test_hostile_files_over_stow(hostile: Hostile, figures: Figures) -> None:
    refused_before = hostile.log().count("STOW-RS part refused (0x")
    outcomes: list[Outcome] = []
    alive: list[str] = []
    for family, members in _by_family(_chosen(corpus("stow"))):
        for item in members:
            try:
                outcomes.append(_stow_outcome(item, _stow(hostile.url, item.data)))
            except httpx.HTTPError as exc:
                outcomes.append(Outcome(item, "STOW-RS", status="no answer", problems=[repr(exc)]))
        alive += hostile.check_alive(f"STOW-RS of the {family} family")
    answers: Counter[str] = Counter()
    for outcome in outcomes:
        _expectation(outcome)
        if outcome.stored:
            answers += _check_stored(hostile.url, outcome, _same_file(outcome.item.data))
    log = hostile.log()
    refused = sum(o.status.startswith("409") for o in outcomes)
    assert log.count("STOW-RS part refused (0x") - refused_before == refused  # one line each
    assert "STOW-RS part refused (0xC000): deflated dataset inflates past the limit" in log
    problems = alive + _report(figures, hostile, "STOW-RS", outcomes, answers)
    _finish(hostile, problems)


# -- pacs import -----------------------------------------------------------------------------

_REJECTED = re.compile(r"^rejected (\S+): (.+)$", re.MULTILINE)


def test_hostile_files_through_pacs_import(hostile: Hostile, figures: Figures) -> None:
    folder = hostile.root / "import"
    items = {item.write(folder): item for item in _chosen(corpus("import"))}
    imported = run_pacs(
        "import", folder, data_dir=hostile.server.data_dir, env={**SETTINGS, "COLUMNS": "20000"}
    )
    assert imported.returncode in (0, 1), imported.stderr[-3000:]
    assert "Traceback" not in imported.stderr + imported.stdout, imported.stderr[-3000:]
    rejected = {Path(path): reason for path, reason in _REJECTED.findall(imported.stdout)}
    assert set(rejected) <= set(items), sorted(set(rejected) - set(items))[:5]
    outcomes = []
    for path, item in items.items():
        outcome = Outcome(item, "pacs import")
        if path in rejected:
            outcome.status, outcome.reason = "rejected", rejected[path].strip()
            if not outcome.reason:
                outcome.problems.append("rejected without a reason")
        else:
            outcome.stored, outcome.status = True, "stored"
        outcomes.append(outcome)
    summary = re.search(r"stored\W+(\d+)", imported.stdout)  # a table row: "│ stored │ 37 │"
    assert summary is not None, imported.stdout[-2000:]
    assert int(summary.group(1)) == sum(o.stored for o in outcomes), imported.stdout[-2000:]
    alive = hostile.check_alive("pacs import")
    answers: Counter[str] = Counter()
    for outcome in outcomes:
        _expectation(outcome)
        if outcome.stored:
            answers += _check_stored(hostile.url, outcome, _same_file(outcome.item.data))
    deflate_bomb = next(o for o in outcomes if o.item.name.startswith("deflate bomb"))
    assert "inflates past the limit" in deflate_bomb.reason
    problems = alive + _report(figures, hostile, "pacs import", outcomes, answers)
    _finish(hostile, problems)


# -- fuzzed PDUs -----------------------------------------------------------------------------


def _valid_association(salt: str) -> list[bytes]:
    """The PDUs of a good association: A-ASSOCIATE-RQ, a C-STORE (command and dataset), a
    C-ECHO, A-RELEASE-RQ."""
    whole = Maker(salt, "fuzz").file("base")
    start = meta_end(whole)
    assert start is not None
    sop = Maker(salt, "fuzz").uid("base")
    contexts: list[tuple[int, str, list[str]]] = [
        (1, CTImageStorage, [ExplicitVRLittleEndian]),
        (3, VERIFICATION, [IMPLICIT_LE]),
    ]
    return [
        associate_rq(SCU_AET, OUR_AET, contexts),
        p_data(1, COMMAND | LAST, c_store_rq(1, CTImageStorage, sop)),
        *data_pdus(1, whole[start:], 1024),
        p_data(3, COMMAND | LAST, c_echo_rq(2)),
        RELEASE_RQ,
    ]


def _flip_bits(rng: random.Random, pdus: list[bytes]) -> bytes:
    data = bytearray(b"".join(pdus))
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
    return bytes(data)


def _pdu_length(rng: random.Random, pdus: list[bytes]) -> bytes:
    index = rng.randrange(len(pdus))
    pdu = bytearray(pdus[index])
    actual = len(pdu) - 6
    choices = [0, 1, 5, actual - 1, actual + 1, actual * 2, 0x7FFFFFFF, 0xFFFFFFFF]
    length = rng.choice([*choices, rng.randrange(1 << 32)])
    pdu[2:6] = struct.pack(">I", max(0, length) & 0xFFFFFFFF)
    return b"".join([*pdus[:index], bytes(pdu), *pdus[index + 1 :]])


def _item_length(rng: random.Random, pdus: list[bytes]) -> bytes:
    """A length inside a PDU: an A-ASSOCIATE-RQ item's (2 bytes) or a PDV's (4 bytes)."""
    index = rng.randrange(len(pdus) - 1)
    pdu = bytearray(pdus[index])
    if pdu[0] == 0x01:
        offsets, position = [], 74
        while position + 4 <= len(pdu):
            offsets.append(position)
            if pdu[position] in (0x20, 0x50) and rng.random() < 0.5:
                position += 4 + (4 if pdu[position] == 0x20 else 0)  # into its sub-items
                continue
            position += 4 + struct.unpack_from(">H", pdu, position + 2)[0]
        at = rng.choice(offsets)
        value = rng.choice([0, 1, 0xFFFF, rng.randrange(1 << 16)])
        pdu[at + 2 : at + 4] = struct.pack(">H", value)
    else:
        value = rng.choice([0, 1, 2, 0xFFFFFFFF, rng.randrange(1 << 32)])
        pdu[6:10] = struct.pack(">I", value)
    return b"".join([*pdus[:index], bytes(pdu), *pdus[index + 1 :]])


def _truncated(rng: random.Random, pdus: list[bytes]) -> bytes:
    data = b"".join(pdus)
    return data[: rng.randrange(1, len(data))]


def _pdu_type(rng: random.Random, pdus: list[bytes]) -> bytes:
    index = rng.randrange(len(pdus))
    pdu = bytearray(pdus[index])
    pdu[0] = rng.randrange(256)
    return b"".join([*pdus[:index], bytes(pdu), *pdus[index + 1 :]])


def _random_pdu(rng: random.Random, pdus: list[bytes]) -> bytes:
    body = rng.randbytes(rng.randrange(0, 2048))
    pdu = struct.pack(">BBI", rng.randrange(1, 12), 0, len(body)) + body
    index = rng.randrange(len(pdus) + 1)
    return b"".join([*pdus[:index], pdu, *pdus[index:]])


def _reordered(rng: random.Random, pdus: list[bytes]) -> bytes:
    shuffled = list(pdus)
    operation = rng.randrange(3)
    if operation == 0:
        rng.shuffle(shuffled)
    elif operation == 1:
        shuffled.insert(rng.randrange(len(shuffled)), rng.choice(pdus))  # one twice
    else:
        del shuffled[rng.randrange(len(shuffled))]
    return b"".join(shuffled)


def _in_one_pdu(rng: random.Random, pdus: list[bytes]) -> bytes:
    """Random bytes over part of one PDU's body: AE titles, UIDs, the command set..."""
    index = rng.randrange(len(pdus))
    pdu = bytearray(pdus[index])
    if len(pdu) > 7:
        start = rng.randrange(6, len(pdu) - 1)
        end = min(len(pdu), start + rng.randint(1, 32))
        pdu[start:end] = rng.randbytes(end - start)
    return b"".join([*pdus[:index], bytes(pdu), *pdus[index + 1 :]])


def _noise(rng: random.Random, _pdus: list[bytes]) -> bytes:
    return rng.randbytes(rng.randint(1, 4096))


MUTATIONS: dict[str, Callable[[random.Random, list[bytes]], bytes]] = {
    "bit flips": _flip_bits,
    "PDU length": _pdu_length,
    "item or PDV length": _item_length,
    "truncation": _truncated,
    "PDU type": _pdu_type,
    "random PDU inserted": _random_pdu,
    "PDUs reordered, doubled or dropped": _reordered,
    "random bytes in one PDU": _in_one_pdu,
    "noise": _noise,
}
_HIDDEN_LENGTH = struct.pack(">BBI", 0x0A, 0, 6) + struct.pack(">BBI", 0x07, 0, 1 << 30)
"""A PDU of unknown type whose body looks like a PDU header declaring 1 GiB: a reader that
skips an unknown PDU's body takes that for the next header (and once allocated 1 GiB)."""
CRAFTED: dict[str, Callable[[list[bytes]], bytes]] = {
    "unknown PDU type first, its body a 1 GiB header": lambda pdus: _HIDDEN_LENGTH + b"".join(pdus),
    "unknown PDU type after the association, its body a 1 GiB header": lambda pdus: (
        pdus[0] + _HIDDEN_LENGTH + b"".join(pdus[1:])
    ),
    "P-DATA-TF of 0xFFFFFFFF before the association": lambda pdus: (
        struct.pack(">BBI", 0x04, 0, 0xFFFFFFFF) + bytes(4096)
    ),
    "A-ASSOCIATE-RQ of 1 GiB": lambda pdus: struct.pack(">BBI", 0x01, 0, 1 << 30) + pdus[0][6:],
}
"""Streams made on purpose, sent before the random ones (and in CI too)."""
CLOSE_WAIT = 15.0
"""Seconds the server has to close a connection once the fuzzer has sent all and closed."""
ANSWER_WAIT = 0.2
"""Seconds the fuzzer waits for an answer before it goes on (a requestor sends nothing more
until its association request, or its last request, is answered: PS3.8 9.2, PS3.7)."""


def _pdu_types(data: bytes) -> list[int]:
    """The types of the PDUs in `data` (as far as their lengths make sense)."""
    types, position = [], 0
    while position + 6 <= len(data):
        types.append(data[position])
        position += 6 + struct.unpack_from(">I", data, position + 2)[0]
    return types


def _exchange(
    port: int, data: bytes, pauses: list[int], wait: float = ANSWER_WAIT
) -> tuple[list[int], bool]:
    """Send `data`, waiting for an answer (`wait` seconds at most) at each offset in `pauses`
    (a requestor sends its next message once the last is answered, PS3.7 and PS3.8). Read
    until the server closes or falls silent, then close our side (pynetdicom takes that for
    the end of the connection): (the PDU types it answered, whether it closed within
    CLOSE_WAIT after that)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=CLOSE_WAIT) as sock:
        sock.settimeout(wait)
        try:
            for start, end in itertools.pairwise([0, *pauses, len(data)]):
                sock.sendall(data[start:end])
                with contextlib.suppress(TimeoutError):
                    if not (chunk := sock.recv(65536)):
                        return _pdu_types(received), True
                    received += chunk
            while chunk := sock.recv(65536):  # until it closes, or TimeoutError
                received = (received + chunk)[: 1 << 20]
            return _pdu_types(received), True
        except TimeoutError:
            pass
        except OSError:
            return _pdu_types(received), True  # it closed on us mid-way
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        sock.settimeout(CLOSE_WAIT)
        try:
            while chunk := sock.recv(65536):
                received = (received + chunk)[: 1 << 20]
        except TimeoutError:
            return _pdu_types(received), False
        except OSError:
            pass
        return _pdu_types(received), True


def test_fuzzed_pdus_leave_the_listener_serving(hostile: Hostile, figures: Figures) -> None:
    port = hostile.server.dicom_port
    pdus = _valid_association("fuzz")
    ends = list(itertools.accumulate(len(pdu) for pdu in pdus))
    pauses = [ends[0], ends[-3], ends[-2]]  # after the request, the C-STORE, the C-ECHO
    answered, closed = _exchange(port, b"".join(pdus), pauses, wait=10)
    # The stream the fuzzer mutates is a good one: AC, the C-STORE and C-ECHO answers, RP.
    assert (answered, closed) == ([0x02, 0x04, 0x04, 0x06], True)
    log_before = len(hostile.log())
    count = sized(300, 3000)
    seed = 20261130
    kinds = list(MUTATIONS)
    cases = [(i, kinds[i % len(kinds)]) for i in range(count)]

    def run(case: tuple[int, str]) -> tuple[str, str, bool]:
        index, kind = case
        rng = random.Random(seed + index)
        answered, closed = _exchange(port, MUTATIONS[kind](rng, pdus), pauses)
        return kind, f"0x{answered[0]:02X}" if answered else "nothing", closed

    crafted = [(name, *_exchange(port, make(pdus), pauses)) for name, make in CRAFTED.items()]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, cases))
    results += [(name, f"0x{a[0]:02X}" if a else "nothing", closed) for name, a, closed in crafted]
    alive = hostile.check_alive("the fuzzed PDUs")
    path = factories.write(factories.image(), hostile.root / "after-fuzz")
    statuses = send(port, [path])
    log = hostile.log()[log_before:]
    tracebacks = log.count("Traceback (most recent call last)")
    refusals = len(re.findall(r"ERROR +pynetdicom\.\w+: ", log))
    kept_open = sum(not closed for _, _, closed in results)
    answers = Counter(answer for _, answer, _ in results)
    figures.record("PDU streams fuzzed (seeded mutations of a valid association)", count)
    figures.record("PDU streams crafted (unknown types hiding lengths, huge lengths)", len(CRAFTED))
    for kind in kinds:
        figures.record(f"fuzzed: {kind}", sum(k == kind for k, _, _ in results))
    figures.record(
        "first PDU answered (0x02 AC, 0x03 RJ, 0x04 P-DATA, 0x07 abort)",
        ", ".join(f"{a} x{n}" for a, n in sorted(answers.items())),
    )
    figures.record(f"connections left open {CLOSE_WAIT:.0f} s after the client closed", kept_open)
    figures.record("error lines of pynetdicom (malformed PDUs, messages), no traceback", refusals)
    figures.record("tracebacks in the server log while fuzzing", tracebacks)
    figures.record("server restarts needed", hostile.restarts)
    figures.record("peak RSS growth since warm-up", round(hostile.growth_mib(), 1), "MiB")
    assert not alive, alive
    assert statuses == [0]
    assert kept_open == 0
    assert tracebacks == 0, log[log.index("Traceback") - 600 :][:4000]
    _finish(hostile, [])
