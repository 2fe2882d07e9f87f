"""Streams of server-side objects: assistants runs and agent turns billed from their terminal events.

An assistants run streamed (`runs.create(stream=True)`, `runs.stream`, `runs.create_and_stream`,
`runs.submit_tool_outputs(stream=True)` / `_stream`, `threads.create_and_run(stream=True)` / `_stream`)
carries the finished `Run`, with its `usage`, in its `thread.run.completed` / `.incomplete` / `.failed` /
`.expired` / `.cancelled` event. An agent session's event stream (`beta.agents.sessions.create(
stream=True)`, `sessions.events.stream`, and `sessions.stream`, which reads the latter) carries each
finished turn and its usage in `agent.session.turn.completed` / `.failed` / `.cancelled`. Such an object
is billed the moment its event goes by, through `bill_object`, with the same derived event id as reading
it back (`runs.retrieve` / `runs.poll`, `turns.retrieve` / `turns.list`) gives it: streaming it and then
polling it (or another process polling it) bills it once. A stream that ends before its run is terminal
(`thread.run.requires_action`: the tool outputs go on a second stream) bills nothing; the stream that
finishes the run does.

How the events are seen: the SDK's `Stream` reads every item from its one `_iterator` (its own
`__iter__` / `__next__`, the assistants event handler, the agents stream's `get_final_result()` and
`until_done()` all end there), in every release from 1.14.0 to 3.57.0. We put our generator in front of
it, on that one instance: the caller keeps the very object the SDK returned, and no reading style
escapes us.

Who pays: a stream that creates the run (its `thread.run.created` event) or the session
(`agent.session.created`) remembers the call's customer by that id, as a non-streamed create does, so a
later poll in another `customer()` block still bills the creator.

The run-stream helpers return a manager that sends the request only when entered. The manager keeps the
request in a private attribute (`_AssistantStreamManager__api_request`, the same name in every release
from 1.14.0 to 3.57.0); we replace it on that one instance with a request whose stream we observe. A
manager without that attribute (a future release) is left alone, logged once and counted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Callable

from .diagnostics import report_internal_error
from .object_billing import MEMORY, TERMINAL, _Read, bill_object
from .runtime import Runtime
from .usage import get

_RUN_EVENT = "thread.run."
_STEP_EVENT = "thread.run.step."
_TURN_EVENT = "agent.session.turn."
_REQUEST_SUFFIX = "__api_request"


def observe_stream(stream: Any, observe: Callable[[Any], None]) -> Any:
    """Show every item of `stream` to `observe` before whoever reads it; returns `stream` itself."""
    source = getattr(stream, "_iterator", None)
    if source is None:
        report_internal_error("object stream", RuntimeError(f"{type(stream).__name__}: no _iterator"))
    elif hasattr(source, "__anext__"):
        stream._iterator = _aobserved(source, observe)
    else:
        stream._iterator = _observed(source, observe)
    return stream


def _observed(source: Iterator[Any], observe: Callable[[Any], None]) -> Iterator[Any]:
    try:
        for item in source:
            observe(item)
            yield item
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()  # the SDK's own generator runs its `finally` (the agents stream closes itself there)


async def _aobserved(source: AsyncIterator[Any], observe: Callable[[Any], None]) -> AsyncIterator[Any]:
    try:
        async for item in source:
            observe(item)
            yield item
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


def _remember(object_id: Any, read: _Read) -> None:
    if isinstance(object_id, str) and object_id:
        MEMORY.remember(object_id, read.customer, read.metadata, pending=False)


class RunEvents:
    """An assistants run stream's observer: bills each terminal run it shows."""

    __slots__ = ("read",)

    def __init__(self, read: _Read) -> None:
        self.read = read

    def __call__(self, item: Any) -> None:
        try:
            name = getattr(item, "event", None)
            if type(name) is not str or not name.startswith(_RUN_EVENT) or name.startswith(_STEP_EVENT):
                return
            run = getattr(item, "data", None)
            if name == "thread.run.created":
                _remember(get(run, "id"), self.read)
            else:
                bill_object(self.read, run, streaming=True)  # bills only a terminal run
        except Exception as exc:
            report_internal_error("run stream observe", exc)


class TurnEvents:
    """An agent session stream's observer: bills each finished turn it shows."""

    __slots__ = ("read",)

    def __init__(self, read: _Read) -> None:
        self.read = read

    def __call__(self, item: Any) -> None:
        try:
            kind = getattr(item, "type", None)
            if type(kind) is not str or not kind.startswith(_TURN_EVENT):
                if kind == "agent.session.created":
                    _remember(getattr(item, "session_id", None), self.read)
                return
            status = kind[len(_TURN_EVENT) :]
            if status not in TERMINAL["turn"]:
                return
            turn = getattr(item, "turn", None)
            usage = getattr(item, "usage", None)
            finished = {  # the turn as `turns.retrieve` gives it, with the event's usage
                "id": getattr(item, "turn_id", None) or get(turn, "id"),
                "status": status,
                "session_id": getattr(item, "session_id", None) or get(turn, "session_id"),
                "usage": usage if usage is not None else get(turn, "usage"),
                "error": get(turn, "error"),
            }
            bill_object(self.read, finished, streaming=True)
        except Exception as exc:
            report_internal_error("turn stream observe", exc)


def object_stream(read: _Read, stream: Any) -> Any:
    """A run's or an agent session's event stream, observed (the same object, returned)."""
    return observe_stream(stream, TurnEvents(read) if read.reads == "turn" else RunEvents(read))


class _ThenWrap:
    """An awaitable: the manager's own request, its stream wrapped. Not a coroutine, so a manager that is
    never entered warns only about the SDK's request, as it would without us."""

    __slots__ = ("request", "wrap")

    def __init__(self, request: Any, wrap: Callable[[Any], Any]) -> None:
        self.request = request
        self.wrap = wrap

    def __await__(self) -> Any:
        stream = yield from self.request.__await__()
        return self.wrap(stream)


def watch_manager(rt: Runtime, read: _Read, manager: Any) -> None:
    """Make a run-stream manager (sync or async) hand its event handler the stream, observed."""
    state = getattr(manager, "__dict__", {})
    name = next((key for key in state if key.endswith(_REQUEST_SUFFIX)), None)
    if name is None:
        report_internal_error("run stream manager", RuntimeError(f"{type(manager).__name__}: no request"))
        return
    request = state[name]

    def wrap(stream: Any) -> Any:
        try:
            if isinstance(stream, rt.stream_types + rt.async_stream_types):
                return object_stream(read, stream)
        except Exception as exc:
            report_internal_error("run stream", exc)
        return stream

    if callable(request):
        state[name] = lambda: wrap(request())
    elif hasattr(request, "__await__"):
        state[name] = _ThenWrap(request, wrap)
