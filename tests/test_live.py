"""Live sessions (`live.connect`, `live.sideband.connect`, `live.forks.connect`, openai 3.12+): one `live`
event with the final `session.closed` seconds (cumulative updates are never summed), the last cumulative
value flagged estimated when the socket ends without `session.closed`, and the delegated Responses and
Decisions usage as their own events billed to the session's customer."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.derived import NAMESPACE
from cmdrdata_autopatch.diagnostics import internal_errors

from .ws_server import (
    RESPONSES_USAGE,
    Peer,
    WsServer,
    async_client,
    has_surface,
    live_closed,
    live_decision_event,
    live_response_event,
    live_started,
    live_usage,
    new_id,
    resource,
    resp_terminal,
    sync_client,
)

pytest.importorskip("websockets")

SURFACES = [
    pytest.param(name, marks=pytest.mark.skipif(not has_surface(name), reason=f"no {name}.connect here"))
    for name in ("live", "live.sideband", "live.forks")
]
START = {"type": "session.start", "session": {"model": "gpt-live-1"}}


def _connect(client: Any, surface: str, **kwargs: Any) -> Any:
    if surface != "live":
        kwargs.setdefault("session_id", new_id("sess"))
    return resource(client, surface).connect(**kwargs)


def drain(manager: Any) -> None:
    """Read a whole session through the manager's context (its `__exit__` closes the connection)."""
    with manager as conn:
        for _ in conn:
            pass


def by_api(memory: cmdrdata.MemoryExporter, api: str) -> list[dict[str, Any]]:
    return [w for w in memory.wire() if w["api"] == api]


def full_session(session_id: str, response_id: str, delegation: str) -> Any:
    def script(peer: Peer) -> None:
        peer.send(live_started(session_id))
        for seconds in (1.0, 5.0, 9.0):
            peer.send(live_usage(seconds))
        nested = resp_terminal(response_id, model="gpt-5.1-mini")
        peer.send(live_response_event(nested, delegation), live_decision_event(delegation))
        peer.send(live_closed(session_id, 12.0, active_seconds=10, paused_seconds=2))
        peer.close()

    return script


@pytest.mark.parametrize("surface", SURFACES)
def test_full_session_bills_final_seconds_and_delegated_work(
    memory: cmdrdata.MemoryExporter, surface: str
) -> None:
    session_id, response_id, delegation = new_id("sess"), new_id("resp"), new_id("dlg")
    with WsServer(full_session(session_id, response_id, delegation)) as server:
        with cmdrdata.customer("acme"):
            manager = _connect(sync_client(server), surface)
        with manager as conn:
            received = [event.type for event in conn]
        assert server.errors == []
    assert received[-1] == "session.closed" and len(received) == 7
    [live] = by_api(memory, "live")
    assert live["units"] == {"session_seconds": 12.0}  # the final value, not 1 + 5 + 9 + 12
    assert live["usage_details"] == {"seconds": 12.0, "active_seconds": 10, "paused_seconds": 2}
    assert live["usage_source"] == "reported" and live["source_id"] == session_id
    assert live["event_id"] == str(uuid.uuid5(NAMESPACE, f"127.0.0.1/live/{session_id}"))
    assert live["model"] == "gpt-live-1" and live["customer_id"] == "acme"
    [delegated] = by_api(memory, "responses")
    assert delegated["source_id"] == response_id and delegated["model"] == "gpt-5.1-mini"
    assert delegated["input_tokens"] == RESPONSES_USAGE["input_tokens"] and delegated["customer_id"] == "acme"
    assert delegated["metadata"] == {"session_id": session_id}
    [decision] = by_api(memory, "decisions")
    assert (decision["input_tokens"], decision["output_tokens"], decision["cached_input_tokens"]) == (
        64,
        8,
        32,
    )
    assert decision["source_id"] == delegation and decision["model"] == "gpt-decide-1"
    assert len(memory.events) == 3
    assert internal_errors() == {}


