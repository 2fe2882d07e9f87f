"""Usage read from server-side objects, the later pieces of issue 12: the `.stream(response_id=)` hand-down,
background creates through raw responses, assistants run streams, batch pages beyond the first, evals runs
and agent turns. Real SDK through mock transports, sync and async, stream and not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.derived import derived_event_id, forget_recent
from cmdrdata_autopatch.object_billing import MEMORY

from .fake_openai import OPENAI_VERSION, FakeOpenAI
from .test_objects import BG_ID, BG_USAGE, background_response, reply, terminal_events

HAS_RETRIEVE_STREAM = OPENAI_VERSION >= (1, 82, 0)
HAS_BACKGROUND = OPENAI_VERSION >= (1, 80, 0)


@pytest.fixture(autouse=True)
def fresh_memory() -> Iterator[None]:
    MEMORY.clear()
    forget_recent()
    yield
    MEMORY.clear()
    forget_recent()


def run(use_async: bool, fake: FakeOpenAI, calls: Callable[[Any], Any]) -> Any:
    if not use_async:
        return calls(fake.client())
    return asyncio.run(calls(fake.async_client()))


def _derived(api: str, source: str, part: Any = None) -> str:
    return str(derived_event_id("openai", api, source, part))


# --- 1. `.stream(response_id=, customer_id=)` keeps the customer -------------------------------------


@pytest.mark.skipif(not HAS_RETRIEVE_STREAM, reason="stream(response_id=) needs openai>=1.82")
@pytest.mark.parametrize("use_async", [False, True])
def test_stream_response_id_keeps_the_customer_keyword(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    """Not created here (nothing remembered): the keyword on `.stream()` names who pays."""
    done = background_response("completed", BG_USAGE)
    fake.overrides[f"/v1/responses/{BG_ID}"] = reply(terminal_events(done), stream=True)

    def sync_calls(client: Any) -> None:
        with cmdrdata.customer("block"), client.responses.stream(response_id=BG_ID, customer_id="acme") as s:
            for _ in s:
                pass

    async def async_calls(client: Any) -> None:
        with cmdrdata.customer("block"):
            async with client.responses.stream(response_id=BG_ID, customer_id="acme") as stream:
                async for _ in stream:
                    pass

    run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    assert event["customer_id"] == "acme"
    assert event["event_id"] == _derived("responses", BG_ID)
    assert event["output_tokens"] == 20000
    sent = fake.requests[-1]
    assert not any(k.lower().startswith("x-cmdrdata") for k in sent.headers)  # the token never travels
    assert b"acme" not in sent.body and "acme" not in sent.path


@pytest.mark.skipif(not HAS_RETRIEVE_STREAM, reason="stream(response_id=) needs openai>=1.82")
def test_stream_response_id_untracked_records_nothing(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    done = background_response("completed", BG_USAGE)
    fake.overrides[f"/v1/responses/{BG_ID}"] = reply(terminal_events(done), stream=True)
    with fake.client().responses.stream(response_id=BG_ID, track_usage=False) as stream:
        for _ in stream:
            pass
    assert memory.wire() == []


# --- 2. a background create records no usage of its own, on every path ------------------------------


@pytest.mark.skipif(not HAS_BACKGROUND, reason="background responses need openai>=1.80")
@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("mode", ["raw", "streaming"])
def test_background_create_through_raw_responses_records_nothing_until_finished(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool, mode: str
) -> None:
    fake.overrides["/responses"] = reply(background_response("queued"))
    done = background_response("completed", BG_USAGE)
    fake.overrides[f"/v1/responses/{BG_ID}"] = reply(done)
    kwargs = {"model": "gpt-4.1", "input": "long job", "background": True, "customer_id": "acme"}

    def sync_calls(client: Any) -> None:
        if mode == "raw":
            created = client.responses.with_raw_response.create(**kwargs).parse()
        else:
            with client.responses.with_streaming_response.create(**kwargs) as raw:
                created = raw.parse()
        assert created.id == BG_ID and created.status == "queued"
        assert memory.wire() == []  # no input estimate
        assert cmdrdata.stats()["objects"]["background_pending"] == 1
        with cmdrdata.customer("poller"):
            client.responses.retrieve(BG_ID)

    async def async_calls(client: Any) -> None:
        if mode == "raw":
            created = (await client.responses.with_raw_response.create(**kwargs)).parse()  # sync parse
        else:
            async with client.responses.with_streaming_response.create(**kwargs) as raw:
                created = await raw.parse()
        assert created.id == BG_ID
        assert memory.wire() == []
        with cmdrdata.customer("poller"):
            await client.responses.retrieve(BG_ID)

    run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    assert event["customer_id"] == "acme"  # remembered from the raw create
    assert event["event_id"] == _derived("responses", BG_ID)
    assert (event["input_tokens"], event["output_tokens"]) == (1000, 20000)
    assert cmdrdata.stats()["objects"]["background_pending"] == 0


@pytest.mark.skipif(not HAS_BACKGROUND, reason="background responses need openai>=1.80")
def test_background_raw_create_never_parsed_records_nothing(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    import gc

    fake.overrides["/responses"] = reply(background_response("queued"))
    raw = fake.client().responses.with_raw_response.create(model="gpt-4.1", input="x", background=True)
    assert raw.http_response.status_code == 200
    del raw
    gc.collect()
    assert memory.wire() == []


@pytest.mark.skipif(not HAS_BACKGROUND, reason="background responses need openai>=1.80")
def test_background_raw_create_streamed_is_billed_as_its_object(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    done = background_response("completed", BG_USAGE)
    fake.overrides["/responses"] = reply(terminal_events(done), stream=True)
    client = fake.client()
    raw = client.responses.with_raw_response.create(
        model="gpt-4.1", input="x", background=True, stream=True, customer_id="streamer"
    )
    list(raw.parse())
    fake.overrides[f"/v1/responses/{BG_ID}"] = reply(done)
    client.responses.retrieve(BG_ID)  # the same object: not billed again
    (event,) = memory.wire()
    assert event["event_id"] == _derived("responses", BG_ID)
    assert event["customer_id"] == "streamer"
    assert event["output_tokens"] == 20000
