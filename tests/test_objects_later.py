"""Usage read from server-side objects, the later pieces of issue 12: the `.stream(response_id=)` hand-down,
background creates through raw responses, assistants run streams, batch pages beyond the first, evals runs
and agent turns. Real SDK through mock transports, sync and async, stream and not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

import cmdrdata_autopatch as cmdrdata

from .fake_openai import OPENAI_VERSION, FakeOpenAI
from .objects_support import (
    BATCH_USAGE,
    BG_ID,
    BG_USAGE,
    HAS_BACKGROUND,
    HAS_RETRIEVE_STREAM,
    HAS_RUN_USAGE,
    RUN_USAGE,
    background_response,
    batch,
    derived,
    events_of_two_processes,
    reply,
    run,
    run_object,
    terminal_events,
)

pytestmark = pytest.mark.usefixtures("fresh_object_memory")


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
    assert event["event_id"] == derived("responses", BG_ID)
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
    assert event["event_id"] == derived("responses", BG_ID)
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
    assert event["event_id"] == derived("responses", BG_ID)
    assert event["customer_id"] == "streamer"
    assert event["output_tokens"] == 20000


# --- 3. assistants run streams ------------------------------------------------------------------------

HAS_RUN_STREAM = OPENAI_VERSION >= (1, 14, 0)
HAS_RUNS_STREAM_HELPER = OPENAI_VERSION >= (1, 16, 0)
RUNS = "/v1/threads/thread_1/runs"


def run_sse(*events: tuple[str, dict[str, Any]]) -> Callable[..., Any]:
    """An assistants SSE stream: the event name is the SSE `event:` line, the object its data."""
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    payload = (body + "event: done\ndata: [DONE]\n\n").encode()

    def answer(method: str, path: str, headers: dict[str, str], raw: bytes) -> Any:
        return 200, {"content-type": "text/event-stream", "x-request-id": "req_run"}, payload

    return answer


def message(status: str = "in_progress") -> dict[str, Any]:
    return {
        "id": "msg_1",
        "object": "thread.message",
        "created_at": 1700000000,
        "thread_id": "thread_1",
        "role": "assistant",
        "content": [],
        "assistant_id": "asst_1",
        "run_id": "run_1",
        "attachments": [],
        "file_ids": [],
        "metadata": {},
        "status": status,
    }


def message_delta() -> dict[str, Any]:
    return {
        "id": "msg_1",
        "object": "thread.message.delta",
        "delta": {"content": [{"index": 0, "type": "text", "text": {"value": "hi", "annotations": []}}]},
    }


def full_run_stream(final: str = "completed", usage: Any = RUN_USAGE) -> Callable[..., Any]:
    return run_sse(
        ("thread.run.created", run_object("queued")),
        ("thread.run.in_progress", run_object("in_progress")),
        ("thread.message.created", message()),
        ("thread.message.delta", message_delta()),
        (f"thread.run.{final}", run_object(final, usage)),
    )


def _check_run_event(event: dict[str, Any], customer: str, streaming: bool = True) -> None:
    assert event["api"] == "assistants.runs"
    assert event["source_id"] == "run_1"
    assert event["event_id"] == derived("assistants.runs", "run_1")
    assert event["customer_id"] == customer
    assert event["streaming"] is streaming
    assert (event["input_tokens"], event["output_tokens"], event["total_tokens"]) == (400, 60, 460)
    assert event["model"] == "gpt-4o-2024-08-06"
    assert event["usage_source"] == "reported"


@pytest.mark.skipif(not HAS_RUNS_STREAM_HELPER, reason="runs.stream needs openai>=1.16")
@pytest.mark.parametrize("use_async", [False, True])
def test_runs_stream_helper_bills_the_run_once_then_polls_bill_nothing(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides[RUNS] = full_run_stream()
    fake.overrides[f"{RUNS}/run_1"] = reply(run_object("completed", RUN_USAGE))
    args = {"thread_id": "thread_1", "assistant_id": "asst_1", "customer_id": "acme"}

    def sync_calls(client: Any) -> None:
        with client.beta.threads.runs.stream(**args) as stream:
            stream.until_done()
            assert stream.current_run.status == "completed"
        assert len(memory.wire()) == 1  # billed when the terminal event went by
        with cmdrdata.customer("poller"):
            for _ in range(3):
                client.beta.threads.runs.retrieve("run_1", thread_id="thread_1")

    async def async_calls(client: Any) -> None:
        async with client.beta.threads.runs.stream(**args) as stream:
            await stream.until_done()
            assert stream.current_run.status == "completed"
        assert len(memory.wire()) == 1
        with cmdrdata.customer("poller"):
            for _ in range(3):
                await client.beta.threads.runs.retrieve("run_1", thread_id="thread_1")

    run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    _check_run_event(event, "acme")
    assert "customer_id" not in fake.requests[0].json()  # our keyword never reaches OpenAI


@pytest.mark.skipif(not HAS_RUN_STREAM, reason="run streams need openai>=1.14")
@pytest.mark.parametrize("use_async", [False, True])
def test_runs_create_stream_plain_iteration_bills_once(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides[RUNS] = full_run_stream()

    def sync_calls(client: Any) -> list[str]:
        with cmdrdata.customer("iter"):
            stream = client.beta.threads.runs.create(thread_id="thread_1", assistant_id="asst_1", stream=True)
        return [e.event for e in stream]

    async def async_calls(client: Any) -> list[str]:
        with cmdrdata.customer("iter"):
            stream = await client.beta.threads.runs.create(
                thread_id="thread_1", assistant_id="asst_1", stream=True
            )
        return [e.event async for e in stream]

    names = run(use_async, fake, async_calls if use_async else sync_calls)
    assert names == [  # the caller sees every event, unchanged
        "thread.run.created",
        "thread.run.in_progress",
        "thread.message.created",
        "thread.message.delta",
        "thread.run.completed",
    ]
    (event,) = memory.wire()
    _check_run_event(event, "iter")


@pytest.mark.skipif(not HAS_RUN_STREAM, reason="run streams need openai>=1.14")
@pytest.mark.parametrize("use_async", [False, True])
def test_tool_outputs_stream_finishes_the_run_billed_to_its_creator(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    """The first stream stops at requires_action (nothing billed); the one that finishes the run bills it,
    to the customer who created it."""
    fake.overrides["/v1/threads/runs"] = run_sse(
        ("thread.run.created", run_object("queued")),
        ("thread.run.requires_action", run_object("requires_action")),
    )
    fake.overrides[f"{RUNS}/run_1/submit_tool_outputs"] = run_sse(
        ("thread.run.in_progress", run_object("in_progress")),
        ("thread.message.created", message()),
        ("thread.message.delta", message_delta()),
        ("thread.run.completed", run_object("completed", RUN_USAGE)),
    )
    outputs = {"tool_outputs": [{"tool_call_id": "call_1", "output": "42"}]}
    ids = {"run_id": "run_1", "thread_id": "thread_1"}

    def sync_calls(client: Any) -> None:
        threads = client.beta.threads
        with cmdrdata.customer("creator"), threads.create_and_run_stream(assistant_id="asst_1") as stream:
            stream.until_done()
        assert memory.wire() == []
        runs = client.beta.threads.runs
        with cmdrdata.customer("submitter"), runs.submit_tool_outputs_stream(**outputs, **ids) as stream:
            stream.until_done()

    async def async_calls(client: Any) -> None:
        with cmdrdata.customer("creator"):
            async with client.beta.threads.create_and_run_stream(assistant_id="asst_1") as stream:
                await stream.until_done()
        assert memory.wire() == []
        with cmdrdata.customer("submitter"):
            async with client.beta.threads.runs.submit_tool_outputs_stream(**outputs, **ids) as stream:
                await stream.until_done()

    run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    _check_run_event(event, "creator")


@pytest.mark.skipif(not HAS_RUN_STREAM, reason="run streams need openai>=1.14")
@pytest.mark.parametrize("final", ["failed", "expired", "incomplete"])
def test_run_stream_bills_a_run_that_ends_otherwise(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, final: str
) -> None:
    fake.overrides[RUNS] = full_run_stream(final)
    client = fake.client()
    with client.beta.threads.runs.create_and_stream(thread_id="thread_1", assistant_id="asst_1") as stream:
        stream.until_done()
    events = memory.wire()
    (event,) = events
    _check_run_event(event, None)  # type: ignore[arg-type]
    assert event["error_occurred"] is (final == "failed")


@pytest.mark.skipif(not HAS_RUN_STREAM, reason="run streams need openai>=1.14")
@pytest.mark.parametrize("use_async", [False, True])
def test_run_stream_through_raw_response_bills_once(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides[RUNS] = full_run_stream()
    args = {"thread_id": "thread_1", "assistant_id": "asst_1", "stream": True, "customer_id": "raw"}

    def sync_calls(client: Any) -> None:
        raw = client.beta.threads.runs.with_raw_response.create(**args)
        assert raw.parse() is raw.parse()  # the SDK caches parse(): so does the proxy
        list(raw.parse())

    async def async_calls(client: Any) -> None:
        raw = await client.beta.threads.runs.with_raw_response.create(**args)
        async for _ in raw.parse():
            pass

    run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    _check_run_event(event, "raw")


@pytest.mark.skipif(not HAS_RUN_USAGE, reason="Run.usage needs openai>=1.9")
@pytest.mark.parametrize("use_async", [False, True])
def test_run_created_here_is_billed_to_its_creator_when_polled(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides[RUNS] = reply(run_object("queued"))
    fake.overrides[f"{RUNS}/run_1"] = reply(run_object("completed", RUN_USAGE))

    def sync_calls(client: Any) -> None:
        client.beta.threads.runs.create(thread_id="thread_1", assistant_id="asst_1", customer_id="maker")
        with cmdrdata.customer("poller"):
            client.beta.threads.runs.retrieve("run_1", thread_id="thread_1")

    async def async_calls(client: Any) -> None:
        await client.beta.threads.runs.create(
            thread_id="thread_1", assistant_id="asst_1", customer_id="maker"
        )
        with cmdrdata.customer("poller"):
            await client.beta.threads.runs.retrieve("run_1", thread_id="thread_1")

    run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    _check_run_event(event, "maker", streaming=False)


# --- 4. batches.list beyond the first page ------------------------------------------------------------


def paged(*pages: list[dict[str, Any]]) -> Callable[..., Any]:
    """Serves the pages in order, then empty pages (old SDKs page on `after=` until a page is empty)."""
    served = iter(pages)

    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        data = next(served, [])
        more = bool(data) and data is not pages[-1]
        page = {"object": "list", "data": data, "has_more": more}
        if data:
            page.update(first_id=data[0]["id"], last_id=data[-1]["id"])
        return 200, JSON_HEADERS, json.dumps(page).encode()

    return answer


JSON_HEADERS = {"content-type": "application/json", "x-request-id": "req_list"}


def three_pages() -> Callable[..., Any]:
    return paged(
        [batch("completed", BATCH_USAGE, "batch_a"), batch("in_progress", None, "batch_b")],
        [batch("completed", BATCH_USAGE, "batch_c"), batch("failed", BATCH_USAGE, "batch_d")],
        [batch("completed", BATCH_USAGE, "batch_e")],
    )


ALL_IDS = ["batch_a", "batch_b", "batch_c", "batch_d", "batch_e"]


@pytest.mark.skipif(OPENAI_VERSION < (1, 22, 0), reason="batches.list needs openai>=1.22")
@pytest.mark.parametrize("use_async", [False, True])
def test_batch_list_auto_pagination_bills_every_terminal_batch_once(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides["/v1/batches"] = three_pages()

    def sync_calls(client: Any) -> list[str]:
        with cmdrdata.customer("lister"):
            return [b.id for b in client.batches.list(limit=2)]

    async def async_calls(client: Any) -> list[str]:
        with cmdrdata.customer("lister"):
            return [b.id async for b in client.batches.list(limit=2)]

    assert run(use_async, fake, async_calls if use_async else sync_calls) == ALL_IDS
    events = memory.wire()
    assert sorted(e["source_id"] for e in events) == ["batch_a", "batch_c", "batch_d", "batch_e"]
    assert {e["customer_id"] for e in events} == {"lister"}
    assert {e["service_tier"] for e in events} == {"batch"}
    billed = ["batch_a", "batch_c", "batch_d", "batch_e"]
    assert {e["event_id"] for e in events} == {derived("batches", b) for b in billed}


@pytest.mark.skipif(OPENAI_VERSION < (1, 22, 0), reason="batches.list needs openai>=1.22")
@pytest.mark.parametrize("use_async", [False, True])
def test_batch_list_get_next_page_and_iter_pages_bill_each_page(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides["/v1/batches"] = three_pages()

    def sync_calls(client: Any) -> list[list[str]]:
        first = client.batches.list(limit=2)
        assert isinstance(first, type(first.__wrapped__))  # the page, to the caller
        assert [e["source_id"] for e in memory.wire()] == ["batch_a"]  # the first page: billed at once
        second = first.get_next_page()
        assert sorted(e["source_id"] for e in memory.wire()) == ["batch_a", "batch_c", "batch_d"]
        pages = [[b.id for b in first.data], [b.id for b in second.data]]
        for page in second.iter_pages():  # from the second page on: the third is fetched here
            pages.append([b.id for b in page.data])
        return pages

    async def async_calls(client: Any) -> list[list[str]]:
        first = await client.batches.list(limit=2)
        assert [e["source_id"] for e in memory.wire()] == ["batch_a"]
        second = await first.get_next_page()
        assert sorted(e["source_id"] for e in memory.wire()) == ["batch_a", "batch_c", "batch_d"]
        pages = [[b.id for b in first.data], [b.id for b in second.data]]
        async for page in second.iter_pages():
            pages.append([b.id for b in page.data])
        return pages

    pages = run(use_async, fake, async_calls if use_async else sync_calls)
    assert [b for p in pages[:2] + pages[3:4] for b in p] == ALL_IDS  # (page 2 again from iter_pages)
    events = memory.wire()
    assert sorted(e["source_id"] for e in events) == ["batch_a", "batch_c", "batch_d", "batch_e"]
    # listing all of them again bills nothing more
    fake.overrides["/v1/batches"] = three_pages()
    list(fake.client().batches.list(limit=2))
    assert len(memory.wire()) == 4


# --- 5. evals runs: one event per model -----------------------------------------------------------------

HAS_EVALS = OPENAI_VERSION >= (1, 72, 0)
EVAL_RUN = "/v1/evals/eval_1/runs/evalrun_1"


def eval_run(status: str, rid: str = "evalrun_1") -> dict[str, Any]:
    usage = [
        {
            "model_name": "gpt-4.1-mini",
            "invocation_count": 20,
            "prompt_tokens": 5000,
            "completion_tokens": 800,
            "total_tokens": 5800,
            "cached_tokens": 1000,
        },
        {
            "model_name": "o3",
            "invocation_count": 20,
            "prompt_tokens": 7000,
            "completion_tokens": 2000,
            "total_tokens": 9000,
            "cached_tokens": 0,
        },
    ]
    return {
        "id": rid,
        "object": "eval.run",
        "created_at": 1700000000,
        "eval_id": "eval_1",
        "name": "nightly",
        "model": "gpt-4.1-mini",
        "status": status,
        "data_source": {"type": "jsonl", "source": {"type": "file_id", "id": "file-1"}},
        "error": {"code": "", "message": ""},
        "metadata": {},
        "report_url": "https://example.invalid/report",
        "result_counts": {"errored": 0, "failed": 1, "passed": 19, "total": 20},
        "per_model_usage": usage if status in ("completed", "failed", "canceled") else [],
        "per_testing_criteria_results": [],
    }


def _check_eval_events(events: list[dict[str, Any]], customer: str, run_id: str = "evalrun_1") -> None:
    by_model = {e["model"]: e for e in events}
    assert sorted(by_model) == ["gpt-4.1-mini", "o3"] and len(events) == 2
    mini, o3 = by_model["gpt-4.1-mini"], by_model["o3"]
    assert (mini["input_tokens"], mini["output_tokens"], mini["total_tokens"]) == (5000, 800, 5800)
    assert mini["cached_input_tokens"] == 1000
    assert (o3["input_tokens"], o3["output_tokens"], o3["total_tokens"]) == (7000, 2000, 9000)
    for e in events:
        assert e["api"] == "evals.runs"
        assert e["source_id"] == run_id
        assert e["customer_id"] == customer
        assert e["usage_source"] == "reported"
        assert e["event_id"] == derived("evals.runs", run_id, e["model"])


@pytest.mark.skipif(not HAS_EVALS, reason="evals need openai>=1.72")
@pytest.mark.parametrize("use_async", [False, True])
def test_eval_run_bills_one_event_per_model_once_terminal(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides[EVAL_RUN] = reply(eval_run("in_progress"))

    def sync_calls(client: Any) -> None:
        client.evals.runs.retrieve("evalrun_1", eval_id="eval_1", customer_id="grader")
        assert memory.wire() == []  # not finished: nothing
        fake.overrides[EVAL_RUN] = reply(eval_run("completed"))
        for _ in range(5):
            client.evals.runs.retrieve("evalrun_1", eval_id="eval_1", customer_id="grader")

    async def async_calls(client: Any) -> None:
        await client.evals.runs.retrieve("evalrun_1", eval_id="eval_1", customer_id="grader")
        assert memory.wire() == []
        fake.overrides[EVAL_RUN] = reply(eval_run("completed"))
        for _ in range(5):
            await client.evals.runs.retrieve("evalrun_1", eval_id="eval_1", customer_id="grader")

    run(use_async, fake, async_calls if use_async else sync_calls)
    _check_eval_events(memory.wire(), "grader")


@pytest.mark.skipif(not HAS_EVALS, reason="evals need openai>=1.72")
@pytest.mark.parametrize("use_async", [False, True])
def test_eval_runs_list_pages_and_cancel_bill_each_run_once(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides["/v1/evals/eval_1/runs"] = paged(
        [eval_run("completed", "evalrun_a"), eval_run("queued", "evalrun_b")],
        [eval_run("completed", "evalrun_a")],  # the same run listed again: nothing more
    )
    canceled = reply(eval_run("canceled", "evalrun_b"))
    fake.overrides["/v1/evals/eval_1/runs/evalrun_b"] = canceled  # the cancel path up to 3.x
    fake.overrides["/v1/evals/eval_1/runs/evalrun_b/cancel"] = canceled

    def sync_calls(client: Any) -> None:
        with cmdrdata.customer("lister"):
            assert len(list(client.evals.runs.list("eval_1"))) == 3
            client.evals.runs.cancel("evalrun_b", eval_id="eval_1")

    async def async_calls(client: Any) -> None:
        with cmdrdata.customer("lister"):
            assert len([r async for r in client.evals.runs.list("eval_1")]) == 3
            await client.evals.runs.cancel("evalrun_b", eval_id="eval_1")

    run(use_async, fake, async_calls if use_async else sync_calls)
    events = memory.wire()
    _check_eval_events([e for e in events if e["source_id"] == "evalrun_a"], "lister", "evalrun_a")
    _check_eval_events([e for e in events if e["source_id"] == "evalrun_b"], "lister", "evalrun_b")
    assert len(events) == 4


# --- 6. agent session turns ------------------------------------------------------------------------------

HAS_AGENTS = OPENAI_VERSION >= (3, 13, 0)
HAS_TURNS = OPENAI_VERSION >= (3, 25, 0)
SESSION = "/v1/agents/sessions/sess_1"
TURN_USAGE = {
    "input_tokens": 1200,
    "input_tokens_details": {"cached_tokens": 300},
    "output_tokens": 450,
    "output_tokens_details": {"reasoning_tokens": 100},
    "total_tokens": 1650,
}


def turn(status: str, usage: Any = None, tid: str = "turn_1", subagent: Any = None) -> dict[str, Any]:
    return {
        "id": tid,
        "object": "agent.session.turn",
        "agent_id": "agent_1",
        "session_id": "sess_1",
        "created_at": 1700000000,
        "status": status,
        "usage": usage,
        "error": {"code": "server_error", "message": "boom"} if status == "failed" else None,
        "subagent_id": subagent,
    }


def session(status: str = "idle") -> dict[str, Any]:
    return {"id": "sess_1", "object": "agent.session", "status": status, "created_at": 1700000000}


def turn_events(final: str = "completed", tid: str = "turn_1", first: int = 0) -> list[dict[str, Any]]:
    base = {"session_id": "sess_1", "turn_id": tid}
    return [
        {
            **base,
            "type": "agent.session.turn.created",
            "event_id": f"ev_{first}",
            "turn": turn("queued", tid=tid),
        },
        {
            **base,
            "type": f"agent.session.turn.{final}",
            "event_id": f"ev_{first + 1}",
            "turn": turn(final, tid=tid),  # the turn without usage: the event carries it
            "usage": TURN_USAGE,
        },
    ]


def session_sse(events: list[dict[str, Any]]) -> bytes:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


def _check_turn_event(
    event: dict[str, Any], customer: Any, tid: str = "turn_1", streaming: bool = False
) -> None:
    assert event["api"] == "agents.turns"
    assert event["source_id"] == tid
    assert event["event_id"] == derived("agents.turns", tid)
    assert event["customer_id"] == customer
    assert event["streaming"] is streaming
    assert (event["input_tokens"], event["output_tokens"], event["total_tokens"]) == (1200, 450, 1650)
    assert (event["cached_input_tokens"], event["reasoning_tokens"]) == (300, 100)
    assert event["usage_source"] == "reported"


@pytest.mark.skipif(not HAS_TURNS, reason="sessions.turns needs openai>=3.25")
@pytest.mark.parametrize("use_async", [False, True])
def test_agent_turn_retrieved_bills_once_when_finished(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    path = f"{SESSION}/turns/turn_1"
    fake.overrides[path] = reply(turn("waiting"))
    fake.overrides["/v1/agents/sessions"] = reply(session())

    def sync_calls(client: Any) -> None:
        agents = client.beta.agents.sessions
        agents.create(environment={"type": "cloud"}, customer_id="creator")  # remembered by session id
        agents.turns.retrieve("turn_1", session_id="sess_1")
        assert memory.wire() == []  # waiting for input: not finished
        fake.overrides[path] = reply(turn("completed", TURN_USAGE))
        with cmdrdata.customer("poller"):
            for _ in range(3):
                agents.turns.retrieve("turn_1", session_id="sess_1")

    async def async_calls(client: Any) -> None:
        agents = client.beta.agents.sessions
        await agents.create(environment={"type": "cloud"}, customer_id="creator")
        await agents.turns.retrieve("turn_1", session_id="sess_1")
        assert memory.wire() == []
        fake.overrides[path] = reply(turn("completed", TURN_USAGE))
        with cmdrdata.customer("poller"):
            for _ in range(3):
                await agents.turns.retrieve("turn_1", session_id="sess_1")

    run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    _check_turn_event(event, "creator")  # the session was created here: its creator pays


@pytest.mark.skipif(not HAS_TURNS, reason="sessions.turns needs openai>=3.25")
@pytest.mark.parametrize("use_async", [False, True])
def test_agent_turns_list_and_subagent_turns_bill_each_finished_turn(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides[f"{SESSION}/turns"] = paged(
        [turn("completed", TURN_USAGE, "turn_a"), turn("in_progress", None, "turn_b")],
        [turn("failed", TURN_USAGE, "turn_c")],
    )
    sub = f"{SESSION}/subagents/sub_1/turns/turn_s"
    fake.overrides[sub] = reply(turn("completed", TURN_USAGE, "turn_s", subagent="sub_1"))

    def sync_calls(client: Any) -> None:
        agents = client.beta.agents.sessions
        with cmdrdata.customer("lister"):
            assert [t.id for t in agents.turns.list("sess_1")] == ["turn_a", "turn_b", "turn_c"]
            agents.subagents.turns.retrieve("turn_s", session_id="sess_1", subagent_id="sub_1")

    async def async_calls(client: Any) -> None:
        agents = client.beta.agents.sessions
        with cmdrdata.customer("lister"):
            assert [t.id async for t in agents.turns.list("sess_1")] == ["turn_a", "turn_b", "turn_c"]
            await agents.subagents.turns.retrieve("turn_s", session_id="sess_1", subagent_id="sub_1")

    run(use_async, fake, async_calls if use_async else sync_calls)
    events = {e["source_id"]: e for e in memory.wire()}
    assert sorted(events) == ["turn_a", "turn_c", "turn_s"] and len(memory.wire()) == 3
    for tid, event in events.items():
        _check_turn_event(event, "lister", tid)
    assert events["turn_c"]["error_occurred"] is True and events["turn_c"]["error_code"] == "server_error"


@pytest.mark.skipif(not HAS_AGENTS, reason="beta.agents needs openai>=3.13")
@pytest.mark.parametrize("use_async", [False, True])
def test_agent_session_created_streaming_bills_each_finished_turn(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    events = turn_events("completed", "turn_1") + turn_events("cancelled", "turn_2", first=2)

    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        return 200, {"content-type": "text/event-stream"}, session_sse(events)

    fake.overrides["/v1/agents/sessions"] = answer
    args = {"environment": {"type": "cloud"}, "input": "go", "stream": True, "customer_id": "streamer"}

    def sync_calls(client: Any) -> list[str]:
        return [e.type for e in client.beta.agents.sessions.create(**args)]

    async def async_calls(client: Any) -> list[str]:
        return [e.type async for e in await client.beta.agents.sessions.create(**args)]

    types = run(use_async, fake, async_calls if use_async else sync_calls)
    assert types == [e["type"] for e in events]  # the caller sees every event
    billed = {e["source_id"]: e for e in memory.wire()}
    assert sorted(billed) == ["turn_1", "turn_2"]
    _check_turn_event(billed["turn_1"], "streamer", "turn_1", streaming=True)
    _check_turn_event(billed["turn_2"], "streamer", "turn_2", streaming=True)
    assert "customer_id" not in fake.requests[0].json()


@pytest.mark.skipif(not HAS_AGENTS, reason="beta.agents needs openai>=3.13")
@pytest.mark.parametrize("use_async", [False, True])
def test_agent_sessions_stream_helper_bills_the_turn_to_its_customer_keyword(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    idle = {"type": "agent.session.idle", "event_id": "ev_9", "session_id": "sess_1"}

    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        if method == "GET" and path.endswith("/events"):
            return 200, {"content-type": "text/event-stream"}, session_sse([*turn_events(), idle])
        if method == "GET":
            return 200, JSON_HEADERS, json.dumps(session()).encode()
        return 200, JSON_HEADERS, b"null"  # events.create

    fake.overrides[SESSION] = answer
    fake.overrides[f"{SESSION}/events"] = answer

    def sync_calls(client: Any) -> None:
        with client.beta.agents.sessions.stream("sess_1", input="hi", customer_id="acme") as stream:
            stream.until_done()

    async def async_calls(client: Any) -> None:
        async with client.beta.agents.sessions.stream("sess_1", input="hi", customer_id="acme") as stream:
            await stream.until_done()

    with cmdrdata.customer("block"):
        run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    _check_turn_event(event, "acme", streaming=True)
    for request in fake.requests:
        assert not any(k.lower().startswith("x-cmdrdata") for k in request.headers)
        assert b"acme" not in request.body


# --- exactly once across two processes ------------------------------------------------------------------

CHILD = """
    import sys
    import cmdrdata_autopatch as cmdrdata
    cmdrdata.patch(exporter="jsonl", jsonl_path=sys.argv[1])
    from tests.fake_openai import FakeOpenAI, OPENAI_VERSION
    from tests.objects_support import RUN_USAGE, reply, run_object
    from tests.test_objects_later import EVAL_RUN, SESSION, TURN_USAGE, eval_run, full_run_stream, turn
    fake = FakeOpenAI()
    fake.overrides["/v1/threads/thread_1/runs/run_1"] = reply(run_object("completed", RUN_USAGE))
    fake.overrides["/v1/threads/thread_1/runs"] = full_run_stream()
    fake.overrides[EVAL_RUN] = reply(eval_run("completed"))
    fake.overrides[SESSION + "/turns/turn_1"] = reply(turn("completed", TURN_USAGE))
    client = fake.client()
    with cmdrdata.customer("proc" + sys.argv[2]):
        if sys.argv[2] == "0":  # one process streams the run, the other polls it
            list(client.beta.threads.runs.create(thread_id="thread_1", assistant_id="asst_1", stream=True))
        for _ in range(3):
            client.beta.threads.runs.retrieve("run_1", thread_id="thread_1")
            if OPENAI_VERSION >= (1, 72, 0):
                client.evals.runs.retrieve("evalrun_1", eval_id="eval_1")
            if OPENAI_VERSION >= (3, 25, 0):
                client.beta.agents.sessions.turns.retrieve("turn_1", session_id="sess_1")
    cmdrdata.shutdown(timeout=10)
    """


@pytest.mark.skipif(not HAS_RUN_STREAM, reason="run streams need openai>=1.14")
def test_two_processes_bill_runs_eval_runs_and_turns_with_one_event_id_each(tmp_path: Path) -> None:
    seen = [
        sorted((e["api"], e["source_id"], e["event_id"]) for e in events)
        for events in events_of_two_processes(CHILD, tmp_path)
    ]
    expected = [("assistants.runs", "run_1", derived("assistants.runs", "run_1"))]
    if HAS_EVALS:
        expected += [
            ("evals.runs", "evalrun_1", derived("evals.runs", "evalrun_1", m)) for m in ("gpt-4.1-mini", "o3")
        ]
    if HAS_TURNS:
        expected.append(("agents.turns", "turn_1", derived("agents.turns", "turn_1")))
    assert seen[0] == seen[1] == sorted(expected)


# --- the polling helpers carry our keywords to the calls they make -------------------------------------

HAS_POLL_HELPERS = OPENAI_VERSION >= (1, 16, 0)


@pytest.mark.skipif(not HAS_POLL_HELPERS, reason="the *_and_poll helpers need openai>=1.16")
@pytest.mark.parametrize("use_async", [False, True])
def test_poll_helpers_take_customer_id_and_bill_the_run_once(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides[RUNS] = reply(run_object("queued"))
    fake.overrides["/v1/threads/runs"] = reply(run_object("queued"))
    fake.overrides[f"{RUNS}/run_1"] = reply(run_object("completed", RUN_USAGE))
    fake.overrides[f"{RUNS}/run_1/submit_tool_outputs"] = reply(run_object("in_progress"))
    ids = {"thread_id": "thread_1", "poll_interval_ms": 1}
    outputs = {"tool_outputs": [{"tool_call_id": "call_1", "output": "42"}], "run_id": "run_1"}

    def sync_calls(client: Any) -> list[str]:
        runs = client.beta.threads.runs
        with cmdrdata.customer("block"):
            done = runs.create_and_poll(assistant_id="asst_1", customer_id="acme", **ids)
            runs.submit_tool_outputs_and_poll(**outputs, customer_id="other", **ids)  # the same run
            runs.poll("run_1", customer_id="other", **ids)
            client.beta.threads.create_and_run_poll(
                assistant_id="asst_1", customer_id="other", poll_interval_ms=1
            )
        return [done.status]

    async def async_calls(client: Any) -> list[str]:
        runs = client.beta.threads.runs
        with cmdrdata.customer("block"):
            done = await runs.create_and_poll(assistant_id="asst_1", customer_id="acme", **ids)
            await runs.submit_tool_outputs_and_poll(**outputs, customer_id="other", **ids)
            await runs.poll("run_1", customer_id="other", **ids)
            await client.beta.threads.create_and_run_poll(
                assistant_id="asst_1", customer_id="other", poll_interval_ms=1
            )
        return [done.status]

    assert run(use_async, fake, async_calls if use_async else sync_calls) == ["completed"]
    (event,) = memory.wire()
    _check_run_event(event, "acme", streaming=False)
    for request in fake.requests:
        assert not any(k.lower().startswith("x-cmdrdata") for k in request.headers)
        assert b"acme" not in request.body and b"other" not in request.body


@pytest.mark.skipif(not HAS_POLL_HELPERS, reason="the *_and_poll helpers need openai>=1.16")
@pytest.mark.parametrize("use_async", [False, True])
def test_poll_helper_untracked_bills_nothing_and_a_bad_customer_raises_first(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides[RUNS] = reply(run_object("queued"))
    fake.overrides[f"{RUNS}/run_1"] = reply(run_object("completed", RUN_USAGE))
    args = {"thread_id": "thread_1", "assistant_id": "asst_1", "poll_interval_ms": 1}

    def sync_calls(client: Any) -> None:
        client.beta.threads.runs.create_and_poll(**args, track_usage=False)
        with pytest.raises(ValueError):
            client.beta.threads.runs.create_and_poll(**args, customer_id=123)

    async def async_calls(client: Any) -> None:
        await client.beta.threads.runs.create_and_poll(**args, track_usage=False)
        with pytest.raises(ValueError):
            await client.beta.threads.runs.create_and_poll(**args, customer_id=123)

    run(use_async, fake, async_calls if use_async else sync_calls)
    assert memory.wire() == []
    assert len(fake.requests) == 2  # the bad call sent nothing


@pytest.mark.skipif(not HAS_BACKGROUND, reason="background responses need openai>=1.80")
@pytest.mark.parametrize("use_async", [False, True])
def test_background_create_through_the_safety_net_records_nothing_until_finished(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    """A request made with the client's own `post` (no resource method) is billed by the safety net:
    a background one records nothing either, and its response is billed when read back finished."""
    from openai.types.responses import Response

    fake.overrides["/responses"] = reply(background_response("queued"))
    fake.overrides[f"/v1/responses/{BG_ID}"] = reply(background_response("completed", BG_USAGE))
    body = {"model": "gpt-4.1", "input": "long job", "background": True}

    def sync_calls(client: Any) -> None:
        with cmdrdata.customer("net"):
            assert client.post("/responses", cast_to=Response, body=body).status == "queued"
        assert memory.wire() == []
        client.responses.retrieve(BG_ID)

    async def async_calls(client: Any) -> None:
        with cmdrdata.customer("net"):
            assert (await client.post("/responses", cast_to=Response, body=body)).status == "queued"
        assert memory.wire() == []
        await client.responses.retrieve(BG_ID)

    run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    assert event["customer_id"] == "net"
    assert event["event_id"] == derived("responses", BG_ID)


def test_opt_in_metadata_only_where_the_sdk_method_takes_it(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    """`fine_tuning.jobs.create` has `metadata` only from openai 1.65.4: before that the opt-in leaves the
    call alone (passing it would raise TypeError in the caller's call)."""
    import inspect

    import openai

    cmdrdata.patch(exporter=memory, object_metadata="customer")
    fake.overrides["/v1/fine_tuning/jobs"] = reply(
        {"id": "ftjob-1", "object": "fine_tuning.job", "status": "validating_files"}
    )
    client = fake.client()
    client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-train", customer_id="acme")
    takes = "metadata" in inspect.signature(openai.resources.fine_tuning.jobs.Jobs.create).parameters
    sent = fake.requests[-1].json()
    assert sent.get("metadata") == ({"cmdrdata_customer_id": "acme"} if takes else None)
    if OPENAI_VERSION >= (1, 1, 0):  # assistants runs take metadata in every release that has them
        fake.overrides[RUNS] = reply(run_object("queued"))
        client.beta.threads.runs.create(thread_id="thread_1", assistant_id="asst_1", customer_id="acme")
        assert fake.requests[-1].json()["metadata"] == {"cmdrdata_customer_id": "acme"}
