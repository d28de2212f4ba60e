"""Sends the audit trail to a syslog collector as IHE ATNA messages (``storage.atna``).

At least once, in order: rows are read after the position kept in ``audit_forwarding``
(one row per collector, shared by every node of the index), sent in batches, and the
position moves only once the batch went out. While the collector is down the rows wait and
the pause between tries grows (1 s, 2 s, 4 s ... up to 5 minutes). A lease on the position
row lets one node send at a time; another takes over when it stops renewing.

Two limits of syslog itself: TCP and TLS carry no acknowledgement (RFC 5425), so a batch
written into a connection the collector has just dropped can be lost; the forwarder checks
the connection before each batch and resends on any error (duplicates are possible, losses
are not, short of that race). UDP (RFC 5426) may lose datagrams silently: use TLS.

On PostgreSQL two transactions can commit their audit rows out of id order. A row after a
gap in the ids is held back until the gap is ``GAP_GRACE`` old (a rolled-back insert leaves
a gap for ever), so a late commit is not skipped.
"""

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import Connection, insert, or_, update
from sqlalchemy import select as sql_select
from sqlalchemy.exc import SQLAlchemyError

from storage.archive import Archive
from storage.atna import AuditRow, AuditSource, octet_frame, syslog_message
from storage.config import StorageSettings
from storage.errors import StorageError
from storage.index.tables import AuditEvent, AuditForwarding, utcnow
from storage.processes import process_identity

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"tcp": 514, "udp": 514, "tls": 6514}
BATCH = 200
MAX_BATCHES = 50
"""Batches per ``deliver_due`` call, so one call ends even while rows keep coming."""
MIN_PAUSE = 1.0
MAX_PAUSE = 300.0
GAP_GRACE = timedelta(seconds=60)
LEASE = timedelta(seconds=60)
TIMEOUT = 10.0


