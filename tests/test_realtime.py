"""Realtime sessions (GA `realtime.connect` and `beta.realtime.connect`) billed from the server events the
real SDK parses, against a loopback WebSocket server: every reading style, sync and async, multi-turn,
replays after a reconnect, a socket dropped mid-response, a server-closed session, 50 concurrent sessions,
and proof that the application receives exactly what it would without us and that we send nothing."""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from typing import Any, Callable

import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.derived import NAMESPACE
from cmdrdata_autopatch.diagnostics import internal_errors

from .ws_server import (
    REALTIME_USAGE,
    Peer,
    WsServer,
    async_client,
    has_surface,
    new_id,
    read_session,
    resource,
    rt_response_created,
    rt_response_done,
    rt_session_created,
    rt_session_updated,
    rt_text_delta,
    rt_transcription_completed,
    sync_client,
)

pytest.importorskip("websockets")
# openai < 1.58 has no Realtime at all: the tests that pick whichever surface is installed have none to pick
pytestmark = pytest.mark.skipif(
    not (has_surface("realtime") or has_surface("beta.realtime")), reason="no Realtime API in this openai"
)

SURFACES = [
    pytest.param(name, marks=pytest.mark.skipif(not has_surface(name), reason=f"no {name}.connect here"))
    for name in ("realtime", "beta.realtime")
]
MODEL = "gpt-realtime"


def realtime_events(memory: cmdrdata.MemoryExporter, api: str = "realtime") -> list[dict[str, Any]]:
    return [w for w in memory.wire() if w["api"] == api]


def one_turn_script(session_id: str, response_id: str, item_id: str) -> Callable[[Peer], None]:
    """session.created, then on the client's response.create: a response with usage and a transcription."""

    def script(peer: Peer) -> None:
        peer.send(rt_session_created(session_id, MODEL, "gpt-4o-transcribe"))
        assert peer.recv() is not None
        peer.send(rt_response_created(response_id), rt_text_delta(response_id))
        peer.send(rt_response_done(response_id, REALTIME_USAGE))
        peer.send(rt_transcription_completed(item_id, {"type": "duration", "seconds": 3.2}))
        peer.close()

    return script


def _read_iter(conn: Any) -> list[Any]:
    return list(conn)


def _read_recv(conn: Any) -> list[Any]:
    from websockets.exceptions import ConnectionClosedOK

    out = []
    while True:
        try:
            out.append(conn.recv())
        except ConnectionClosedOK:
            return out


def _read_bytes(conn: Any) -> list[Any]:
    from websockets.exceptions import ConnectionClosedOK

    out = []
    while True:
        try:
            out.append(conn.parse_event(conn.recv_bytes()))
        except ConnectionClosedOK:
            return out


def _read_dispatch(conn: Any) -> list[Any]:
    out: list[Any] = []
    conn.on("event", out.append)
    conn.dispatch_events()
    return out


READERS = {"iterate": _read_iter, "recv": _read_recv, "recv_bytes+parse_event": _read_bytes}
READERS["dispatch_events"] = _read_dispatch


def _check_turn(
    memory: cmdrdata.MemoryExporter, response_id: str, item_id: str, customer: str | None
) -> None:
    [event] = realtime_events(memory)
    assert event["source_id"] == response_id
    assert event["event_id"] == str(uuid.uuid5(NAMESPACE, f"127.0.0.1/realtime/{response_id}"))
    assert (event["input_tokens"], event["output_tokens"], event["total_tokens"]) == (521, 20, 541)
    assert event["cached_input_tokens"] == 128
    details = event["usage_details"]["input_token_details"]
    assert (details["text_tokens"], details["audio_tokens"]) == (292, 229)
    assert event["usage_details"]["output_token_details"] == {"text_tokens": 5, "audio_tokens": 15}
    assert event["model"] == MODEL and event["usage_source"] == "reported" and event["streaming"] is True
    assert event["customer_id"] == customer
    [transcription] = realtime_events(memory, "realtime.transcription")
    assert transcription["units"] == {"audio_seconds": 3.2}
    assert transcription["source_id"] == item_id and transcription["model"] == "gpt-4o-transcribe"
    assert transcription["input_tokens"] == 0 and transcription["usage_source"] == "reported"
    assert transcription["customer_id"] == customer
    assert len(memory.events) == 2
    assert internal_errors() == {}


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reading_style_bills_each_server_event_once(
    memory: cmdrdata.MemoryExporter, surface: str, reader: str
) -> None:
    session_id, response_id, item_id = new_id("sess"), new_id("resp"), new_id("item")
    with WsServer(one_turn_script(session_id, response_id, item_id)) as server:
        realtime = resource(sync_client(server), surface)
        with realtime.connect(model=MODEL, customer_id="acme") as conn:
            if reader == "dispatch_events" and not hasattr(conn, "dispatch_events"):
                pytest.skip("dispatch_events arrived after this release")
            conn.send({"type": "response.create"})
            received = READERS[reader](conn)
        assert server.errors == []
    assert [e.type for e in received][-2:] == [
        "response.done",
        "conversation.item.input_audio_transcription.completed",
    ]
    _check_turn(memory, response_id, item_id, "acme")
    assert realtime_events(memory)[0]["metadata"] == {"session_id": session_id}


