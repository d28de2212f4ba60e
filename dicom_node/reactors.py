"""Event-driven loops for the associations the archive accepts.

pynetdicom runs two loops per association, and both poll: its DUL thread checks the
socket and the outgoing queue and sleeps 1 ms when there was nothing to do, and the
association thread sleeps 1 ms before every look at its incoming message queue. A C-STORE
crosses three such hops (request in, to the handler, response out), a millisecond or more
of every instance's round trip, and two idle threads wake 2,000 times a second.

Here both loops sleep until there is work instead: the DUL thread in ``select`` on its
socket and an eventfd that every queued outgoing primitive writes to, the association
thread on an event that every incoming message, release or abort request sets. Each loop
still wakes every :data:`TICK` seconds to check its timers (ARTIM, network idle timeout),
as pynetdicom's would. What the loops do once awake is pynetdicom's protocol logic,
unchanged: they call the same state machine, the same ACSE checks and the same handlers.
"""

import contextlib
import logging
import os
import queue
import select
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

if TYPE_CHECKING:
    from pynetdicom.association import Association

log = logging.getLogger(__name__)

TICK = 0.02
"""Longest sleep of an idle loop, in seconds: how late a timer may be noticed."""


class WakingQueue(queue.Queue[Any]):
    """A queue that calls `wake` after every put."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class ArchiveDUL(DULServiceProvider):
    """pynetdicom's DUL provider whose reactor sleeps in ``select`` rather than polling."""

    def __init__(self, assoc: "Association", wake_user: Callable[[], None]) -> None:
        """`wake_user` is called whenever there is news for the association thread."""
        super().__init__(assoc)
        self._wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # Closed with the object, not when the reactor ends: a late wake() must not write
        # into a file descriptor number that something else has reused since.
        weakref.finalize(self, os.close, self._wakeup)
        self._wake_user = wake_user
        self._asleep = False
        self.to_provider_queue = WakingQueue(self.wake)
        self.to_user_queue = WakingQueue(wake_user)

    def wake(self) -> None:
        """Make the reactor look at its queues now.

        Only a sleeping reactor is written to: a busy one looks at its queues anyway, and
        a system call per C-FIND response would hand the GIL back and forth each time.
        """
        if self._asleep:
            os.eventfd_write(self._wakeup, 1)

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def run_reactor(self) -> None:
        try:
            self._react()
        finally:
            # An association still waiting for its A-ASSOCIATE-RQ (the peer sent garbage,
            # or nothing, and is gone) takes this None for the ACSE timeout now, instead of
            # holding its place among PACS_MAX_ASSOCIATIONS for acse_timeout seconds.
            self.to_user_queue.put(None)  # type: ignore[arg-type]
            self._wake_user()  # the association notices the DUL has ended

    def _react(self) -> None:
        self._idle_timer.start()
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self._kill_thread:
                return
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # One outgoing primitive or one incoming PDU per turn, as pynetdicom does.
                if not self._process_recv_primitive() and self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                log.exception("The DICOM upper layer failed; the association is aborted")
                self._abort_now()
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                self._sleep()
                continue
            try:
                self.state_machine.do_action(event)
            except Exception as exc:  # pynetdicom logged it; this association alone ends
                log.error(
                    "The DICOM upper layer failed on %s (%s); the association is aborted",
                    event,
                    exc,
                )
                self._abort_now()
                return

    def _sleep(self) -> None:
        """Until the socket is readable, a primitive is queued, or a tick has passed."""
        sock = self.socket.socket if self.socket is not None else None
        if sock is None or sock.fileno() < 0:
            time.sleep(0.001)  # no connection to wait on (opening or closing)
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # TLS has decrypted bytes that select cannot see
        self._asleep = True
        try:
            # Set before this last look: a primitive queued after it finds us asleep.
            if not self.to_provider_queue.empty():
                return
            readable, _, _ = select.select([sock.fileno(), self._wakeup], [], [], TICK)
        except (OSError, ValueError):  # the socket was closed under us
            return
        finally:
            self._asleep = False
        if self._wakeup in readable:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._wakeup)

    def _abort_now(self) -> None:
        """Send an A-ABORT past the state machine, whose state can no longer be trusted."""
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = 0x00
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.send(abort.encode())
            self.socket.close()  # else the peer waits for the association's timeout
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


def run_acceptor_reactor(assoc: "Association", activity: threading.Event) -> None:
    """The association thread's loop: serve each DIMSE message as soon as it is complete.

    `activity` is set by whatever may need the loop: a complete message, a release or
    abort request, the end of the DUL thread, a kill.
    """
    assoc._is_paused = False
    while not assoc._kill:
        # Paused while asleep, so that a thread pausing the reactor need not wait a tick.
        assoc._is_paused = True
        activity.wait(TICK)
        activity.clear()
        assoc._reactor_checkpoint.wait()
        assoc._is_paused = False

        context_id, message = assoc.dimse.get_msg(block=False)
        if message:
            activity.set()  # look again at once: another message may be queued
            assoc._serve_request(message, context_id)  # type: ignore[arg-type]
        if _ended(assoc):
            return


def _ended(assoc: "Association") -> bool:
    """Handle a release or abort request, a dead DUL or the network timeout."""
    if assoc.is_established and assoc.acse.is_release_requested():
        assoc.acse.send_release(is_response=True)
        log.info("Association Released")
        assoc.is_released = True
        assoc.is_established = False
        evt.trigger(assoc, evt.EVT_RELEASED, {})
        assoc.kill()
        return True
    if assoc.acse.is_aborted():
        log.info(
            "Association Aborted%s", " (A-P-ABORT)" if assoc.acse.is_aborted("a-p-abort") else ""
        )
        assoc.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
        assoc.is_aborted = True
        assoc.is_established = False
        evt.trigger(assoc, evt.EVT_ABORTED, {})
        assoc.kill()
        return True
    if not assoc.dul.is_alive():
        assoc.kill()
        return True
    if assoc.dul.idle_timer_expired():
        log.error("Network timeout reached")
        if assoc.network_timeout_response == "A-RELEASE":
            assoc._is_paused = True
            assoc._reactor_checkpoint.wait()
            assoc.release()
            assoc._is_paused = False
        else:
            assoc.abort()
        assoc.kill()
        return True
    return False
