"""The registry of known DICOM peers: modalities, other archives, viewers."""

import socket
import time
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Engine, Table, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError

from storage.errors import StorageError
from storage.index.prepared import Prepared
from storage.index.tables import RemoteNode


class PeerError(StorageError):
    """A peer cannot be added as given."""


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    aet: str
    host: str
    port: int
    hospital: str | None = None
    check_host: bool = False
    tls: bool = False
    """Associations we open to it use DICOM TLS (PS3.15 B.9), to `host` as its name."""

    def accepts_address(self, address: str) -> bool:
        """Whether an association from `address` may use this peer's AE title."""
        if not self.check_host:
            return True
        return address in resolve(self.host)


def resolve(host: str) -> set[str]:
    """The addresses `host` names (itself if it is an address or cannot be resolved)."""
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)} | {host}
    except OSError:
        return {host}


def aet_problem(value: str) -> str | None:
    """Why `value` is not a valid AE title (PS3.5 6.2, VR AE), or None."""
    stripped = value.strip(" ")
    if not stripped:
        return "is empty"
    if len(value) > 16:
        return f"is {len(value)} characters long (at most 16)"
    if "\\" in value or any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        return "may hold only printable ASCII characters other than backslash"
    return None


class PeerRegistry:
    """Peers in the index. Look-ups by AE title (one per association) are cached for
    `CACHE_SECONDS`, so a peer added or removed from another process counts within it."""

    CACHE_SECONDS = 1.0

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._cache: dict[str, tuple[float, Peer | None]] = {}

    def add(
        self,
        *,
        name: str,
        aet: str,
        host: str,
        port: int,
        hospital: str | None = None,
        check_host: bool = False,
        tls: bool = False,
    ) -> Peer:
        if problem := aet_problem(aet):
            raise PeerError(f"AE title {aet!r} {problem}")
        if not name.strip() or len(name) > 64:
            raise PeerError("the name must have 1 to 64 characters")
        if not 1 <= port <= 65535:
            raise PeerError(f"port {port} is not between 1 and 65535")
        peer = Peer(name, aet.strip(), host, port, hospital, check_host, tls)
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(RemoteNode).values(
                        name=peer.name,
                        aet=peer.aet,
                        host=host,
                        port=port,
                        hospital=hospital,
                        check_host=check_host,
                        tls=tls,
                    )
                )
        except IntegrityError:
            raise PeerError(f"a peer named {name!r} or with AE title {aet!r} exists") from None
        return peer

    def remove(self, name: str) -> bool:
        with self._engine.begin() as conn:
            return conn.execute(delete(RemoteNode).where(RemoteNode.name == name)).rowcount > 0

    def list(self) -> list[Peer]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(RemoteNode).order_by(RemoteNode.name)).all()
        return [_peer(row) for row in rows]

    def by_aet(self, aet: str, *, fresh: bool = False) -> Peer | None:
        """The peer with AE title `aet`; `fresh` skips the cache (to address a peer)."""
        aet = aet.strip()
        now = time.monotonic()
        cached = self._cache.get(aet)
        if not fresh and cached is not None and now - cached[0] < self.CACHE_SECONDS:
            return cached[1]
        with self._engine.connect() as conn:
            row = _BY_AET.first(conn, {"b_aet": aet})
        peer = Peer(*row) if row is not None else None
        if len(self._cache) > 10_000:  # a scan of random AE titles must not grow it forever
            self._cache.clear()
        self._cache[aet] = (now, peer)
        return peer


_nodes = cast(Table, RemoteNode.__table__)
_BY_AET = Prepared(
    select(
        _nodes.c.name,
        _nodes.c.aet,
        _nodes.c.host,
        _nodes.c.port,
        _nodes.c.hospital,
        _nodes.c.check_host,
        _nodes.c.tls,
    ).where(_nodes.c.aet == bindparam("b_aet"))
)


def _peer(row: object) -> Peer:
    return Peer(
        name=row.name,  # type: ignore[attr-defined]
        aet=row.aet,  # type: ignore[attr-defined]
        host=row.host,  # type: ignore[attr-defined]
        port=row.port,  # type: ignore[attr-defined]
        hospital=row.hospital,  # type: ignore[attr-defined]
        check_host=row.check_host,  # type: ignore[attr-defined]
        tls=row.tls,  # type: ignore[attr-defined]
    )
