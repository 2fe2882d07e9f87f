"""The one runtime object the call path reads: where events go and what the installed SDK looks like.

Only `control.py` (the owner of the process-wide switch) and `client.py` (drop-in clients) write it;
`patching.py` passes it to every wrapper it builds, so the wrappers read attributes of an object they were
given instead of module globals spread over several modules. Plain attributes in `__slots__`, because
every OpenAI call reads a few of them.
"""

from __future__ import annotations

from typing import Any


def _version_tuple(version: str) -> tuple[int, ...]:
    # targets.parse_version, repeated here so this bottom-layer module imports nothing of ours
    parts: list[int] = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


class Runtime:
    """Process-wide wiring of the call path (one instance, `RUNTIME`)."""

    __slots__ = (
        "async_stream_types",
        "default_customer",
        "deployment",
        "dropins",
        "object_metadata",
        "raw_types",
        "recorder",
        "special_types",
        "stream_options_supported",
        "stream_types",
        "stream_usage",
        "stream_usage_hosts",
    )

    def __init__(self) -> None:
        self.recorder: Any = None  # the global recorder of patch(); None: process-wide tracking is off
        self.default_customer: str | None = None  # CMDRDATA_CUSTOMER_ID / patch(customer_id=...)
        self.dropins = False  # a drop-in client exists: each call checks its client for its own tracker
        self.stream_usage = "auto"  # CMDRDATA_STREAM_USAGE
        # hosts besides api.openai.com known to accept stream_options (CMDRDATA_STREAM_USAGE_HOSTS + Azure)
        self.stream_usage_hosts: tuple[str, ...] = ()
        self.object_metadata = False  # CMDRDATA_OBJECT_METADATA=customer (objects.py)
        # (service, environment) copied onto every event; None when neither is set (nothing to copy)
        self.deployment: tuple[str | None, str | None] | None = None
        self.stream_options_supported = True  # openai >= 1.26.0 accepts stream_options
        self.stream_types: tuple[type, ...] = ()
        self.async_stream_types: tuple[type, ...] = ()
        self.raw_types: tuple[type, ...] = ()
        self.special_types: tuple[type, ...] = ()  # all of the above: results that are not billed as is

    def set_deployment(self, service: str | None, environment: str | None) -> None:
        """Set once by `patch()`: each event copies the pair at creation (one tuple, read on the caller's
        thread, so an event never changes labels when `patch()` runs again before it is sent)."""
        self.deployment = None if service is None and environment is None else (service, environment)

    def set_stream_usage_hosts(self, hosts: tuple[str, ...]) -> None:
        """Set by `patch()`: the configured hosts that accept `stream_options` (lower case)."""
        self.stream_usage_hosts = tuple(host.lower() for host in hosts)

    def configure_openai_types(self, openai_version: str) -> None:
        """Resolve the SDK classes results are tested against (called once `openai` is imported)."""
        from openai import _streaming

        self.stream_types = (_streaming.Stream,)
        self.async_stream_types = (_streaming.AsyncStream,)
        raw: list[type] = []
        try:
            from openai import _response

            for name in ("APIResponse", "AsyncAPIResponse"):
                cls = getattr(_response, name, None)
                if isinstance(cls, type):
                    raw.append(cls)
        except ImportError:  # pragma: no cover - present in every 1.x+
            pass
        try:
            from openai import _legacy_response

            raw.append(_legacy_response.LegacyAPIResponse)
        except ImportError:  # openai < 1.8.0: raw responses are APIResponse
            pass
        self.raw_types = tuple(raw)
        self.special_types = self.raw_types + self.stream_types + self.async_stream_types
        self.stream_options_supported = _version_tuple(openai_version) >= (1, 26, 0)

    def recorder_for(self, client: Any) -> Any:
        """The recorder for a call made through `client`: a drop-in client's own tracker, else the global
        one (None when only drop-in clients are tracked, or after `unpatch()`)."""
        if self.dropins and client is not None:
            own = getattr(client, "__dict__", {}).get("_cmdrdata_recorder")
            if own is not None:
                return own
        return self.recorder


RUNTIME = Runtime()
