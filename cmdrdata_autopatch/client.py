"""The seed's drop-in clients: `TrackedOpenAI`, `AsyncTrackedOpenAI`, and `UsageTracker`.

Code written against the first cmdrdata SDK keeps working unchanged::

    client = TrackedOpenAI(api_key="sk-...", tracker_key="tk-...")
    client.chat.completions.create(model=..., messages=..., customer_id="acme")

These are not a second instrumentation. They are `openai.OpenAI` / `openai.AsyncOpenAI` subclasses (so
`isinstance(client, openai.OpenAI)` holds and every SDK feature is there) that switch on the same class-level
wrappers as `patch()` (`patching.install()`, which wraps without turning on process-wide tracking) and carry
their own `UsageTracker` in the instance attribute `_cmdrdata_recorder`. The wrappers send a call made
through such a client to that tracker, with its own key and endpoint, and every other client's calls to the
global exporter of `patch()` (or nowhere, if `patch()` is off). So one process can bill two CmdrData accounts,
and a call is never counted twice, even with `patch()` on as well.

This module needs `openai` >= 1.0.0; importing it without one raises an `ImportError` that says which
`pip install` fixes it. (The package itself imports without `openai`, so the start-up hooks can load in any
Python process.)
"""

from __future__ import annotations

import contextvars
import os
from typing import Any

from .config import DEFAULT_ENDPOINT, Settings, load_settings
from .events import UsageEvent
from .recorder import call_optional
from .targets import OLDEST_SUPPORTED, parse_version

_FIX = f"pip install -U 'openai>={OLDEST_SUPPORTED}'"

try:
    import openai
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        f"cmdrdata_autopatch.TrackedOpenAI needs the openai package, which is not installed. Fix: {_FIX}"
    ) from _exc

_OPENAI_VERSION = str(getattr(openai, "__version__", "0"))
if parse_version(_OPENAI_VERSION) < parse_version(OLDEST_SUPPORTED):  # pragma: no cover - subprocess test
    raise ImportError(
        f"cmdrdata_autopatch.TrackedOpenAI needs openai >= {OLDEST_SUPPORTED}, but openai {_OPENAI_VERSION} "
        f"is installed (the 0.x API has no client classes to track). Fix: {_FIX}"
    )

from . import control, patching  # noqa: E402 - only once openai is known to be usable


class UsageTracker:
    """Sends usage events to CmdrData with one API key: the seed's name for the delivery object.

    A thin handle on the real machinery (the background exporter and its HTTP transport, built by
    `control.build_recorder`), so a drop-in client gets the same bounded queue, retries, spool and exit
    handling as `patch()`. Other settings (queue size, spool directory, exit timeout...) come from the
    `CMDRDATA_*` environment as usual; `exporter=` takes any object with `record(event)` instead (tests).
    """

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        timeout: float | None = None,
        *,
        exporter: Any = None,
        **settings: Any,
    ) -> None:
        if exporter is None:
            if api_key is not None:
                settings.setdefault("exporter", "http")
            self.settings: Settings | None = load_settings(api_key=api_key, endpoint=endpoint, **settings)
            exporter = control.build_recorder(self.settings, http_timeout=timeout)
            control.adopt_deployment(self.settings)
        else:
            self.settings = None
        if not callable(getattr(exporter, "record", None)):
            raise TypeError(f"UsageTracker(exporter={exporter!r}): expected an object with record(event)")
        self.exporter = exporter

    @property
    def endpoint(self) -> str:
        """Where events go (the CmdrData events endpoint for an http tracker)."""
        return self.settings.endpoint if self.settings is not None else DEFAULT_ENDPOINT

    def record(self, event: UsageEvent) -> Any:
        """Queue one event (O(1), never blocks, never raises: the exporter's contract)."""
        return self.exporter.record(event)

    def flush(self, timeout: float = 5.0) -> Any:
        """Deliver what was recorded so far, waiting at most `timeout` seconds."""
        return call_optional(self.exporter, "flush", timeout)

    def shutdown(self, timeout: float = 2.0) -> Any:
        """Flush, then stop delivering (a serverless handler calls this before it returns)."""
        return call_optional(self.exporter, "shutdown", timeout)

    def stats(self) -> dict[str, Any]:
        """The exporter's delivery counters (recorded, delivered, dropped...)."""
        counters = call_optional(self.exporter, "stats")
        return dict(counters) if counters else {}

    def __repr__(self) -> str:
        name = self.settings.exporter if self.settings is not None else type(self.exporter).__name__
        return f"<UsageTracker {name} -> {self.endpoint if name == 'http' else name}>"


