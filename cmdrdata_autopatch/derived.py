"""Derived event ids: usage read from a server-side object is billed once, whoever sees it.

DESIGN.md section 4: an event that bills a server-side object (a realtime response, a transcribed audio
item, a Live session, a background response, a batch...) carries `event_id` =
uuid5(NAMESPACE, "<provider>/<api>/<source_id>[/<part>]") instead of a random one, so two processes, a
reconnect that replays the object's terminal event, or two connections observing one session all produce
the same id, and the CmdrData API's deduplication bills it once. `first_time()` spares the exporter the
repeats inside one process.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from typing import Any, Optional

from .events import UsageEvent

# Fixed forever: changing it would change every derived event id and defeat the API's deduplication.
NAMESPACE = uuid.UUID("6f1c7a52-5b0e-4c1e-9a55-2f8d3c0b7e41")

_RECENT_LIMIT = 8192
_recent: OrderedDict[str, None] = OrderedDict()  # derived ids recorded lately in this process
_recent_lock = threading.Lock()


def derived_event_id(
    provider: Optional[str], api: str, source_id: str, part: Optional[str] = None
) -> uuid.UUID:
    """The event id of usage read from a server-side object: the same in every process that sees it."""
    name = f"{provider or 'openai'}/{api}/{source_id}" + (f"/{part}" if part else "")
    return uuid.uuid5(NAMESPACE, name)


class SessionEvent(UsageEvent):
    """A usage event whose id is derived from the billed object (random when there is no object id)."""

    def set_ids(
        self, derived: Optional[uuid.UUID], source_id: Optional[str], service_tier: Optional[str]
    ) -> None:
        self.__dict__["_derived_id"] = derived
        self.source_id = source_id
        self.service_tier = service_tier

    @property
    def event_id(self) -> str:
        derived = self.__dict__.get("_derived_id")
        return str(derived) if derived is not None else super().event_id

    def to_wire(self) -> dict[str, Any]:
        wire = super().to_wire()
        for name in ("service_tier", "source_id"):  # second-release fields, when events.py lacks them
            if name not in wire:
                wire[name] = getattr(self, name, None)
        return wire


def first_time(event_id: str) -> bool:
    """True the first time this process records `event_id` (bounded memory)."""
    with _recent_lock:
        if event_id in _recent:
            return False
        _recent[event_id] = None
        if len(_recent) > _RECENT_LIMIT:
            _recent.popitem(last=False)
        return True


def forget_recent() -> None:
    """Forget the derived ids recorded so far (a fresh process, as far as `first_time` knows: tests)."""
    with _recent_lock:
        _recent.clear()
