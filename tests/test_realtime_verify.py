"""The table verifier on `kind="connect"` rows: a WebSocket row resolves only where the connection and
manager methods `sessions.py` hooks exist too (synthetic in-memory wheels, no download)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from cmdrdata_autopatch.targets import TARGETS, Target

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tools import verify_targets as vt  # noqa: E402

MODULE = "openai.resources.realtime.realtime"
ROW = Target(MODULE, "Realtime.connect", "realtime", "1.103.0", kind="connect")


def realtime_source(parse_event: bool = True, enter_alias: bool = True) -> str:
    parse = "    def parse_event(self, data): ...\n" if parse_event else ""
    sync_alias = "    enter = __enter__\n" if enter_alias else ""
    async_alias = "    enter = __aenter__\n" if enter_alias else ""
    return textwrap.dedent(
        """
        class Realtime:
            def connect(self, *, model): ...
        class AsyncRealtime:
            def connect(self, *, model): ...
        class RealtimeConnection:
            def recv(self): ...
        {parse}
        class AsyncRealtimeConnection:
            async def recv(self): ...
        {parse}
        class RealtimeConnectionManager:
            def __enter__(self): ...
        {sync_alias}
        class AsyncRealtimeConnectionManager:
            async def __aenter__(self): ...
        {async_alias}
        """
    ).format(parse=parse, sync_alias=sync_alias, async_alias=async_alias)


def observe(source: str) -> vt.Observation:
    files = {
        "openai/__init__.py": "",
        "openai/resources/__init__.py": "",
        "openai/resources/realtime/__init__.py": "",
        "openai/resources/realtime/realtime.py": source,
    }
    return vt.check_source(vt.WheelSource.from_sources(files), [ROW])[ROW.key]


def test_connect_row_resolves_with_its_hooked_classes() -> None:
    assert observe(realtime_source()).state == "both"


def test_connect_row_without_parse_event_does_not_resolve() -> None:
    found = observe(realtime_source(parse_event=False))
    assert found.state == "none"
    assert "RealtimeConnection.parse_event" in found.sync.reason
    assert "AsyncRealtimeConnection.parse_event" in found.async_.reason


def test_connect_row_without_enter_alias_does_not_resolve() -> None:
    found = observe(realtime_source(enter_alias=False))
    assert found.state == "none" and "ConnectionManager.enter" in found.sync.reason


def test_hooks_listed_only_for_connect_rows() -> None:
    connect_rows = [t for t in TARGETS if t.kind == "connect"]
    assert len(connect_rows) == 7
    assert all(vt.session_hooks(t) for t in connect_rows)
    assert not any(vt.session_hooks(t) for t in TARGETS if t.kind != "connect")