@pytest.mark.parametrize("surface", SURFACES)
def test_async_session_bills_like_sync(memory: cmdrdata.MemoryExporter, surface: str) -> None:
    session_id, response_id, item_id = new_id("sess"), new_id("resp"), new_id("item")

    async def main(server: WsServer) -> list[str]:
        realtime = resource(async_client(server), surface)
        with cmdrdata.customer("globex"):
            manager = realtime.connect(model=MODEL)
        async with manager as conn:
            await conn.send({"type": "response.create"})
            return [event.type async for event in conn]

    with WsServer(one_turn_script(session_id, response_id, item_id)) as server:
        types = asyncio.run(main(server))
    assert "response.done" in types
    _check_turn(memory, response_id, item_id, "globex")


def multi_turn_script(session_id: str, turns: list[str], usage: Callable[[int], dict[str, Any]]) -> Any:
    def script(peer: Peer) -> None:
        peer.send(rt_session_created(session_id, "gpt-realtime-mini"))
        for i, response_id in enumerate(turns):
            assert peer.recv() is not None  # the app's response.create
            peer.send(rt_response_created(response_id), rt_text_delta(response_id))
            peer.send(rt_response_done(response_id, usage(i)))
        peer.send(rt_session_updated(session_id, "gpt-realtime"))
        peer.close()

    return script


def _usage(i: int) -> dict[str, Any]:
    return {
        "total_tokens": 110 + i,
        "input_tokens": 100 + i,
        "output_tokens": 10,
        "input_token_details": {"text_tokens": 100 + i, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 10, "audio_tokens": 0},
    }


@pytest.mark.parametrize("surface", SURFACES)
def test_multi_turn_session_one_event_per_response_done(
    memory: cmdrdata.MemoryExporter, surface: str
) -> None:
    session_id = new_id("sess")
    turns = [new_id("resp") for _ in range(4)]
    with WsServer(multi_turn_script(session_id, turns, _usage)) as server:
        with resource(sync_client(server), surface).connect(model=MODEL) as conn:
            for _ in turns:
                conn.send({"type": "response.create"})
                while conn.recv().type != "response.done":
                    pass
            rest = list(conn)
        sent = server.sent_by_clients()
    assert [e.type for e in rest] == ["session.updated"]
    events = realtime_events(memory)
    assert [e["source_id"] for e in events] == turns
    assert [e["input_tokens"] for e in events] == [100, 101, 102, 103]
    assert {e["model"] for e in events} == {"gpt-realtime-mini"}  # the model session.created named
    assert sent == [{"type": "response.create"}] * 4  # exactly what the app sent, nothing of ours
    assert all(e["latency_ms"] >= 0 for e in events)


@pytest.mark.parametrize("surface", SURFACES)
def test_reconnect_replaying_response_done_bills_nothing_twice(
    memory: cmdrdata.MemoryExporter, surface: str
) -> None:
    """The app reconnects (a new connection) and the server replays the last response.done."""
    first, second = new_id("resp"), new_id("resp")
    session_id = new_id("sess")

    def script(peer: Peer) -> None:
        peer.send(rt_session_created(session_id, MODEL))
        if peer.index == 0:
            peer.send(rt_response_done(first, REALTIME_USAGE))
        else:
            peer.send(rt_response_done(first, REALTIME_USAGE), rt_response_done(second, _usage(1)))
        peer.close()

    with WsServer(script) as server:
        client = sync_client(server)
        for _ in range(2):
            with resource(client, surface).connect(model=MODEL) as conn:
                list(conn)
    events = realtime_events(memory)
    assert [e["source_id"] for e in events] == [first, second]
    assert events[0]["input_tokens"] == 521 and events[1]["input_tokens"] == 101


