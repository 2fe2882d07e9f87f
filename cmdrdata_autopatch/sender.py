"""The senders: up to `max_in_flight` threads posting events, sharing one health state.

Why threads and not an asyncio loop: the HTTP client's CPU per request is the cost that matters (it is taken
from the application through the GIL), and a blocking `http.client` POST costs ~40 µs of CPU against ~230 µs
for `httpx` (sync or async); a thread blocked on a socket holds no GIL and costs nothing. Only as many
senders are awake as the backlog needs (`wanted_locked`: Little's law on the measured attempt time, up to
the window); threads are started on demand, sleep on a condition with no timeout when there is nothing to
do, and are never joined.

Each sender takes one event, or, when the backlog is deeper than the senders it needs, a burst of up to
`MAX_BURST` that the transport pipelines on one connection (`HttpTransport.send_many`: still one event per
POST, but one write and one read per burst). With a CPU-bound application every GIL acquisition of a sender
waits for the application to let go, so a burst pays those waits once instead of once per event.

Each sender asks `next_action()` what to do (`Action`): send the oldest ready events, read a batch back from
the spool (`backlog.py`: this process's own backlog first, then orphaned segments of dead processes, until
none is left), or stop (a fork or shutdown bumped the generation). `settle()` applies one attempt's
outcome: the ledger, the spool's ack log, and `Health` (pause, window).
"""

from __future__ import annotations

import enum
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import _process
from .backlog import SpoolBacklog
from .diagnostics import logger, redact, report_internal_error
from .pending import DeliveryState, Item, Lifecycle
from .transports import Outcome, SendResult, Transport

if TYPE_CHECKING:
    from .spool import Spool

_monotonic = time.monotonic
NOTE_DELIVERY_EVERY = 10.0  # seconds between writes of the spool's "last delivery" stamp
CLEAR_WITHIN = 0.05  # seconds: enough senders to empty the ready queue in about this long, no more
STALL = 0.02  # seconds beyond 4 measured attempt times without an answer: the attempts in flight are stuck
MAX_BURST = 32  # events one sender pipelines on one connection at most
MAX_BURST_BYTES = 128 * 1024  # and bytes: the burst is written before any answer is read


class Action(enum.Enum):
    SEND = "send"
    LOAD = "load"
    STOP = "stop"


