"""Backoff and delivery health: when the senders may send, and how many at once. Pure: no threads, no I/O.

The pipeline asks `Health` two questions under its lock, passing the clock in (so tests drive it with plain
numbers): "how many requests may be in flight now?" (`allowed`) and "until when must everyone wait?"
(`paused_until`). The sender reports each attempt's outcome back (`on_success`, `on_retry`, `on_auth`).

The rules (DESIGN.md section 6):

- **Concurrency is AIMD.** Up to `max_in_flight` requests go out together. A retryable failure (429, 5xx,
  network) halves the window and pauses the whole pipeline; each window's worth of successes grows it by one.
  An outage therefore costs one probe per pause, never one request per queued event.
- **While failing, one probe at a time.** After a pause ends only one request goes out until one succeeds.
- **Backoff** is full jitter (`uniform(0, min(cap, base * 2**(n-1)))`), so processes that lost the backend
  together do not return in lock-step. A server `Retry-After` is a floor (capped), kept even during the exit
  drain, which otherwise skips our own backoff.
- **401/403** pause for 5 s, doubling to 5 min, one probe at a time, and keep every event: a key rotation or
  a transient auth hiccup recovers without a five-minute hole.
"""

from __future__ import annotations

import random
from typing import Optional


class Backoff:
    """Full-jitter exponential backoff: `uniform(0, min(cap, base * 2**(failures-1)))`.

    Pass a seeded `random.Random` to make it deterministic (tests).
    """

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: Optional[random.Random] = None) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng if rng is not None else random.Random()

    def delay(self, failures: int) -> float:
        exponent = min(max(failures, 1) - 1, 30)
        return self.rng.uniform(0.0, min(self.cap, self.base * (2.0**exponent)))


def auth_delay(failures: int, first: float = 5.0, cap: float = 300.0) -> float:
    """The pause after the `failures`-th 401/403 in a row: 5 s, 10 s, 20 s ... up to 5 min."""
    exponent = min(max(failures, 1) - 1, 30)
    return float(min(cap, first * (2.0**exponent)))


class Health:
    """The delivery state shared by all senders: pause, failure streaks and the concurrency window."""

    def __init__(
        self,
        max_in_flight: int = 16,
        backoff: Optional[Backoff] = None,
        retry_after_cap: float = 120.0,
        auth_first: float = 5.0,
        auth_cap: float = 300.0,
    ) -> None:
        self.max_in_flight = max(1, int(max_in_flight))
        self.backoff = backoff if backoff is not None else Backoff()
        self.retry_after_cap = retry_after_cap
        self.auth_first = auth_first
        self.auth_cap = auth_cap
        self.window = self.max_in_flight
        self._grow_credit = 0
        self.failures = 0  # retryable failures in a row
        self.auth_failures = 0  # 401/403 in a row
        self.paused_until = 0.0  # our own backoff (skipped by the exit drain)
        self.floor_until = 0.0  # the server's Retry-After (always respected)
        self.outage_since: Optional[float] = None

    @property
    def failing(self) -> bool:
        return self.failures > 0 or self.auth_failures > 0

    def pause_end(self, exiting: bool = False) -> float:
        """Until when nothing may be sent (the exit drain honours only the server's Retry-After)."""
        return self.floor_until if exiting else max(self.paused_until, self.floor_until)

    def allowed(self, now: float, exiting: bool = False) -> int:
        """How many requests may be in flight at `now`: 0 while paused, 1 (a probe) while failing."""
        if now < self.pause_end(exiting):
            return 0
        if self.failing:
            return 1
        return self.window

    def on_success(self) -> bool:
        """Record a delivered event. Returns True when this ended a failure streak (recovered)."""
        recovered = self.failing
        self.failures = 0
        self.auth_failures = 0
        self.paused_until = 0.0
        self.outage_since = None
        if self.window < self.max_in_flight:
            self._grow_credit += 1
            if self._grow_credit >= self.window:  # additive increase: one per window of successes
                self._grow_credit = 0
                self.window += 1
        return recovered

    def on_retry(self, now: float, retry_after: Optional[float]) -> float:
        """Record a retryable failure; pause everyone. Returns the pause in seconds.

        Failures of requests that were already in flight when a pause began are one outage, not many: they
        neither lengthen the pause nor shrink the window again (a server Retry-After still counts).
        """
        if now < self.paused_until:
            return self._pause(now, self.paused_until - now, retry_after)
        self.failures += 1
        self.window = max(1, self.window // 2)  # multiplicative decrease
        self._grow_credit = 0
        if self.outage_since is None:
            self.outage_since = now
        delay = self.backoff.delay(self.failures)
        return self._pause(now, delay, retry_after)

    def on_auth(self, now: float, retry_after: Optional[float]) -> float:
        """Record a 401/403: pause 5 s doubling to 5 min. Returns the pause in seconds."""
        if now < self.paused_until:  # the other requests of the same moment: one failure, not sixteen
            return self._pause(now, self.paused_until - now, retry_after)
        self.auth_failures += 1
        if self.outage_since is None:
            self.outage_since = now
        delay = auth_delay(self.auth_failures, self.auth_first, self.auth_cap)
        return self._pause(now, delay, retry_after)

    def _pause(self, now: float, delay: float, retry_after: Optional[float]) -> float:
        if retry_after is not None:
            retry_after = min(max(0.0, retry_after), self.retry_after_cap)
            delay = max(delay, retry_after)
            self.floor_until = now + retry_after
        self.paused_until = now + delay
        return delay

    def skip_backoff(self, now: float) -> None:
        """Allow one immediate probe (flush at exit); the server's Retry-After still holds."""
        self.paused_until = min(self.paused_until, now)

    def remaining_pause(self, now: float) -> float:
        return max(0.0, self.pause_end() - now)