def test_sdk_reconnect_replaying_response_done_bills_nothing_twice(memory: cmdrdata.MemoryExporter) -> None:
    """The SDK's own reconnection (3.x `on_reconnecting`): the same connection object, a new socket."""
    if not has_surface("realtime"):
        pytest.skip("no GA realtime here")
    from openai.resources.realtime.realtime import Realtime

    if "on_reconnecting" not in inspect.signature(Realtime.connect).parameters:
        pytest.skip("the SDK reconnects by itself only from 3.x")
    first, second = new_id("resp"), new_id("resp")

    def script(peer: Peer) -> None:
        peer.send(rt_session_created(new_id("sess"), MODEL))
        if peer.index == 0:
            peer.send(rt_response_done(first, REALTIME_USAGE))
            peer.close(code=1012)  # service restart: recoverable
        else:
            peer.send(rt_response_done(first, REALTIME_USAGE), rt_response_done(second, _usage(2)))
            peer.close()

    with WsServer(script) as server:
        realtime = sync_client(server).realtime
        manager = realtime.connect(model=MODEL, on_reconnecting=lambda event: None, initial_delay=0.01)
        with manager as conn:
            types = [e.type for e in conn]
        assert len(server.paths) == 2
    assert types.count("response.done") == 3  # the app still sees the replay: we change nothing
    assert [e["source_id"] for e in realtime_events(memory)] == [first, second]


@pytest.mark.parametrize("surface", SURFACES)
def test_socket_dropped_mid_response(memory: cmdrdata.MemoryExporter, surface: str) -> None:
    """The finished response is billed, the unfinished one is not, and the app gets the SDK's own error."""
    from websockets.exceptions import ConnectionClosedError

    done, cut = new_id("resp"), new_id("resp")

    def script(peer: Peer) -> None:
        peer.send(rt_session_created(new_id("sess"), MODEL), rt_response_done(done, REALTIME_USAGE))
        peer.send(rt_response_created(cut), rt_text_delta(cut))
        peer.drop()

    seen: list[str] = []
    with WsServer(script) as server, pytest.raises(ConnectionClosedError):
        conn = resource(sync_client(server), surface).connect(model=MODEL).enter()
        try:
            for event in conn:
                seen.append(event.type)
        finally:
            conn.close()
    assert seen[-1] == "response.output_text.delta"
    assert [e["source_id"] for e in realtime_events(memory)] == [done]


@pytest.mark.parametrize("surface", SURFACES)
def test_session_closed_by_server_ends_iteration_and_keeps_bills(
    memory: cmdrdata.MemoryExporter, surface: str
) -> None:
    response_id = new_id("resp")

    def script(peer: Peer) -> None:
        peer.send(rt_session_created(new_id("sess"), MODEL), rt_response_done(response_id, REALTIME_USAGE))
        peer.close(code=1000, reason="session expired")

    with WsServer(script) as server:
        conn = resource(sync_client(server), surface).connect(model=MODEL).enter()
        try:
            assert [e.type for e in conn] == ["session.created", "response.done"]
        finally:
            conn.close()
    assert [e["source_id"] for e in realtime_events(memory)] == [response_id]


@pytest.mark.parametrize("surface", SURFACES)
def test_app_receives_the_same_events_with_and_without_us(surface: str) -> None:
    """Identical scripted bytes, read once unpatched and once patched: equal event objects and types."""
    rid = new_id("resp")  # derived ids are remembered process-wide: every test bills its own objects
    events = [
        rt_session_created(new_id("sess"), MODEL),
        rt_response_created(rid),
        rt_text_delta(rid),
        rt_response_done(rid, REALTIME_USAGE, status="failed"),
    ]

    def script(peer: Peer) -> None:
        peer.send(*events)
        peer.close()

    def read() -> list[Any]:
        with WsServer(script) as server:
            return read_session(server, surface, model=MODEL)

    bare = read()
    cmdrdata.patch(exporter="memory")
    try:
        watched = read()
        wire = cmdrdata.get_exporter().wire()
    finally:
        cmdrdata.unpatch()
    assert [type(e) for e in watched] == [type(e) for e in bare]
    assert [e.to_dict() if hasattr(e, "to_dict") else e.dict() for e in watched] == [
        e.to_dict() if hasattr(e, "to_dict") else e.dict() for e in bare
    ]
    [event] = [w for w in wire if w["source_id"] == rid]
    assert event["error_occurred"] is True and event["error_code"] == "boom"
    assert event["input_tokens"] == 521  # a failed response still bills what it used


