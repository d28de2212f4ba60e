"""A TCP fault proxy for the outage tests: put it between `pacs serve` and a backing service
(PostgreSQL, S3) on 127.0.0.1, point the server at its port, and switch faults at run time::

    with FaultProxy(5432) as proxy:        # forwards 127.0.0.1:<proxy.port> to :5432
        ...                                # the server uses 127.0.0.1:<proxy.port>
        proxy.down()                       # the service is gone
        proxy.restore()                    # it is back

Modes:

- ``pass``: bytes go through as they come.
- ``down``: every open connection is reset (RST), and each new one is reset as soon as it
  is accepted, as a service that crashed and keeps crashing. The proxy keeps its port
  meanwhile, so nothing else on the machine can take it before :meth:`FaultProxy.restore`.
- ``blackhole``: connections are accepted and then nothing is said, as across a network
  partition: no byte goes either way (none is lost: they wait in the sockets' buffers and
  go on once restored, as TCP would retransmit them), and new connections reach the
  service only once restored.
- ``slow``: each chunk waits `seconds` before it is passed on, and/or the bytes go at most
  at `bytes_per_second` per connection and direction.

Threads only (one for accepting, one per connection); everything is closed on leaving the
``with`` block, whatever happened in it.
"""

import contextlib
import select
import socket
import struct
import threading
import time
from types import TracebackType
from typing import Literal, Self

Mode = Literal["pass", "down", "blackhole", "slow"]

_CHUNK = 64 * 1024
_TICK = 0.05
"""Seconds between looks at the mode while a connection waits."""


def _reset(sock: socket.socket) -> None:
    """Close `sock` with a RST rather than a FIN: the peer sees "connection reset"."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One client connection and its connection to the target."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.target: socket.socket | None = None
        self.closed = False

    def reset(self) -> None:
        self.closed = True
        _reset(self.client)
        if self.target is not None:
            _reset(self.target)


class FaultProxy:
    """Forwards 127.0.0.1:`port` to `host`:`target_port`, with faults switched at run time."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(_TICK)
        self.port: int = self._listener.getsockname()[1]
        self._mode: Mode = "pass"
        self._delay = 0.0
        self._rate: float | None = None
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self.connections = 0
        """Connections accepted so far."""
        self.resets = 0
        """Connections reset by :meth:`down` or while down."""

    # -- switching -----------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def down(self) -> None:
        """Reset every open connection and each new one, until restored."""
        with self._lock:
            self._mode = "down"
            links, self._links = self._links, set()
            self.resets += len(links)
        for link in links:
            link.reset()

    def blackhole(self) -> None:
        """Accept, and pass nothing either way, until restored."""
        self._mode = "blackhole"

    def slow(self, seconds: float = 0.0, bytes_per_second: float | None = None) -> None:
        """Hold each chunk `seconds` and/or cap each direction of each connection."""
        self._delay = seconds
        self._rate = bytes_per_second
        self._mode = "slow"

    def restore(self) -> None:
        """Back to passing bytes as they come."""
        self._mode = "pass"

    # -- life ----------------------------------------------------------------------------

    def start(self) -> Self:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._acceptor.is_alive():
            self._acceptor.join(5)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            links, self._links = self._links, set()
            threads = list(self._threads)
        for link in links:
            link.reset()
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the work ------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            link = _Link(client)
            thread = threading.Thread(target=self._serve, args=(link,), daemon=True)
            with self._lock:  # as down() switches: a link is either reset by it or here
                self.connections += 1
                if self._mode == "down":
                    self.resets += 1
                    link.reset()
                    continue
                self._links.add(link)
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, link: _Link) -> None:
        try:
            while self._mode == "blackhole" and not self._idle(link):
                time.sleep(_TICK)  # the service is unreachable: not even connected yet
            if link.closed or self._stopping.is_set():
                return
            try:
                link.target = socket.create_connection(self.target, timeout=5)
            except OSError:
                link.reset()  # the service itself is down: so is the proxy, for this client
                return
            self._pump(link)
        except (OSError, ValueError):
            pass  # a reset or closed socket ends the connection (ValueError: closed under select)
        finally:
            with self._lock:
                self._links.discard(link)
            link.closed = True  # and closed here even if reset: a reset may precede `target`
            for sock in (link.client, link.target):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()

    def _idle(self, link: _Link) -> bool:
        """Whether the link should end instead of waiting on."""
        return link.closed or self._stopping.is_set()

    def _pump(self, link: _Link) -> None:
        assert link.target is not None
        ends = {link.client: link.target, link.target: link.client}
        while not self._idle(link):
            if self._mode == "blackhole":
                time.sleep(_TICK)  # bytes wait in the kernel's buffers, as in a partition
                continue
            readable, _, _ = select.select(list(ends), [], [], _TICK)
            for source in readable:
                rate = self._rate if self._mode == "slow" else None
                size = _CHUNK if rate is None else max(1, min(_CHUNK, int(rate * _TICK)))
                data = source.recv(size)
                if not data:
                    return  # one side closed: close the other
                if self._mode == "slow":
                    self._hold(link, self._delay + (len(data) / rate if rate else 0.0))
                if link.closed:
                    return
                ends[source].sendall(data)

    def _hold(self, link: _Link, seconds: float) -> None:
        """Wait `seconds`, or less if the proxy is restored, stopped or the link reset."""
        until = time.monotonic() + seconds
        while self._mode == "slow" and not self._idle(link):
            left = until - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, _TICK))
