"""Audit rows as DICOM audit messages (PS3.15 Annex A.5) in RFC 5424 syslog messages.

Pure functions, no I/O: one row of ``audit_events`` becomes an ``<AuditMessage>`` (the DICOM
audit message schema, PS3.15 A.5.1), which becomes an RFC 5424 message as IHE ATNA (ITI-20)
asks (facility authpriv, MSGID ``IHE+RFC-3881``, the XML after a UTF-8 BOM), which is framed
by octet counting for TCP and TLS (RFC 5425 4.3, RFC 6587 3.4.1). ``storage.audit_forwarder``
does the sending.
"""

import base64
import ipaddress
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

FACILITY_AUTHPRIV = 10
SEVERITY_WARNING = 4
SEVERITY_NOTICE = 5
APP_NAME = "dalat-pacs"
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"
LOCAL_CODES = "99DALAT"
"""Coding scheme of our own action names, for actions without a DICOM event (HL7 99 prefix)."""
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


@dataclass(frozen=True, slots=True)
class Code:
    """A coded value of the audit schema (``csd-code``, ``codeSystemName``, ``originalText``)."""

    code: str
    meaning: str
    scheme: str = "DCM"


# Event IDs and event type codes (PS3.16 CID 400 / 401 / 402).
APPLICATION_ACTIVITY = Code("110100", "Application Activity")
DICOM_INSTANCES_ACCESSED = Code("110103", "DICOM Instances Accessed")
DICOM_INSTANCES_TRANSFERRED = Code("110104", "DICOM Instances Transferred")
DICOM_STUDY_DELETED = Code("110105", "DICOM Study Deleted")
EXPORT = Code("110106", "Export")
QUERY = Code("110112", "Query")
SECURITY_ALERT = Code("110113", "Security Alert")
USER_AUTHENTICATION = Code("110114", "User Authentication")
LOGIN = Code("110122", "Login")
LOGOUT = Code("110123", "Logout")
SOFTWARE_CONFIGURATION = Code("110131", "Software Configuration")
OBJECT_SECURITY_ATTRIBUTES_CHANGED = Code("110135", "Object Security Attributes Changed")
# Roles of active participants (CID 402).
APPLICATION = Code("110150", "Application")
DESTINATION = Code("110152", "Destination Role ID")
SOURCE = Code("110153", "Source Role ID")
# Participant object ID types.
PATIENT_NUMBER = Code("2", "Patient Number", "RFC-3881")
STUDY_INSTANCE_UID = Code("110180", "Study Instance UID")
SOP_CLASS_UID = Code("110181", "SOP Class UID")
APPLICATION_SERVER = Code("4", "Application Server", "DCM")


@dataclass(frozen=True, slots=True)
class Event:
    """How one of our actions is reported: the DICOM event, its action code (C, R, U, D, E),
    an optional event type, and the roles of the peer (``actor``) and of the archive."""

    id: Code
    action: str
    type: Code | None = None
    peer_role: Code | None = None
    archive_role: Code | None = APPLICATION


EVENTS: dict[str, Event] = {
    # action        DICOM event (PS3.15 A.5.3)       why
    # store         110104 Instances Transferred, C   a peer sent instances; we created them
    # retrieve      110104 Instances Transferred, R   we read instances and sent them (C-MOVE,
    #                                                 C-GET, WADO); 110106 Export is for data
    #                                                 leaving the security domain on media/files
    # query         110112 Query, E                   C-FIND and QIDO-RS
    # association   110114 User Authentication, E,    the calling AE title (and host) was checked
    #               type 110122 Login                 against the registered peers: accepted =
    #                                                 0, rejected = 4. 110100 Application
    #                                                 Activity is for our own start and stop
    # export        110106 Export, R                  data leaves the archive (zip, other peer)
    # ai-setting    110113 Security Alert, E,         a model switched on or off or its threshold
    #               type 110131 Software Config.      changed: a configuration change auditors
    #                                                 must see; no other event describes it
    # view          110103 Instances Accessed, R      looked at without a transfer
    # delete        110105 Study Deleted, D
    # share         110113 Security Alert, E,         who may see a study changed
    #               type 110135 Object Security Attributes Changed
    # sign-in/out   110114 User Authentication, E, type 110122 Login / 110123 Logout
    # other         110100 Application Activity, E, type: our action name (99DALAT)
    "store": Event(DICOM_INSTANCES_TRANSFERRED, "C", peer_role=SOURCE, archive_role=DESTINATION),
    "retrieve": Event(DICOM_INSTANCES_TRANSFERRED, "R", peer_role=DESTINATION, archive_role=SOURCE),
    "query": Event(QUERY, "E", peer_role=SOURCE, archive_role=DESTINATION),
    "association": Event(USER_AUTHENTICATION, "E", LOGIN),
    "export": Event(EXPORT, "R", peer_role=DESTINATION, archive_role=SOURCE),
    "ai-setting": Event(SECURITY_ALERT, "E", SOFTWARE_CONFIGURATION),
    "view": Event(DICOM_INSTANCES_ACCESSED, "R"),
    "delete": Event(DICOM_STUDY_DELETED, "D"),
    "share": Event(SECURITY_ALERT, "E", OBJECT_SECURITY_ATTRIBUTES_CHANGED),
    "sign-in": Event(USER_AUTHENTICATION, "E", LOGIN),
    "sign-out": Event(USER_AUTHENTICATION, "E", LOGOUT),
}

SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"
_SUCCESSES = frozenset({"success", "accepted", "started", "completed", "ok"})
_REFUSALS = frozenset({"refused", "rejected", "denied", "forbidden", "not-found", "partial"})
"""Refused by policy or partly done: a minor failure (4). Anything else failed seriously (8)."""


@dataclass(frozen=True, slots=True)
class AuditSource:
    """This archive as the audit source and as an active participant."""

    source_id: str
    """AuditSourceID: which archive node reports (``DALAT@pacs-1``)."""
    hostname: str
    aet: str | None = None
    site: str | None = None
    """AuditEnterpriseSiteID when the row names no hospital."""


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One row of ``audit_events``."""

    id: int
    at: datetime
    action: str
    outcome: str
    actor: str | None = None
    role: str | None = None
    """The user's role (radiologist, ...), for a person signed in over HTTP."""
    source_address: str | None = None
    hospital: str | None = None
    patient_id: str | None = None
    study_instance_uid: str | None = None
    detail: str | None = None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> "AuditRow":
        return cls(**{field.name: row[field.name] for field in fields(cls) if field.name in row})


def event_of(action: str) -> Event:
    return EVENTS.get(action) or Event(
        APPLICATION_ACTIVITY, "E", Code(action, action, LOCAL_CODES), archive_role=None
    )


def outcome_indicator(outcome: str) -> str:
    """EventOutcomeIndicator: 0 success, 4 minor failure, 8 serious failure."""
    outcome = outcome.lower()
    if outcome in _SUCCESSES:
        return SUCCESS
    return MINOR_FAILURE if outcome in _REFUSALS else SERIOUS_FAILURE