def test_transcription_usage_in_tokens(memory: cmdrdata.MemoryExporter) -> None:
    surface = "realtime" if has_surface("realtime") else "beta.realtime"
    item = new_id("item")
    usage = {
        "type": "tokens",
        "input_tokens": 31,
        "output_tokens": 7,
        "total_tokens": 38,
        "input_token_details": {"text_tokens": 0, "audio_tokens": 31},
    }

    def script(peer: Peer) -> None:
        peer.send(rt_session_created(new_id("sess"), MODEL), rt_transcription_completed(item, usage))
        peer.close()

    with WsServer(script) as server, resource(sync_client(server), surface).connect(model=MODEL) as conn:
        list(conn)
    [event] = realtime_events(memory, "realtime.transcription")
    assert (event["input_tokens"], event["output_tokens"], event["total_tokens"]) == (31, 7, 38)
    assert event["units"] is None and event["usage_details"]["input_token_details"]["audio_tokens"] == 31


def test_fifty_concurrent_sessions_with_different_customers(memory: cmdrdata.MemoryExporter) -> None:
    """Opened inside each customer's block, read in tasks that have no block at all."""
    surface = "realtime" if has_surface("realtime") else "beta.realtime"
    ids = {i: new_id("resp") for i in range(50)}

    def script(peer: Peer) -> None:
        message = peer.recv()
        assert message is not None
        i = int(message["event_id"].split("_")[1])
        peer.send(rt_session_created(new_id("sess"), MODEL), rt_response_created(ids[i]))
        peer.send(rt_response_done(ids[i], _usage(i)))
        peer.close()

    async def main(server: WsServer) -> None:
        client = async_client(server)
        managers = []
        for i in range(50):
            with cmdrdata.customer(f"customer-{i}", seat=i):
                managers.append(resource(client, surface).connect(model=MODEL))

        async def run(i: int) -> None:
            async with managers[i] as conn:
                await conn.send({"type": "response.create", "event_id": f"evt_{i}"})
                async for _ in conn:
                    pass

        await asyncio.gather(*(run(i) for i in range(50)))

    with WsServer(script) as server:
        asyncio.run(main(server))
        assert server.errors == []
    events = realtime_events(memory)
    assert len(events) == 50
    by_source = {e["source_id"]: e for e in events}
    for i, response_id in ids.items():
        event = by_source[response_id]
        assert event["customer_id"] == f"customer-{i}"
        assert event["metadata"]["seat"] == i
        assert event["input_tokens"] == 100 + i


def test_customer_keyword_is_taken_off_and_validated(memory: cmdrdata.MemoryExporter) -> None:
    surface = "realtime" if has_surface("realtime") else "beta.realtime"
    with WsServer(lambda peer: peer.close()) as server:
        realtime = resource(sync_client(server), surface)
        with pytest.raises(ValueError, match="customer_id"):
            realtime.connect(model=MODEL, customer_id=42)
        with realtime.connect(model=MODEL, customer_id="acme", cmdrdata_metadata={"plan": "pro"}) as conn:
            assert list(conn) == []
        assert server.paths and "customer" not in server.paths[0]


def test_track_usage_false_records_nothing(memory: cmdrdata.MemoryExporter) -> None:
    surface = "realtime" if has_surface("realtime") else "beta.realtime"

    def script(peer: Peer) -> None:
        peer.send(rt_session_created(new_id("sess"), MODEL), rt_response_done(new_id("resp"), REALTIME_USAGE))
        peer.close()

    with WsServer(script) as server:
        assert len(read_session(server, surface, model=MODEL, track_usage=False)) == 2
    assert memory.events == []


