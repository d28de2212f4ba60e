"""Rate limits: requests per user (or per address, before sign-in) and sign-in attempts
per address and per user name, so one client cannot starve the others and passwords
cannot be guessed at speed.

Counted in sliding windows: in this process's memory, or for several nodes in Redis through
the ``limits`` library (``PACS_RATE_LIMIT_STORAGE=redis://...``). If Redis fails, requests
go through (logged): the archive's availability comes before its limiter.
"""

import logging
import threading
import time

from limits import RateLimitItem, parse, storage, strategies

from viewer_api.config import ApiSettings
from viewer_api.errors import ApiError

log = logging.getLogger(__name__)


class TooManyRequests(ApiError):
    """Over a rate limit (429, with Retry-After)."""

    status = 429

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RateLimits:
    def __init__(self, settings: ApiSettings) -> None:
        self.local = settings.rate_limit_storage.startswith("memory://")
        """Counted in this process: a hit costs no I/O (may run on the event loop)."""
        self._shared = (
            None
            if self.local
            else strategies.SlidingWindowCounterRateLimiter(
                storage.storage_from_string(settings.rate_limit_storage)
            )
        )
        self._windows = _LocalWindows()
        self._requests = parse(settings.rate_limit)
        self._sign_ins = parse(settings.sign_in_rate_limit)

    def request(self, who: str) -> None:
        """Count a request by `who` (a user, a link, an address); raises TooManyRequests."""
        self._hit(self._requests, "requests", who, "requests")

    def sign_in(self, address: str | None, name: str) -> None:
        """Count a sign-in attempt from `address` as `name`; raises TooManyRequests."""
        self._hit(self._sign_ins, "sign-in-address", address or "?", "sign-in attempts")
        self._hit(self._sign_ins, "sign-in-name", name, "sign-in attempts")

    def signing(self, name: str) -> None:
        """Count an attempt by `name` to open their signing key: guessing a PIN is guessing
        too."""
        self._hit(self._sign_ins, "signing-name", name, "signing attempts")

    def refused(self, address: str | None) -> None:
        """Count a refused credential from `address`: guessing tokens is guessing too."""
        self._hit(self._sign_ins, "refused-address", address or "?", "refused credentials")

    def _hit(self, item: RateLimitItem, kind: str, who: str, what: str) -> None:
        if self._shared is None:
            wait = self._windows.hit(item, f"{kind}\0{who}")
        else:
            try:
                if self._shared.hit(item, kind, who):
                    return
                reset = self._shared.get_window_stats(item, kind, who).reset_time
            except Exception as exc:  # any failure of the store: fail open
                log.warning("Rate limit store failed (%s); %s not limited", exc, kind)
                return
            wait = reset - time.time()
        if wait is not None:
            seconds = max(1, int(wait) + 1)
            raise TooManyRequests(f"too many {what} ({item}); try again in {seconds} s", seconds)


class _LocalWindows:
    """Sliding-window counters in this process's memory: the current fixed window's count
    plus the previous one's, weighted by how much of it the sliding window still covers
    (the ``limits`` library's memory store starts a timer thread per hit; this costs a
    dictionary lookup under a lock)."""

    _MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int, int]] = {}
        """key → (window number, hits in it, hits in the window before)."""

    def hit(self, item: RateLimitItem, key: str) -> float | None:
        """Count a hit unless it would exceed `item`; else the seconds to wait."""
        period = item.get_expiry()
        now = time.time()
        window = int(now // period)
        covered = 1 - (now - window * period) / period  # of the previous window
        with self._lock:
            seen, current, previous = self._counts.get(key, (window, 0, 0))
            if seen != window:
                previous = current if seen == window - 1 else 0
                current = 0
            if previous * covered + current + 1 > item.amount:
                self._counts[key] = (window, current, previous)
                return (window + 1) * period - now
            if len(self._counts) >= self._MAX_KEYS:
                self._forget(window)
            self._counts[key] = (window, current + 1, previous)
            return None

    def _forget(self, window: int) -> None:
        """Drop counters of past windows; in a flood of distinct keys within one window,
        also those seen once (the flood's own), so a counter that matters (the attempts on
        one user name) is never reset by it."""
        for key in [k for k, (seen, _, _) in self._counts.items() if seen < window]:
            del self._counts[key]
        if len(self._counts) >= self._MAX_KEYS:
            for key in [k for k, (_, now, before) in self._counts.items() if now + before <= 1]:
                del self._counts[key]