# A copy of a tracked client (`with_options()` / `copy()`) keeps its parent's tracker: set while copying.
_UNSET = object()
_inherit: contextvars.ContextVar[Any] = contextvars.ContextVar("cmdrdata_inherit_tracker", default=_UNSET)


def _resolve_tracker(
    tracker: Any, tracker_key: str | None, tracker_endpoint: str | None, tracker_timeout: float | None
) -> Any:
    """The recorder a new drop-in client carries, or None to use the global one of `patch()`."""
    if tracker is not None:
        return tracker if isinstance(tracker, UsageTracker) else UsageTracker(exporter=tracker)
    inherited = _inherit.get()
    if inherited is not _UNSET and tracker_key is None:
        return inherited
    key = tracker_key or os.environ.get("CMDRDATA_API_KEY", "").strip() or None
    if key is None and control.is_patched():
        return None  # patch() is on and no key of its own: the global exporter has this client's calls
    return UsageTracker(key, tracker_endpoint, tracker_timeout)


class _TrackedClient:
    """What both drop-in clients add to the SDK client: their own tracker, kept across `copy()`."""

    def __init__(
        self,
        *args: Any,
        tracker_key: str | None = None,
        tracker_endpoint: str | None = None,
        tracker_timeout: float | None = None,
        tracker: Any = None,
        **kwargs: Any,
    ) -> None:
        # first: a client that fails to build must not leave a tracker behind
        super().__init__(*args, **kwargs)
        patching.install(self)
        recorder = _resolve_tracker(tracker, tracker_key, tracker_endpoint, tracker_timeout)
        self.__dict__["_cmdrdata_recorder"] = recorder

    @property
    def tracker(self) -> UsageTracker | None:
        """This client's tracker (None when its calls go to the global exporter of `patch()`)."""
        recorder = self.__dict__.get("_cmdrdata_recorder")
        return recorder if isinstance(recorder, UsageTracker) else None

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        """The SDK's `copy`, keeping this client's tracker (the SDK re-runs `__init__` without it)."""
        token = _inherit.set(self.__dict__.get("_cmdrdata_recorder"))
        try:
            return super().copy(*args, **kwargs)  # type: ignore[misc]
        finally:
            _inherit.reset(token)

    with_options = copy


class TrackedOpenAI(_TrackedClient, openai.OpenAI):
    """`openai.OpenAI` whose calls are billed through its own `UsageTracker` (seed-compatible).

    `tracker_key` is the CmdrData API key (default `CMDRDATA_API_KEY`; with neither, events go to the
    local JSONL file, as with `patch()`), `tracker_endpoint` / `tracker_timeout` override the endpoint and
    HTTP timeout, `tracker=` passes a ready `UsageTracker` (or any object with `record(event)`). Every
    other keyword goes to `openai.OpenAI`. Calls accept `customer_id=`, `cmdrdata_metadata=` and
    `track_usage=False`, which never reach OpenAI.
    """


class AsyncTrackedOpenAI(_TrackedClient, openai.AsyncOpenAI):
    """`openai.AsyncOpenAI` whose calls are billed through its own `UsageTracker`; see `TrackedOpenAI`."""


__all__ = ["AsyncTrackedOpenAI", "TrackedOpenAI", "UsageTracker"]