@pytest.mark.parametrize("surface", SURFACES)
def test_unpatch_restores_every_hooked_method(surface: str) -> None:
    import importlib

    module = importlib.import_module(
        "openai.resources.realtime.realtime"
        if surface == "realtime"
        else "openai.resources.beta.realtime.realtime"
    )
    names = {
        "Realtime": ["connect"],
        "AsyncRealtime": ["connect"],
        "RealtimeConnectionManager": ["__enter__", "enter"],
        "AsyncRealtimeConnectionManager": ["__aenter__", "enter"],
        "RealtimeConnection": ["parse_event", "close"],
        "AsyncRealtimeConnection": ["parse_event", "close"],
    }
    before = {(c, m): getattr(module, c).__dict__.get(m) for c, ms in names.items() for m in ms}
    cmdrdata.patch(exporter="memory")
    try:
        assert all(
            getattr(module, c).__dict__.get(m) is not before[(c, m)] for c, ms in names.items() for m in ms
        )
    finally:
        cmdrdata.unpatch()
    assert {(c, m): getattr(module, c).__dict__.get(m) for c, ms in names.items() for m in ms} == before


def test_events_are_json_and_carry_no_secret(memory: cmdrdata.MemoryExporter) -> None:
    surface = "realtime" if has_surface("realtime") else "beta.realtime"
    with WsServer(one_turn_script(new_id("sess"), new_id("resp"), new_id("item"))) as server:
        read_session(server, surface, {"type": "response.create"}, model=MODEL)
    for event in memory.events:
        body = event.to_json()
        assert b"sk-test" not in body
        assert json.loads(body)["api"].startswith("realtime")


def test_sideband_call_id_connection_is_billed(memory: cmdrdata.MemoryExporter) -> None:
    """`realtime.connect(call_id=...)` joins an existing (SIP / WebRTC) call: same events, same bills."""
    if not has_surface("realtime"):
        pytest.skip("no GA realtime here")
    from openai.resources.realtime.realtime import Realtime

    if "call_id" not in inspect.signature(Realtime.connect).parameters:
        pytest.skip("connect(call_id=) arrived after this release")
    response_id = new_id("resp")

    def script(peer: Peer) -> None:
        peer.send(rt_session_created(new_id("sess"), MODEL), rt_response_done(response_id, REALTIME_USAGE))
        peer.close()

    with WsServer(script) as server:
        read_session(server, "realtime", call_id="rtc_abc123", customer_id="caller-7")
        assert "call_id=rtc_abc123" in server.paths[0]
    [event] = realtime_events(memory)
    assert event["source_id"] == response_id and event["customer_id"] == "caller-7"


@pytest.mark.parametrize("surface", SURFACES)
def test_connect_before_patch_is_billed_to_the_block_active_at_opening(surface: str) -> None:
    response_id = new_id("resp")

    def script(peer: Peer) -> None:
        peer.send(rt_session_created(new_id("sess"), MODEL), rt_response_done(response_id, REALTIME_USAGE))
        peer.close()

    with WsServer(script) as server:
        manager = resource(sync_client(server), surface).connect(model=MODEL)  # not patched yet
        cmdrdata.patch(exporter="memory")
        try:
            with cmdrdata.customer("late"):
                conn = manager.enter()
            try:
                assert len(list(conn)) == 2
            finally:
                conn.close()
            wire = cmdrdata.get_exporter().wire()
        finally:
            cmdrdata.unpatch()
    [event] = [w for w in wire if w["api"] == "realtime"]
    assert event["source_id"] == response_id and event["customer_id"] == "late"


@pytest.mark.parametrize("surface", SURFACES)
def test_unpatch_mid_session_stops_billing_and_reading_goes_on(surface: str) -> None:
    before, after = new_id("resp"), new_id("resp")

    def script(peer: Peer) -> None:
        peer.send(rt_session_created(new_id("sess"), MODEL), rt_response_done(before, REALTIME_USAGE))
        assert peer.recv() is not None
        peer.send(rt_response_done(after, REALTIME_USAGE))
        peer.close()

    cmdrdata.patch(exporter="memory")
    exporter = cmdrdata.get_exporter()
    server = WsServer(script)
    try:
        with resource(sync_client(server), surface).connect(model=MODEL) as conn:
            assert [conn.recv().type for _ in range(2)] == ["session.created", "response.done"]
            cmdrdata.unpatch()
            conn.send({"type": "response.create"})
            assert [e.type for e in conn] == ["response.done"]
    finally:
        cmdrdata.unpatch()
        server.close()
    assert [w["source_id"] for w in exporter.wire()] == [before]