@pytest.mark.parametrize("surface", SURFACES)
def test_socket_dies_before_session_closed_bills_last_cumulative_estimated(
    memory: cmdrdata.MemoryExporter, surface: str
) -> None:
    from websockets.exceptions import ConnectionClosedError

    session_id = new_id("sess")

    def script(peer: Peer) -> None:
        peer.send(live_started(session_id), live_usage(4.0), live_usage(7.0))
        peer.drop()

    with WsServer(script) as server, pytest.raises(ConnectionClosedError):
        drain(_connect(sync_client(server), surface))
    [live] = by_api(memory, "live")
    assert live["units"] == {"session_seconds": 7.0}
    assert live["usage_source"] == "estimated" and live["source_id"] == session_id


@pytest.mark.parametrize("surface", SURFACES)
def test_server_closes_without_session_closed(memory: cmdrdata.MemoryExporter, surface: str) -> None:
    """An `.enter()` session the server ends cleanly: billed (estimated) when the app closes it."""
    session_id = new_id("sess")

    def script(peer: Peer) -> None:
        peer.send(live_started(session_id), live_usage(2.0), live_usage(3.0))
        peer.close()

    with WsServer(script) as server:
        conn = _connect(sync_client(server), surface).enter()
        assert len(list(conn)) == 3
        assert by_api(memory, "live") == []  # nothing final yet: the session may still report
        conn.close()
        conn.close()  # twice: still one event
    [live] = by_api(memory, "live")
    assert live["units"] == {"session_seconds": 3.0} and live["usage_source"] == "estimated"


def test_primary_and_sideband_observing_one_session_bill_it_once(memory: cmdrdata.MemoryExporter) -> None:
    if not has_surface("live.sideband"):
        pytest.skip("no Live here")
    session_id = new_id("sess")

    def script(peer: Peer) -> None:
        if "/attach" not in peer.path:  # the primary connection starts the session (the sideband attaches)
            assert peer.recv() == START
        peer.send(live_started(session_id), live_usage(30.0), live_closed(session_id, 31.0))
        peer.close()

    with WsServer(script) as server:
        client = sync_client(server)
        with client.live.connect() as primary, client.live.sideband.connect(session_id=session_id) as side:
            primary.send(START)
            assert len(list(primary)) == 3 and len(list(side)) == 3
        assert server.sent_by_clients() == [START]  # the app's message, nothing of ours
    [live] = by_api(memory, "live")
    assert live["units"] == {"session_seconds": 31.0}


@pytest.mark.parametrize("surface", SURFACES)
def test_async_sessions_keep_the_customer_they_were_opened_with(
    memory: cmdrdata.MemoryExporter, surface: str
) -> None:
    sessions = {i: new_id("sess") for i in range(5)}

    def script(peer: Peer) -> None:
        message = peer.recv()
        assert message is not None
        i = int(message["event_id"].split("_")[1])
        peer.send(live_started(sessions[i]), live_usage(float(i)), live_closed(sessions[i], float(10 + i)))
        peer.close()

    async def main(server: WsServer) -> None:
        client = async_client(server)
        managers = []
        for i in range(5):
            with cmdrdata.customer(f"tenant-{i}"):
                managers.append(_connect(client, surface))

        async def run(i: int) -> None:
            with cmdrdata.customer("someone-else"):  # read under another block: must not matter
                async with managers[i] as conn:
                    await conn.send({**START, "event_id": f"evt_{i}"})
                    async for _ in conn:
                        pass

        await asyncio.gather(*(run(i) for i in range(5)))

    with WsServer(script) as server:
        asyncio.run(main(server))
        assert server.errors == []
    events = {e["source_id"]: e for e in by_api(memory, "live")}
    assert len(events) == 5
    for i, session_id in sessions.items():
        assert events[session_id]["customer_id"] == f"tenant-{i}"
        assert events[session_id]["units"] == {"session_seconds": float(10 + i)}


def test_sideband_names_its_session_before_the_server_does(memory: cmdrdata.MemoryExporter) -> None:
    """A sideband that sees only usage updates, then loses the socket: billed to the session it named."""
    if not has_surface("live.sideband"):
        pytest.skip("no Live here")
    session_id = new_id("sess")

    def script(peer: Peer) -> None:
        peer.send(live_usage(41.0))
        peer.close()

    with WsServer(script) as server:
        drain(sync_client(server).live.sideband.connect(session_id=session_id))
    [live] = by_api(memory, "live")
    assert live["source_id"] == session_id and live["usage_source"] == "estimated"
    assert live["units"] == {"session_seconds": 41.0}
