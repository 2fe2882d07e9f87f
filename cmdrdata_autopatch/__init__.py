"""cmdrdata-autopatch: bill every OpenAI call in a process to the right customer, with no code changes.

import cmdrdata_autopatch as cmdrdata
cmdrdata.patch()                      # every OpenAI client, sync and async, Azure too
with cmdrdata.customer("acme", plan="pro"):
    client.chat.completions.create(...)  # one usage event, billed to "acme"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .context import (
    carry_context,
    clear_customer_context,
    customer,
    customer_context,
    get_customer_context,
    set_customer_context,
)
from .control import current_settings, flush, get_exporter, is_patched, patch, shutdown, stats, unpatch
from .events import UsageEvent
from .exporter import MemoryExporter
from .patching import patch_status

if TYPE_CHECKING:
    from .client import AsyncTrackedOpenAI, TrackedOpenAI, UsageTracker

_CLIENT_NAMES = ("AsyncTrackedOpenAI", "TrackedOpenAI", "UsageTracker")


def __getattr__(name: str) -> Any:
    """The drop-in clients load on first use: they need `openai`, the rest of the package does not."""
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyncTrackedOpenAI",
    "MemoryExporter",
    "TrackedOpenAI",
    "UsageEvent",
    "UsageTracker",
    "__version__",
    "carry_context",
    "clear_customer_context",
    "current_settings",
    "customer",
    "customer_context",
    "flush",
    "get_customer_context",
    "get_exporter",
    "is_patched",
    "patch",
    "patch_status",
    "set_customer_context",
    "shutdown",
    "stats",
    "unpatch",
]
