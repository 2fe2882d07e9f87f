"""Streams of server-side objects: an assistants run billed from its terminal stream event.

An assistants run streamed (`runs.create(stream=True)`, `runs.stream`, `runs.create_and_stream`,
`runs.submit_tool_outputs(stream=True)` / `_stream`, `threads.create_and_run(stream=True)` / `_stream`)
carries the finished `Run`, with its `usage`, in its `thread.run.completed` / `.incomplete` / `.failed` /
`.expired` / `.cancelled` event. That run is billed the moment the event goes by, through `bill_object`,
with the same derived event id as `runs.retrieve` / `runs.poll` would give it: streaming a run and then
polling it (or another process polling it) bills it once. A stream that ends before its run is terminal
(`thread.run.requires_action`: the tool outputs are submitted on a second stream) bills nothing; the
stream that finishes the run does.

Who pays: a stream that creates the run (its `thread.run.created` event) remembers the call's customer
by run id, exactly as a non-streamed create does, so a later poll in another `customer()` block still
bills the creator.

The stream helpers return a stream manager that sends the request only when entered. The manager keeps
the request in a private attribute (`_AssistantStreamManager__api_request`, the same name in every release
from 1.14.0 to 3.57.0); we replace it on that one instance with a request whose stream is our proxy, so the
event handler reads the run's events through it (every reading style: `for event in stream`,
`until_done()`, `get_final_run()`, the `on_*` callbacks). The caller gets the same manager object back.
A manager without that attribute (a future release) is left alone, logged once and counted.
"""

from __future__ import annotations

from typing import Any, Callable

from .diagnostics import report_internal_error
from .object_billing import MEMORY, _Read, bill_object
from .runtime import Runtime
from .streams import AsyncStreamProxy, StreamCapture, StreamProxy

_RUN_EVENT = "thread.run."
_STEP_EVENT = "thread.run.step."
_REQUEST_SUFFIX = "__api_request"


class RunEvents(StreamCapture):
    """The capture of a run stream: bills each terminal run it shows; nothing to emit at the end."""

    __slots__ = ("read",)

    def __init__(self, read: _Read) -> None:
        self.read = read
        self.done = True  # `finish` is a no-op: a run stream bills at its terminal event, never at its end

    def observe(self, item: Any) -> bool:
        try:
            name = getattr(item, "event", None)
            if type(name) is not str or not name.startswith(_RUN_EVENT) or name.startswith(_STEP_EVENT):
                return False
            run = getattr(item, "data", None)
            if name == "thread.run.created":
                run_id = getattr(run, "id", None)
                if isinstance(run_id, str) and run_id:
                    MEMORY.remember(run_id, self.read.customer, self.read.metadata, pending=False)
            else:
                bill_object(self.read, run, streaming=True)  # bills only a terminal run
        except Exception as exc:
            report_internal_error("run stream observe", exc)
        return False

    def finish(self, error: BaseException | None = None, complete: bool = False) -> None:
        return None


def run_stream(rt: Runtime, read: _Read, stream: Any) -> Any:
    """The proxy the caller (or the stream manager) gets instead of a run's event stream."""
    proxy_cls = StreamProxy if isinstance(stream, rt.stream_types) else AsyncStreamProxy
    return proxy_cls(stream, RunEvents(read))


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
    """Make a run-stream manager (sync or async) hand its event handler our proxy of the stream."""
    state = getattr(manager, "__dict__", {})
    name = next((key for key in state if key.endswith(_REQUEST_SUFFIX)), None)
    if name is None:
        report_internal_error("run stream manager", RuntimeError(f"{type(manager).__name__}: no request"))
        return
    request = state[name]

    def wrap(stream: Any) -> Any:
        try:
            if isinstance(stream, rt.stream_types + rt.async_stream_types):
                return run_stream(rt, read, stream)
        except Exception as exc:
            report_internal_error("run stream", exc)
        return stream

    if callable(request):
        state[name] = lambda: wrap(request())
    elif hasattr(request, "__await__"):
        state[name] = _ThenWrap(request, wrap)