def test_drop_in_tracked_client_sends_session_events_to_its_own_tracker() -> None:
    from cmdrdata_autopatch import MemoryExporter, TrackedOpenAI

    surface = "realtime" if has_surface("realtime") else "beta.realtime"
    response_id = new_id("resp")

    def script(peer: Peer) -> None:
        peer.send(rt_session_created(new_id("sess"), MODEL), rt_response_done(response_id, REALTIME_USAGE))
        peer.close()

    tracker = MemoryExporter()
    with WsServer(script) as server:
        client = TrackedOpenAI(
            api_key="sk-test-not-a-secret",
            base_url=server.base_url,
            websocket_base_url=server.ws_url,
            tracker=tracker,
        )
        try:
            with resource(client, surface).connect(model=MODEL, customer_id="tenant-a") as conn:
                assert len(list(conn)) == 2
        finally:
            del client
            cmdrdata.unpatch()  # with the drop-in client gone, the classes get their originals back
    assert not cmdrdata.is_patched()
    [event] = tracker.wire()
    assert event["source_id"] == response_id and event["customer_id"] == "tenant-a"


async def _aread_recv(conn: Any) -> list[Any]:
    from websockets.exceptions import ConnectionClosedOK

    out = []
    while True:
        try:
            out.append(await conn.recv())
        except ConnectionClosedOK:
            return out


async def _aread_bytes(conn: Any) -> list[Any]:
    from websockets.exceptions import ConnectionClosedOK

    out = []
    while True:
        try:
            out.append(conn.parse_event(await conn.recv_bytes()))
        except ConnectionClosedOK:
            return out


async def _aread_dispatch(conn: Any) -> list[Any]:
    out: list[Any] = []
    conn.on("event", out.append)
    await conn.dispatch_events()
    return out


ASYNC_READERS = {
    "recv": _aread_recv,
    "recv_bytes+parse_event": _aread_bytes,
    "dispatch_events": _aread_dispatch,
}


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("reader", sorted(ASYNC_READERS))
def test_async_reading_styles(memory: cmdrdata.MemoryExporter, surface: str, reader: str) -> None:
    session_id, response_id, item_id = new_id("sess"), new_id("resp"), new_id("item")

    async def main(server: WsServer) -> list[Any]:
        async with resource(async_client(server), surface).connect(model=MODEL, customer_id="acme") as conn:
            if reader == "dispatch_events" and not hasattr(conn, "dispatch_events"):
                pytest.skip("dispatch_events arrived after this release")
            await conn.send({"type": "response.create"})
            return await ASYNC_READERS[reader](conn)

    with WsServer(one_turn_script(session_id, response_id, item_id)) as server:
        received = asyncio.run(main(server))
    assert [e.type for e in received][-2] == "response.done"
    _check_turn(memory, response_id, item_id, "acme")


def test_sync_sessions_opened_in_one_thread_read_in_others(memory: cmdrdata.MemoryExporter) -> None:
    """Connections opened under each customer's block on the main thread, read by worker threads."""
    import threading

    surface = "realtime" if has_surface("realtime") else "beta.realtime"
    ids = {i: new_id("resp") for i in range(10)}

    def script(peer: Peer) -> None:
        message = peer.recv()
        assert message is not None
        i = int(message["event_id"].split("_")[1])
        peer.send(rt_session_created(new_id("sess"), MODEL), rt_response_done(ids[i], _usage(i)))
        peer.close()

    with WsServer(script) as server:
        client = sync_client(server)
        connections = []
        for i in range(10):
            with cmdrdata.customer(f"thread-customer-{i}"):
                connections.append(resource(client, surface).connect(model=MODEL).enter())

        def read(i: int) -> None:
            conn = connections[i]
            try:
                conn.send({"type": "response.create", "event_id": f"evt_{i}"})
                list(conn)
            finally:
                conn.close()

        threads = [threading.Thread(target=read, args=(i,)) for i in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert server.errors == []
    by_source = {e["source_id"]: e for e in realtime_events(memory)}
    assert len(by_source) == 10
    for i, response_id in ids.items():
        assert by_source[response_id]["customer_id"] == f"thread-customer-{i}"
        assert by_source[response_id]["input_tokens"] == 100 + i


@pytest.mark.parametrize("surface", SURFACES)
def test_a_frame_the_sdk_cannot_parse_raises_the_sdks_own_error(
    memory: cmdrdata.MemoryExporter, surface: str
) -> None:
    def script(peer: Peer) -> None:
        peer.conn.send("{not json")
        peer.close()

    with WsServer(script) as server:
        conn = resource(sync_client(server), surface).connect(model=MODEL).enter()
        try:
            with pytest.raises(json.JSONDecodeError):
                conn.recv()
        finally:
            conn.close()
    assert memory.events == [] and internal_errors() == {}