class SyslogTransport:
    """One collector: a kept TCP or TLS connection (octet-counted frames), or UDP datagrams."""

    def __init__(
        self,
        url: str,
        *,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise StorageError(
                f"audit syslog URL {url!r}: expected tcp://, tls:// or udp://host:port"
            )
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None
        if self.scheme == "tls":
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2  # BCP 195
            if cert_file is not None:
                context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
            self._context = context
        self._sock: socket.socket | None = None

    def send(self, messages: Sequence[bytes]) -> None:
        """Send unframed RFC 5424 messages; raises OSError (the connection is then closed)."""
        try:
            if self.scheme == "udp":
                self._send_datagrams(messages)
            else:
                self._stream().sendall(b"".join(octet_frame(m) for m in messages))
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _send_datagrams(self, messages: Sequence[bytes]) -> None:
        if self._sock is None:
            info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
            self._sock = socket.socket(info[0], socket.SOCK_DGRAM)
            self._sock.settimeout(self.timeout)
            self._sock.connect(info[4])
        for message in messages:  # RFC 5426: one message per datagram, no framing
            self._sock.send(message)

    def _stream(self) -> socket.socket:
        if self._sock is not None and self._dropped(self._sock):
            log.info("The audit collector %s:%d closed the connection", self.host, self.port)
            self.close()
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            if self._context is not None:
                try:
                    sock = self._context.wrap_socket(sock, server_hostname=self.host)
                except OSError:
                    sock.close()
                    raise
            self._sock = sock
        return self._sock

    def _dropped(self, sock: socket.socket) -> bool:
        """Whether the collector closed the connection (it never sends us anything else)."""
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            return False
        sock.setblocking(False)
        try:
            return sock.recv(4096) == b""
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False  # a TLS record that is no data (a session ticket)
        except OSError:
            return True
        finally:
            sock.settimeout(self.timeout)


class AuditForwarder:
    """Call ``deliver_due()`` from a loop (or ``start()`` a thread that does)."""

    def __init__(
        self,
        archive: Archive,
        transport: SyslogTransport,
        *,
        name: str,
        source: AuditSource,
        batch: int = BATCH,
        min_pause: float = MIN_PAUSE,
        max_pause: float = MAX_PAUSE,
        gap_grace: timedelta = GAP_GRACE,
        lease: timedelta = LEASE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.archive = archive
        self.transport = transport
        self.name = name
        self.source = source
        self.batch = batch
        self.min_pause = min_pause
        self.max_pause = max_pause
        self.gap_grace = gap_grace
        self.lease = lease
        self._clock = clock
        self._owner = process_identity()
        self._pause = 0.0
        self._next_try = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(
        cls, archive: Archive, settings: StorageSettings, *, aet: str | None = None
    ) -> "AuditForwarder | None":
        """The forwarder ``PACS_AUDIT_SYSLOG_URL`` asks for, or None when it is not set."""
        url = settings.audit_syslog_url
        if not url:
            return None
        transport = SyslogTransport(
            url,
            ca_file=settings.audit_syslog_ca_file,
            cert_file=settings.audit_syslog_cert_file,
            key_file=settings.audit_syslog_key_file,
        )
        hostname = socket.gethostname()
        source = AuditSource(
            source_id=f"{aet}@{hostname}" if aet else hostname, hostname=hostname, aet=aet
        )
        return cls(archive, transport, name=url, source=source)

    # -- the loop ------------------------------------------------------------------------

    def deliver_due(self) -> int:
        """Send what waits, unless pausing after a failure; the number of rows sent."""
        if self._clock() < self._next_try:
            return 0
        sent = 0
        try:
            position = self.archive.run_write(self._claim)
            if position is None:
                return 0  # another node sends the trail
            for _ in range(MAX_BATCHES):
                rows = self._due_rows(position)
                if not rows:
                    break
                messages = [syslog_message(row, self.source) for row in rows]
                self.transport.send(messages)
                if not self.archive.run_write(self._advancer(position, rows[-1].id)):
                    log.warning("Audit forwarding to %s: lease lost to another node", self.name)
                    break
                position = rows[-1].id
                sent += len(rows)
                if len(rows) < self.batch:
                    break
        except (OSError, StorageError, SQLAlchemyError) as exc:
            self._pause = min(self.max_pause, max(self.min_pause, self._pause * 2))
            self._next_try = self._clock() + self._pause
            log.warning(
                "Audit forwarding to %s failed (%d row(s) sent first), next try in %.0f s: %s",
                self.name,
                sent,
                self._pause,
                exc,
            )
            return sent
        self._pause = 0.0
        return sent

    def start(self, interval: float = 1.0) -> None:
        """Call ``deliver_due`` every `interval` seconds on a daemon thread until ``stop()``."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="audit-forwarder", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.transport.close()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.deliver_due()
            except Exception:  # the thread must outlive any one bad round
                log.exception("Audit forwarding to %s failed", self.name)

    # -- the position --------------------------------------------------------------------

    def _claim(self, conn: Connection, now: datetime) -> int | None:
        """Take or renew the lease on the position; the last row sent, or None if held."""
        table = AuditForwarding
        exists = conn.scalar(sql_select(table.name).where(table.name == self.name))
        if exists is None:
            conn.execute(
                insert(table).values(
                    name=self.name,
                    last_id=0,
                    claimed_by=self._owner,
                    claimed_until=now + self.lease,
                    updated_at=now,
                )
            )
            return 0
        taken = conn.execute(
            update(table)
            .where(
                table.name == self.name,
                or_(
                    table.claimed_by == self._owner,
                    table.claimed_by.is_(None),
                    table.claimed_until.is_(None),
                    table.claimed_until < now,
                ),
            )
            .values(claimed_by=self._owner, claimed_until=now + self.lease)
        )
        if taken.rowcount == 0:
            return None
        return conn.scalar(sql_select(table.last_id).where(table.name == self.name))

    def _advancer(self, previous: int, last: int) -> Callable[[Connection, datetime], bool]:
        """The write moving the position from `previous` to `last`, if we still hold it."""
        return lambda conn, now: self._advance(conn, now, previous, last)

    def _advance(self, conn: Connection, now: datetime, previous: int, last: int) -> bool:
        done = conn.execute(
            update(AuditForwarding)
            .where(
                AuditForwarding.name == self.name,
                AuditForwarding.claimed_by == self._owner,
                AuditForwarding.last_id == previous,
            )
            .values(last_id=last, updated_at=now, claimed_until=now + self.lease)
        )
        return bool(done.rowcount)

    def _due_rows(self, position: int) -> list[AuditRow]:
        """The rows after `position`, in id order, up to a recent gap in the ids."""
        with self.archive.read() as conn:
            found = conn.execute(
                sql_select(AuditEvent.__table__)
                .where(AuditEvent.id > position)
                .order_by(AuditEvent.id)
                .limit(self.batch)
            ).all()
        rows: list[AuditRow] = []
        settled = utcnow() - self.gap_grace
        expected = position + 1
        for found_row in found:
            row = AuditRow.of(found_row._mapping)
            if row.id != expected and row.at > settled:
                break  # an earlier id may still commit: wait for it
            rows.append(row)
            expected = row.id + 1
        return rows
