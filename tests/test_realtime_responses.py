"""The Responses WebSocket (`responses.connect`, `beta.responses.connect`): one `responses` event per
terminal response event, with the response's usage, model, service tier and hosted-tool units."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.derived import NAMESPACE
from cmdrdata_autopatch.diagnostics import internal_errors

from .ws_server import (
    Peer,
    WsServer,
    async_client,
    has_surface,
    new_id,
    read_session,
    resource,
    resp_created,
    resp_terminal,
    sync_client,
)

pytest.importorskip("websockets")

SURFACES = [
    pytest.param(name, marks=pytest.mark.skipif(not has_surface(name), reason=f"no {name}.connect here"))
    for name in ("responses", "beta.responses")
]
CREATE = {"type": "response.create", "model": "gpt-5.1", "input": "hi"}


def responses_events(memory: cmdrdata.MemoryExporter) -> list[dict[str, Any]]:
    return [w for w in memory.wire() if w["api"] == "responses"]


def turns_script(*terminals: dict[str, Any]) -> Any:
    def script(peer: Peer) -> None:
        for terminal in terminals:
            assert peer.recv() is not None
            peer.send(resp_created(terminal["response"]["id"]), terminal)
        peer.close()

    return script


@pytest.mark.parametrize("surface", SURFACES)
def test_completed_response_with_web_searches(memory: cmdrdata.MemoryExporter, surface: str) -> None:
    rid = new_id("resp")
    with WsServer(turns_script(resp_terminal(rid, web_searches=2))) as server:
        with cmdrdata.customer("acme", plan="pro"):
            manager = resource(sync_client(server), surface).connect()
        with manager as conn:
            conn.send(CREATE)
            received = list(conn)
        assert server.sent_by_clients() == [CREATE]
    assert [e.type for e in received] == ["response.created", "response.completed"]
    [event] = responses_events(memory)
    assert event["event_id"] == str(uuid.uuid5(NAMESPACE, f"127.0.0.1/responses/{rid}"))
    assert (event["input_tokens"], event["output_tokens"], event["total_tokens"]) == (812, 97, 909)
    assert (event["cached_input_tokens"], event["reasoning_tokens"]) == (512, 64)
    assert event["units"] == {"web_searches": 2}
    assert event["model"] == "gpt-5.1" and event["service_tier"] == "default"
    assert event["source_id"] == rid and event["customer_id"] == "acme"
    assert event["metadata"] == {"plan": "pro"}
    assert event["usage_details"]["input_tokens_details"] == {"cached_tokens": 512}
    assert internal_errors() == {}


@pytest.mark.parametrize("surface", SURFACES)
def test_incomplete_and_failed_are_billed_once_each(memory: cmdrdata.MemoryExporter, surface: str) -> None:
    done, cut, failed = new_id("resp"), new_id("resp"), new_id("resp")
    script = turns_script(
        resp_terminal(done),
        resp_terminal(cut, kind="response.incomplete"),
        resp_terminal(failed, kind="response.failed"),
    )
    with WsServer(script) as server:
        read_session(server, surface, CREATE, CREATE, CREATE)
    events = responses_events(memory)
    assert [e["source_id"] for e in events] == [done, cut, failed]
    assert [e["error_occurred"] for e in events] == [False, False, True]
    assert events[2]["error_code"] == "server_error"
    assert all(e["input_tokens"] == 812 for e in events)


@pytest.mark.parametrize("surface", SURFACES)
def test_tool_calls_counted_from_output_items(memory: cmdrdata.MemoryExporter, surface: str) -> None:
    output = [
        {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["a"]},
        {"type": "file_search_call", "id": "fs_2", "status": "completed", "queries": ["b"]},
        {
            "type": "code_interpreter_call",
            "id": "ci_1",
            "status": "completed",
            "container_id": "cntr_1",
            "code": "1",
            "outputs": [],
        },
        {
            "type": "code_interpreter_call",
            "id": "ci_2",
            "status": "completed",
            "container_id": "cntr_1",
            "code": "2",
            "outputs": [],
        },
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    ]
    with WsServer(turns_script(resp_terminal(new_id("resp"), output=output))) as server:
        read_session(server, surface, CREATE)
    [event] = responses_events(memory)
    assert event["units"] == {"web_searches": 1, "file_searches": 2, "code_interpreter_sessions": 1}


@pytest.mark.parametrize("surface", SURFACES)
def test_async_multi_turn_and_replay(memory: cmdrdata.MemoryExporter, surface: str) -> None:
    """Two turns on one socket, then a reconnect whose server replays the last `response.completed`."""
    first, second = new_id("resp"), new_id("resp")

    def script(peer: Peer) -> None:
        if peer.index == 0:
            for rid in (first, second):
                assert peer.recv() is not None
                peer.send(resp_created(rid), resp_terminal(rid))
        else:
            peer.send(resp_terminal(second))  # replayed after the reconnect
        peer.close()

    async def main(server: WsServer) -> list[int]:
        client = async_client(server)
        counts = []
        for turns in (2, 0):
            async with resource(client, surface).connect(customer_id="initech") as conn:
                for _ in range(turns):
                    await conn.send(CREATE)
                counts.append(len([event async for event in conn]))
        return counts

    with WsServer(script) as server:
        assert asyncio.run(main(server)) == [4, 1]
    events = responses_events(memory)
    assert [e["source_id"] for e in events] == [first, second]
    assert {e["customer_id"] for e in events} == {"initech"}


@pytest.mark.parametrize("surface", SURFACES)
def test_reading_styles(memory: cmdrdata.MemoryExporter, surface: str) -> None:
    from websockets.exceptions import ConnectionClosedOK

    rids = [new_id("resp") for _ in range(3)]
    server = WsServer(turns_script(*(resp_terminal(r) for r in rids)))
    try:
        with resource(sync_client(server), surface).connect() as conn:
            conn.send(CREATE)
            assert conn.recv().type == "response.created"
            assert conn.parse_event(conn.recv_bytes()).type == "response.completed"
            conn.send(CREATE)
            conn.send(CREATE)
            if hasattr(conn, "dispatch_events"):
                seen: list[str] = []
                conn.on("response.completed", lambda event: seen.append(event.response.id))
                conn.dispatch_events()
                assert seen == rids[1:]
            else:
                with pytest.raises(ConnectionClosedOK):
                    while True:
                        conn.recv()
    finally:
        server.close()
    assert [e["source_id"] for e in responses_events(memory)] == rids