def audit_message(row: AuditRow, source: AuditSource) -> ET.Element:
    """The ``<AuditMessage>`` of `row`, elements in the schema's order."""
    event = event_of(row.action)
    message = ET.Element("AuditMessage")
    identification = _child(
        message,
        "EventIdentification",
        EventActionCode=event.action,
        EventDateTime=_xml_time(row.at),
        EventOutcomeIndicator=outcome_indicator(row.outcome),
    )
    _code(identification, "EventID", event.id)
    if event.type is not None:
        _code(identification, "EventTypeCode", event.type)
    if row.detail:
        _child(identification, "EventOutcomeDescription").text = _clean(row.detail)

    peer = _child(
        message,
        "ActiveParticipant",
        UserID=row.actor or "unknown",
        UserName=row.actor,
        UserIsRequestor="true",
        NetworkAccessPointID=row.source_address,
        NetworkAccessPointTypeCode=_access_point_type(row.source_address),
    )
    if event.peer_role is not None:
        _code(peer, "RoleIDCode", event.peer_role)
    if row.role:  # the person's role in the archive, a local code
        _code(peer, "RoleIDCode", Code(row.role, row.role, LOCAL_CODES))
    archive = _child(
        message,
        "ActiveParticipant",
        UserID=source.source_id,
        AlternativeUserID=f"AETITLES={source.aet}" if source.aet else None,
        UserIsRequestor="false",
        NetworkAccessPointID=source.hostname,
        NetworkAccessPointTypeCode=_access_point_type(source.hostname),
    )
    if event.archive_role is not None:
        _code(archive, "RoleIDCode", event.archive_role)

    audit_source = _child(
        message,
        "AuditSourceIdentification",
        AuditEnterpriseSiteID=row.hospital or source.site,
        AuditSourceID=source.source_id,
    )
    _code(audit_source, "AuditSourceTypeCode", APPLICATION_SERVER)

    if row.patient_id:
        patient = _child(
            message,
            "ParticipantObjectIdentification",
            ParticipantObjectID=row.patient_id,
            ParticipantObjectTypeCode="1",  # person
            ParticipantObjectTypeCodeRole="1",  # patient
        )
        _code(patient, "ParticipantObjectIDTypeCode", PATIENT_NUMBER)
    if row.study_instance_uid:
        study = _child(
            message,
            "ParticipantObjectIdentification",
            ParticipantObjectID=row.study_instance_uid,
            ParticipantObjectTypeCode="2",  # system object
            ParticipantObjectTypeCodeRole="3",  # report
        )
        _code(study, "ParticipantObjectIDTypeCode", STUDY_INSTANCE_UID)
    if event.id == QUERY:
        # PS3.15 A.5.3.13 wants the query: we keep its text, not its dataset, so the text
        # goes base64-encoded, under the Study Root FIND SOP class (the row keeps no root).
        query = _child(
            message,
            "ParticipantObjectIdentification",
            ParticipantObjectID=STUDY_ROOT_FIND,
            ParticipantObjectTypeCode="2",
            ParticipantObjectTypeCodeRole="24",  # query
        )
        _code(query, "ParticipantObjectIDTypeCode", SOP_CLASS_UID)
        text = (row.detail or "").encode()
        _child(query, "ParticipantObjectQuery").text = base64.b64encode(text).decode("ascii")
    return message


def audit_message_xml(row: AuditRow, source: AuditSource) -> bytes:
    """The audit message as UTF-8 XML (no declaration: UTF-8 is XML's default)."""
    xml: bytes = ET.tostring(audit_message(row, source), encoding="utf-8", xml_declaration=False)
    return xml


def syslog_message(row: AuditRow, source: AuditSource, *, procid: int | str | None = None) -> bytes:
    """The RFC 5424 message carrying `row`'s audit message, unframed (as UDP sends it)."""
    severity = SEVERITY_NOTICE if outcome_indicator(row.outcome) == SUCCESS else SEVERITY_WARNING
    header = " ".join(
        (
            f"<{FACILITY_AUTHPRIV * 8 + severity}>1",
            _syslog_time(row.at),
            _header_field(source.hostname, 255),
            APP_NAME,
            _header_field(str(os.getpid() if procid is None else procid), 128),
            MSGID,
            "-",  # no STRUCTURED-DATA
        )
    )
    return header.encode("ascii") + b" " + BOM + audit_message_xml(row, source)


def octet_frame(message: bytes) -> bytes:
    """RFC 5425 / RFC 6587 octet counting: the length in bytes, a space, the message."""
    return b"%d %s" % (len(message), message)


# -- helpers ------------------------------------------------------------------------------

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Characters XML 1.0 cannot carry at all (escaping does not help): NUL, other controls."""


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _child(parent: ET.Element, tag: str, **attributes: str | None) -> ET.Element:
    kept = {name: _clean(value) for name, value in attributes.items() if value is not None}
    return ET.SubElement(parent, tag, kept)


def _code(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return _child(
        parent,
        tag,
        **{"csd-code": code.code, "codeSystemName": code.scheme},
        originalText=code.meaning,
    )


def _access_point_type(address: str | None) -> str | None:
    """NetworkAccessPointTypeCode: 2 for an IP address, 1 for a machine name."""
    if not address:
        return None
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return "1"
    return "2"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _xml_time(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _syslog_time(moment: datetime) -> str:
    """RFC 5424 TIMESTAMP (RFC 3339, at most six fractional digits): the event's time."""
    return _xml_time(moment)


def _header_field(value: str, limit: int) -> str:
    """A header field as RFC 5424 allows: printable US-ASCII, no spaces, bounded, else ``-``."""
    kept = "".join(c for c in value if "!" <= c <= "~")[:limit]
    return kept or "-"
