"""The registry of known DICOM peers: modalities, other archives, viewers."""

import socket
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from storage.errors import StorageError
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
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(
        self,
        *,
        name: str,
        aet: str,
        host: str,
        port: int,
        hospital: str | None = None,
        check_host: bool = False,
    ) -> Peer:
        if problem := aet_problem(aet):
            raise PeerError(f"AE title {aet!r} {problem}")
        if not name.strip() or len(name) > 64:
            raise PeerError("the name must have 1 to 64 characters")
        if not 1 <= port <= 65535:
            raise PeerError(f"port {port} is not between 1 and 65535")
        peer = Peer(name, aet.strip(), host, port, hospital, check_host)
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

    def by_aet(self, aet: str) -> Peer | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(RemoteNode).where(RemoteNode.aet == aet.strip())).first()
        return _peer(row) if row is not None else None


def _peer(row: object) -> Peer:
    return Peer(
        name=row.name,  # type: ignore[attr-defined]
        aet=row.aet,  # type: ignore[attr-defined]
        host=row.host,  # type: ignore[attr-defined]
        port=row.port,  # type: ignore[attr-defined]
        hospital=row.hospital,  # type: ignore[attr-defined]
        check_host=row.check_host,  # type: ignore[attr-defined]
    )