class SenderPool(SpoolBacklog):
    """The sender threads of one pipeline and the settle logic they run (spool reading: `SpoolBacklog`)."""

    def __init__(
        self,
        state: DeliveryState,
        transport: Transport,
        spool: Optional[Spool],
        *,
        queue_size: int,
        replay_batch: int = 200,
    ) -> None:
        self.state = state
        self.transport = transport
        self.spool = spool
        self.queue_size = queue_size
        self.replay_batch = max(1, replay_batch)
        # pipelining: only with a transport that has it (HTTP/1.1), and only while it says it still works
        self._send_many: Optional[Callable[..., list[SendResult]]] = getattr(transport, "send_many", None)
        self.tls = threading.local()
        self.reset()

    def reset(self) -> None:
        """Fresh thread bookkeeping (construction, fork, shutdown)."""
        self.threads: list[threading.Thread] = []
        self.flying: set[Item] = set()  # being sent (the exit drain gives up on the ones that hang)
        self._waiting = [0]  # a new box per generation: threads of an old one decrement their own
        self.last_note = 0.0
        self.rtt = 0.0  # a moving average of one attempt's duration (seconds)
        self.last_done = 0.0  # when the last attempt ended (monotonic)
        self._spawn = 0  # threads asked for under the lock, started by spawn_pending() outside it
        self._starting = 0  # of those, being started now
        self._named = 0

    # -- threads -------------------------------------------------------------------------------------

    def wanted_locked(self) -> int:
        """How many POSTs should be in flight for the work waiting: Little's law on the measured attempt
        time, so that the ready queue empties within `CLEAR_WITHIN`, at least one, at most the window.

        Every sender beyond that costs GIL hand-offs: with the backend on loopback (or a CPU-bound
        application making attempts slow) 16 threads each took one event per GIL acquisition, and the
        senders' CPU per event was ~30% higher than with 2-4 (benchmarks/delivery.py). With a far backend
        the same law asks for the whole window (at 50 ms, 16 in flight from a backlog of 16 events)."""
        state = self.state
        window = state.health.window
        rtt = self.rtt
        if rtt <= 0.0:  # nothing measured yet: as many as allowed
            return window
        if state.in_flight and _monotonic() - self.last_done > 4 * rtt + STALL:
            return window  # the attempts in flight hang: never let them hold up the rest
        need = int((len(state.ready) + state.in_flight) * rtt / CLEAR_WITHIN) + 1
        return max(1, min(window, need))

    def wake_locked(self) -> None:
        """Work arrived: wake a waiting sender, or start one more if all are busy and the window allows,
        unless the senders already awake are enough for the backlog (`wanted_locked`)."""
        state = self.state
        alive = len(self.threads) + self._spawn
        if state.in_flight and alive - self._waiting[0] >= self.wanted_locked():
            return  # the senders awake take the next events as they finish theirs
        if self._waiting[0] > 0:
            state.send_cv.notify()
            return
        # one more sender only when the backlog outgrows the ones running: at a trickle (or a backend with
        # no latency) two threads keep up, and every extra thread costs GIL hand-offs in the application
        if alive < state.health.max_in_flight and (len(state.ready) > 2 * alive or not alive):
            self._spawn += 1

    def spawn_pending(self) -> None:
        """Start the sender threads `wake_locked` asked for. Never under the lock: `Thread.start()` waits for
        the new thread to run, which on a busy machine can outlast the 50 ms `record()` may wait for it.

        A thread asked for stays counted in `_spawn` until it is in `threads`, so concurrent callers never
        start more than `max_in_flight` between them."""
        if self._spawn <= self._starting:
            return
        with self.state.lock:
            n = self._spawn - self._starting
            self._starting += max(0, n)
            gen = self.state.generation
        for _ in range(n):
            self._start_one(gen)

    def _start_one(self, gen: int) -> None:
        thread: Optional[threading.Thread] = None
        try:
            self._named += 1
            thread = threading.Thread(
                target=self._loop, args=(gen,), name=f"cmdrdata-sender-{self._named}", daemon=True
            )
            thread.start()
        except Exception as exc:  # interpreter shutdown refuses new threads: the drain sends inline
            logger.debug("cmdrdata-autopatch: could not start a sender thread: %r", exc)
            thread = None
        with self.state.lock:
            self._starting -= 1
            self._spawn -= 1
            if thread is not None:
                self.threads.append(thread)

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def _loop(self, gen: int) -> None:
        self.tls.worker = True
        _process.block_signals_in_this_thread()
        while True:
            try:
                action, payload = self.next_action(gen)
                if action is Action.STOP:
                    return
                self.spawn_pending()
                if action is Action.SEND:
                    state = self.state
                    timeout = max(0.05, state.exit_deadline - _monotonic()) if state.exiting else None
                    self.send_burst(payload, timeout)
                else:
                    self.load(bool(payload))
            except Exception as exc:
                report_internal_error("exporter sender", exc)
                time.sleep(0.1)

    def next_action(self, gen: int) -> tuple[Action, Any]:
        state = self.state
        with state.lock:
            while True:
                if gen != state.generation or state.lifecycle is Lifecycle.CLOSED:
                    return Action.STOP, None  # after the final drain, what is left stays on disk
                if state.lifecycle is Lifecycle.PARKING:
                    self._wait(None)
                    continue
                now = _monotonic()
                allowed = state.health.allowed(now, state.exiting)
                if allowed == 0:
                    self._wait(max(0.001, state.health.pause_end(state.exiting) - now))
                    continue
                if state.ready and state.in_flight < allowed and not self._too_late_locked(now):
                    if state.in_flight and state.in_flight >= self.wanted_locked():
                        # enough in flight for this backlog: woken when it grows, or to look again
                        # when the attempts in flight outlast what they should take
                        self._wait(4 * self.rtt + STALL)
                        continue
                    burst = self._take_locked()
                    if state.ready:
                        self.wake_locked()
                    return Action.SEND, burst
                load = self._load_due_locked(now)
                if load is not None:
                    state.loading = True
                    return Action.LOAD, load
                self._wait(self._orphan_wait_locked(now))

    def _take_locked(self) -> list[Item]:
        """The oldest ready events for one sender: one, or a burst to pipeline (`_depth_locked`)."""
        state = self.state
        depth = self._depth_locked()
        burst: list[Item] = []
        size = 0
        while state.ready and len(burst) < depth and size < MAX_BURST_BYTES:
            item = state.ready.pop()
            burst.append(item)
            size += item.size
            state.in_flight += 1
            state.in_flight_local += item.local
            self.flying.add(item)
        return burst

    def _depth_locked(self) -> int:
        """How many events one sender pipelines: the backlog shared among the senders it needs.

        One while exiting (an attempt that cannot finish within the budget is never started, and the
        budget is judged per exchange) and while the backend is not fully healthy (a shrunken window
        means the server asked for less, not for the same requests on fewer connections)."""
        state = self.state
        health = state.health
        if (
            self._send_many is None
            or not getattr(self.transport, "pipelining", True)
            or state.exiting
            or health.failing
            or health.window < health.max_in_flight
        ):
            return 1
        rtt = self.rtt
        if rtt <= 0.0:
            return 1  # nothing measured yet
        # a burst must not take longer than CLEAR_WITHIN either: against a server that answers a connection's
        # requests one after another, a deep burst to a far backend would hold its events for depth x RTT
        # (and the exit drain would have to give up on them, unacknowledged, to be sent again next run)
        longest = int(CLEAR_WITHIN / rtt)
        senders = max(1, self.wanted_locked())
        return max(1, min(MAX_BURST, longest, -(-len(state.ready) // senders)))

    def _too_late_locked(self, now: float) -> bool:
        """During the exit drain, an attempt that cannot finish in time is not started.

        Its event stays on disk for the next run. Started anyway, the server might store it after we gave up
        waiting, and the next run would send it again (no ack was logged): a duplicate for the server to
        absorb, and the exit budget spent on nothing.
        """
        state = self.state
        return state.exiting and self.spool is not None and state.exit_deadline - now < 2 * self.rtt + 0.02

    def _wait(self, timeout: Optional[float]) -> None:
        box = self._waiting
        box[0] += 1
        try:
            self.state.send_cv.wait(timeout)
        finally:
            box[0] -= 1

    # -- one attempt ---------------------------------------------------------------------------------

    def _measured(self, seconds: float) -> None:
        """Fold one attempt's time (per event) into the moving average; the first one sets it (benign
        race between senders: an estimate)."""
        self.rtt = seconds if self.rtt <= 0.0 else self.rtt + (seconds - self.rtt) * 0.2

    def send_burst(self, items: list[Item], timeout: Optional[float]) -> None:
        """Send the events `next_action` handed out: one by one, or pipelined with the transport's
        `send_many` (its results in the same order), then settle each."""
        if len(items) == 1 or self._send_many is None:
            for item in items:
                self.send(item, timeout)
            return
        started = _monotonic()
        try:
            results = self._send_many([(item.event_id, item.body) for item in items], timeout)
            if len(results) != len(items):
                raise ValueError(f"send_many returned {len(results)} results for {len(items)} events")
            done = self.last_done = _monotonic()
            self._measured((done - started) / len(items))  # the time per event it took
        except Exception as exc:  # a third-party transport broke its contract: keep the events
            report_internal_error("transport send_many", exc)
            results = [SendResult(Outcome.RETRY, reason="internal", detail=redact(type(exc).__name__))] * len(
                items
            )
        # in reverse: an event to retry goes back to the head of the queue, so the burst keeps its order
        for item, result in zip(reversed(items), reversed(results)):
            self.settle(item, result)

    def send(self, item: Item, timeout: Optional[float]) -> SendResult:
        started = _monotonic()
        try:
            result = self.transport.send(item.event_id, item.body, timeout)
            done = self.last_done = _monotonic()
            self._measured(done - started)
        except Exception as exc:  # a third-party transport broke its contract: keep the event
            report_internal_error("transport send", exc)
            result = SendResult(Outcome.RETRY, reason="internal", detail=redact(type(exc).__name__))
        self.settle(item, result)
        return result

    def settle(self, item: Item, result: SendResult) -> None:
        state = self.state
        outcome = result.outcome
        final = outcome is Outcome.DELIVERED or outcome is Outcome.REJECTED
        if final and item.entry is not None and self.spool is not None:
            self.spool.ack(item.entry)  # before the counts: a flush that returns finds the ack logged
        message: Optional[str] = None
        note = False
        with state.lock:
            self.flying.discard(item)
            if item.settled:  # given up on by the exit drain while we were sending it (already uncounted)
                state.done_cv.notify_all()
                return
            state.in_flight -= 1
            state.in_flight_local -= item.local
            ledger = state.ledger
            if final:
                item.settled = True
                if outcome is Outcome.REJECTED:
                    ledger.drop(result.reason or "rejected", local=item.local)
                    state.last_error = result.detail or result.reason
                else:
                    ledger.delivered += item.local
                    ledger.replayed += not item.local
                    if state.health.on_success():
                        state.auth_logged = False
                        message = "cmdrdata-autopatch: CmdrData accepts events again; delivery resumed"
                    now = _monotonic()
                    if self.spool is not None and now - self.last_note >= NOTE_DELIVERY_EVERY:
                        self.last_note, note = now, True
                # no wake-up here: this thread takes the next event itself, and wakes another (next_action)
                # only if more are ready; waking an idle sender per event costs a GIL hand-off each time
            else:
                message = self._retry_locked(item, result)
            state.done_cv.notify_all()
        self.spawn_pending()
        if note and self.spool is not None:
            self._note_delivery(self.spool)
        if message:
            (logger.error if "rejected the API key" in message else logger.warning)(message)

    def _retry_locked(self, item: Item, result: SendResult) -> Optional[str]:
        state = self.state
        now = _monotonic()
        item.failures += 1
        state.ledger.retried += 1
        if item.failures >= 3:  # do not let one bad event block the head of the queue
            state.ready.push(item)
        else:
            state.ready.push_front(item)
        state.last_error = result.detail or result.reason
        if result.outcome is Outcome.AUTH:
            delay = state.health.on_auth(now, result.retry_after)
            if not state.auth_logged:
                state.auth_logged = True
                return (
                    f"cmdrdata-autopatch: CmdrData rejected the API key ({result.detail}). Usage events "
                    f"are kept; delivery is retried in {delay:.0f} s (doubling up to 5 min); "
                    "check CMDRDATA_API_KEY."
                )
        else:
            state.health.on_retry(now, result.retry_after)
        state.send_cv.notify_all()  # waiting senders re-read the pause
        return None

    def send_inline(self, until: float) -> None:
        """No sender thread could run (interpreter shutdown): send on the calling thread until `until`."""
        state = self.state
        while True:
            now = _monotonic()
            with state.lock:
                if not state.ready or now >= until or state.health.pause_end(True) >= until:
                    return
                item = state.ready.pop()
                state.in_flight += 1
                state.in_flight_local += item.local
                self.flying.add(item)
            result = self.send(item, until - now)
            if result.outcome in (Outcome.RETRY, Outcome.AUTH):
                return
