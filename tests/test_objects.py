"""Usage read from server-side objects (issue 12, part 2): background responses and batches, billed once per
object through the real openai client and a mock transport, sync and async, stream and not, across polls
and across two processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.object_billing import MEMORY

from .apps.canned import response_object
from .fake_openai import OPENAI_VERSION, FakeOpenAI
from .objects_support import (
    BATCH_USAGE,
    BG_ID,
    BG_USAGE,
    HAS_BACKGROUND,
    HAS_BATCHES,
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

HAS_CANCEL = OPENAI_VERSION >= (1, 83, 0)  # 1.81-1.82 cancel returns None: nothing to read
HAS_BATCH_LIST = OPENAI_VERSION >= (1, 22, 0)

pytestmark = pytest.mark.usefixtures("fresh_object_memory")


# --- background responses ------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_BACKGROUND, reason="background responses need openai>=1.80")
@pytest.mark.parametrize("use_async", [False, True])
def test_background_response_billed_once_when_retrieved_terminal(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides["/responses"] = reply(background_response("queued"))
    path = f"/v1/responses/{BG_ID}"
    fake.overrides[path] = reply(background_response("in_progress"))

    def sync_calls(client: Any) -> None:
        with cmdrdata.customer("acme"):
            client.responses.create(model="gpt-4.1", input="long job", background=True)
        assert memory.wire() == []  # the create bills nothing: no estimate
        assert cmdrdata.stats()["objects"]["background_pending"] == 1
        client.responses.retrieve(BG_ID)  # still running: nothing
        assert memory.wire() == []
        fake.overrides[path] = reply(background_response("completed", BG_USAGE))
        with cmdrdata.customer("someone-else"):
            for _ in range(3):
                client.responses.retrieve(BG_ID)

    async def async_calls(client: Any) -> None:
        with cmdrdata.customer("acme"):
            await client.responses.create(model="gpt-4.1", input="long job", background=True)
        assert memory.wire() == []
        await client.responses.retrieve(BG_ID)
        fake.overrides[path] = reply(background_response("completed", BG_USAGE))
        with cmdrdata.customer("someone-else"):
            for _ in range(3):
                await client.responses.retrieve(BG_ID)

    run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    assert event["api"] == "responses"
    assert event["customer_id"] == "acme"  # the creator's, remembered by object id
    assert event["source_id"] == BG_ID
    assert event["event_id"] == derived("responses", BG_ID)
    assert (event["input_tokens"], event["output_tokens"], event["total_tokens"]) == (1000, 20000, 21000)
    assert (event["cached_input_tokens"], event["reasoning_tokens"]) == (200, 5000)
    assert event["service_tier"] == "flex"
    assert event["usage_source"] == "reported"
    objects = cmdrdata.stats()["objects"]
    assert objects["background_pending"] == 0
    assert objects["objects_billed"] == 1


@pytest.mark.skipif(not HAS_RETRIEVE_STREAM, reason="retrieve(stream=True) needs openai>=1.82")
@pytest.mark.parametrize("use_async", [False, True])
def test_background_response_finished_by_stream_response_id(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides["/responses"] = reply(background_response("queued"))
    done = background_response("completed", BG_USAGE)
    fake.overrides[f"/v1/responses/{BG_ID}"] = reply(terminal_events(done), stream=True)

    def sync_calls(client: Any) -> None:
        with cmdrdata.customer("acme"):
            client.responses.create(model="gpt-4.1", input="long job", background=True)
        with client.responses.stream(response_id=BG_ID) as stream:
            for _ in stream:
                pass

    async def async_calls(client: Any) -> None:
        with cmdrdata.customer("acme"):
            await client.responses.create(model="gpt-4.1", input="long job", background=True)
        async with client.responses.stream(response_id=BG_ID) as stream:
            async for _ in stream:
                pass

    run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    assert event["event_id"] == derived("responses", BG_ID)
    assert event["source_id"] == BG_ID
    assert event["customer_id"] == "acme"
    assert event["streaming"] is True
    assert event["output_tokens"] == 20000
    assert event["service_tier"] == "flex"
    # a plain retrieve afterwards is the same object: not billed again
    fake.overrides[f"/v1/responses/{BG_ID}"] = reply(done)
    fake.client().responses.retrieve(BG_ID)
    assert len(memory.wire()) == 1


@pytest.mark.skipif(not HAS_BACKGROUND, reason="background responses need openai>=1.80")
def test_background_create_streamed_is_billed_as_its_object(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    done = background_response("completed", BG_USAGE)
    fake.overrides["/responses"] = reply(terminal_events(done), stream=True)
    client = fake.client()
    stream = client.responses.create(
        model="gpt-4.1", input="x", background=True, stream=True, customer_id="streamer"
    )
    list(stream)
    fake.overrides[f"/v1/responses/{BG_ID}"] = reply(done)
    client.responses.retrieve(BG_ID)
    (event,) = memory.wire()
    assert event["event_id"] == derived("responses", BG_ID)
    assert event["customer_id"] == "streamer"
    assert event["output_tokens"] == 20000


@pytest.mark.skipif(not HAS_CANCEL, reason="responses.cancel returns the response from openai 1.83")
@pytest.mark.parametrize("use_async", [False, True])
def test_cancelled_background_response_bills_what_it_used(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    usage = {**BG_USAGE, "output_tokens": 10, "total_tokens": 1010}
    fake.overrides[f"/v1/responses/{BG_ID}/cancel"] = reply(background_response("cancelled", usage))

    async def async_calls(client: Any) -> None:
        await client.responses.cancel(BG_ID, customer_id="canceller")

    run(
        use_async,
        fake,
        async_calls if use_async else lambda c: c.responses.cancel(BG_ID, customer_id="canceller"),
    )
    (event,) = memory.wire()
    assert event["customer_id"] == "canceller"  # not created here: the retrieving call's customer
    assert event["output_tokens"] == 10
    assert event["source_id"] == BG_ID


@pytest.mark.skipif(not HAS_BACKGROUND, reason="responses API needs openai>=1.66")
def test_retrieving_an_ordinary_response_bills_nothing(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    fake.overrides["/v1/responses/resp_123"] = reply(response_object())
    fake.client().responses.retrieve("resp_123")
    assert memory.wire() == []


@pytest.mark.skipif(not HAS_BACKGROUND, reason="background responses need openai>=1.80")
def test_object_metadata_names_the_customer_in_another_process(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    body = background_response("completed", BG_USAGE)
    body["metadata"] = {"cmdrdata_customer_id": "from-metadata"}
    fake.overrides[f"/v1/responses/{BG_ID}"] = reply(body)
    with cmdrdata.customer("poller"):
        fake.client().responses.retrieve(BG_ID)
    (event,) = memory.wire()
    assert event["customer_id"] == "from-metadata"


# --- batches ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_BATCHES, reason="batches need openai>=1.18")
@pytest.mark.parametrize("use_async", [False, True])
def test_batch_polled_100_times_bills_once(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides["/v1/batches"] = reply(batch("validating"))
    fake.overrides["/v1/batches/batch_1"] = reply(batch("in_progress"))
    kwargs = {"input_file_id": "file-in", "endpoint": "/v1/chat/completions", "completion_window": "24h"}

    def sync_calls(client: Any) -> None:
        with cmdrdata.customer("batcher"):
            client.batches.create(**kwargs)
        client.batches.retrieve("batch_1")
        fake.overrides["/v1/batches/batch_1"] = reply(batch("completed", BATCH_USAGE))
        for _ in range(100):
            client.batches.retrieve("batch_1")

    async def async_calls(client: Any) -> None:
        with cmdrdata.customer("batcher"):
            await client.batches.create(**kwargs)
        await client.batches.retrieve("batch_1")
        fake.overrides["/v1/batches/batch_1"] = reply(batch("completed", BATCH_USAGE))
        for _ in range(100):
            await client.batches.retrieve("batch_1")

    run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    assert event["api"] == "batches"
    assert event["service_tier"] == "batch"
    assert event["customer_id"] == "batcher"
    assert event["source_id"] == "batch_1"
    assert event["event_id"] == derived("batches", "batch_1")
    assert (event["input_tokens"], event["output_tokens"], event["total_tokens"]) == (3000, 700, 3700)
    assert event["model"] == "gpt-4o-mini-2024-07-18"


@pytest.mark.skipif(not HAS_BATCH_LIST, reason="batches.list needs openai>=1.22")
@pytest.mark.parametrize("use_async", [False, True])
def test_batch_list_bills_each_terminal_batch_once(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    page = {
        "object": "list",
        "data": [
            batch("completed", BATCH_USAGE, "batch_a"),
            batch("completed", BATCH_USAGE, "batch_b"),
            batch("in_progress", None, "batch_c"),
        ],
        "first_id": "batch_a",
        "last_id": "batch_c",
        "has_more": False,
    }
    fake.overrides["/v1/batches"] = reply(page)
    fake.overrides["/v1/batches/batch_a"] = reply(batch("completed", BATCH_USAGE, "batch_a"))

    def sync_calls(client: Any) -> None:
        with cmdrdata.customer("lister"):
            # `.data`, not iteration: old SDKs page on `after=` forever against this fixed fake page
            assert [b.id for b in client.batches.list().data] == ["batch_a", "batch_b", "batch_c"]
            client.batches.list()
        client.batches.retrieve("batch_a")

    async def async_calls(client: Any) -> None:
        with cmdrdata.customer("lister"):
            first = await client.batches.list()
            assert [b.id for b in first.data] == ["batch_a", "batch_b", "batch_c"]
            async for item in client.batches.list():  # still an async iterable through our proxy
                assert item.id == "batch_a"
                break
        await client.batches.retrieve("batch_a")

    run(use_async, fake, async_calls if use_async else sync_calls)
    events = memory.wire()
    assert sorted(e["source_id"] for e in events) == ["batch_a", "batch_b"]
    assert {e["customer_id"] for e in events} == {"lister"}


@pytest.mark.skipif(not HAS_BATCHES, reason="batches need openai>=1.18")
def test_batch_without_usage_is_counted_not_billed(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    fake.overrides["/v1/batches/batch_old"] = reply(batch("completed", None, "batch_old"))
    client = fake.client()
    client.batches.retrieve("batch_old")
    client.batches.retrieve("batch_old")
    assert memory.wire() == []
    assert cmdrdata.stats()["objects"]["batches_without_usage"] == 1


@pytest.mark.skipif(not HAS_BATCHES, reason="batches need openai>=1.18")
def test_opt_in_writes_the_customer_into_the_batch_metadata(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.overrides["/v1/batches"] = reply(batch("validating"))
    client = fake.client()
    kwargs = {"input_file_id": "file-in", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    client.batches.create(**kwargs, customer_id="not-written")
    assert "metadata" not in fake.requests[-1].json()  # off by default: the request is the caller's
    cmdrdata.patch(exporter=memory, object_metadata="customer")
    client.batches.create(**kwargs, metadata={"team": "a"}, customer_id="acme")
    assert fake.requests[-1].json()["metadata"] == {"team": "a", "cmdrdata_customer_id": "acme"}
    # another process (nothing remembered) that retrieves it bills the customer it names
    MEMORY.clear()
    meta = {"team": "a", "cmdrdata_customer_id": "acme"}
    fake.overrides["/v1/batches/batch_1"] = reply(batch("completed", BATCH_USAGE, metadata=meta))
    with cmdrdata.customer("poller"):
        client.batches.retrieve("batch_1")
    (event,) = memory.wire()
    assert event["customer_id"] == "acme"


CHILD = """
    import sys
    import cmdrdata_autopatch as cmdrdata
    cmdrdata.patch(exporter="jsonl", jsonl_path=sys.argv[1])
    from tests.fake_openai import FakeOpenAI
    from tests.objects_support import BATCH_USAGE, batch, reply
    fake = FakeOpenAI()
    fake.overrides["/v1/batches/batch_1"] = reply(batch("completed", BATCH_USAGE))
    client = fake.client()
    with cmdrdata.customer("proc"):
        for _ in range(5):
            client.batches.retrieve("batch_1")
    cmdrdata.shutdown(timeout=10)
    """


@pytest.mark.skipif(not HAS_BATCHES, reason="batches need openai>=1.18")
def test_two_processes_retrieving_one_batch_produce_one_event_id(tmp_path: Path) -> None:
    ids = []
    for events in events_of_two_processes(CHILD, tmp_path):
        billed = [e for e in events if e.get("api") == "batches"]
        assert len(billed) == 1, events
        ids.append(billed[0]["event_id"])
    assert ids[0] == ids[1] == derived("batches", "batch_1")


# --- assistants runs and fine-tuning jobs --------------------------------------------------------------


@pytest.mark.skipif(not HAS_RUN_USAGE, reason="Run.usage needs openai>=1.9")
@pytest.mark.parametrize("use_async", [False, True])
def test_run_retrieved_100_times_bills_once(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    path = "/v1/threads/thread_1/runs/run_1"
    fake.overrides[path] = reply(run_object("in_progress"))

    def sync_calls(client: Any) -> None:
        client.beta.threads.runs.retrieve("run_1", thread_id="thread_1")
        fake.overrides[path] = reply(run_object("completed", RUN_USAGE))
        with cmdrdata.customer("runner"):
            for _ in range(100):
                client.beta.threads.runs.retrieve("run_1", thread_id="thread_1")

    async def async_calls(client: Any) -> None:
        await client.beta.threads.runs.retrieve("run_1", thread_id="thread_1")
        fake.overrides[path] = reply(run_object("completed", RUN_USAGE))
        with cmdrdata.customer("runner"):
            for _ in range(100):
                await client.beta.threads.runs.retrieve("run_1", thread_id="thread_1")

    with pytest.warns(DeprecationWarning) if OPENAI_VERSION >= (1, 83, 0) else _no_warning():
        run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    assert event["api"] == "assistants.runs"
    assert event["source_id"] == "run_1"
    assert event["event_id"] == derived("assistants.runs", "run_1")
    assert event["customer_id"] == "runner"
    assert (event["input_tokens"], event["output_tokens"], event["total_tokens"]) == (400, 60, 460)


class _no_warning:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


@pytest.mark.skipif(OPENAI_VERSION < (1, 16, 0), reason="runs.poll needs openai>=1.16")
def test_run_polled_through_the_raw_response_bills_once(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    """`runs.poll` (and so `create_and_poll`) reads the run through `with_raw_response.retrieve`."""
    fake.overrides["/v1/threads/thread_1/runs/run_1"] = reply(run_object("completed", RUN_USAGE))
    client = fake.client()
    with cmdrdata.customer("poller"):
        result = client.beta.threads.runs.poll("run_1", thread_id="thread_1", poll_interval_ms=1)
    assert result.status == "completed"
    (event,) = memory.wire()
    assert event["api"] == "assistants.runs"
    assert event["customer_id"] == "poller"
    assert event["total_tokens"] == 460


def job(status: str, trained: Any = None) -> dict[str, Any]:
    return {
        "id": "ftjob-1",
        "object": "fine_tuning.job",
        "created_at": 1700000000,
        "finished_at": None,
        "model": "gpt-4o-mini-2024-07-18",
        "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:org::abc" if status == "succeeded" else None,
        "organization_id": "org-1",
        "status": status,
        "hyperparameters": {"n_epochs": 3},
        "training_file": "file-train",
        "validation_file": None,
        "result_files": [],
        "trained_tokens": trained,
        "error": None,
        "seed": 1,
    }


@pytest.mark.parametrize("use_async", [False, True])
def test_fine_tuning_job_bills_trained_tokens_once(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    fake.overrides["/v1/fine_tuning/jobs"] = reply(job("validating_files"))
    path = "/v1/fine_tuning/jobs/ftjob-1"
    fake.overrides[path] = reply(job("running"))
    create = {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-train"}

    def sync_calls(client: Any) -> None:
        client.fine_tuning.jobs.create(**create, customer_id="tuner")
        client.fine_tuning.jobs.retrieve("ftjob-1")
        fake.overrides[path] = reply(job("succeeded", 123456))
        for _ in range(3):
            client.fine_tuning.jobs.retrieve("ftjob-1")

    async def async_calls(client: Any) -> None:
        await client.fine_tuning.jobs.create(**create, customer_id="tuner")
        await client.fine_tuning.jobs.retrieve("ftjob-1")
        fake.overrides[path] = reply(job("succeeded", 123456))
        for _ in range(3):
            await client.fine_tuning.jobs.retrieve("ftjob-1")

    run(use_async, fake, async_calls if use_async else sync_calls)
    (event,) = memory.wire()
    assert event["api"] == "fine_tuning.jobs"
    assert event["units"] == {"trained_tokens": 123456}
    assert event["customer_id"] == "tuner"
    assert event["model"] == "ft:gpt-4o-mini-2024-07-18:org::abc"
    assert event["event_id"] == derived("fine_tuning.jobs", "ftjob-1")
    assert event["input_tokens"] == 0 and event["usage_source"] == "reported"


@pytest.mark.skipif(not HAS_RUN_USAGE, reason="Run.usage needs openai>=1.9")
def test_deprecated_object_read_warns_at_the_callers_line(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    """Object rows go through the same deprecation mechanism as call rows: the Assistants API's warning
    names the application's line, once, and the run is still billed."""
    import importlib
    import sys
    import warnings

    from cmdrdata_autopatch.deprecation import _deprecation
    from cmdrdata_autopatch.targets import TARGETS

    row = next(t for t in TARGETS if t.api == "assistants.runs" and t.attr.endswith(".retrieve"))
    importlib.import_module(row.module)
    if _deprecation(row, row.class_name) is None:
        pytest.skip("runs.retrieve is not marked deprecated in this openai")
    fake.overrides["/v1/threads/thread_1/runs/run_1"] = reply(run_object("completed", RUN_USAGE))
    client = fake.client()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        client.beta.threads.runs.retrieve("run_1", thread_id="thread_1")
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert [(w.filename, w.lineno) for w in deprecations] == [(__file__, line)]
    assert [e["api"] for e in memory.wire()] == ["assistants.runs"]


@pytest.mark.skipif(not HAS_BACKGROUND, reason="background responses need openai>=1.80")
def test_object_metadata_opt_in_names_the_customer_of_a_background_response(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    """CMDRDATA_OBJECT_METADATA=customer writes the payer into a background response's own metadata (and
    only into a background one: an ordinary call's request stays the caller's)."""
    fake.overrides["/v1/responses"] = reply(background_response("queued"))
    client = fake.client()
    client.responses.create(model="gpt-4.1", input="long job", background=True, customer_id="acme")
    assert "metadata" not in fake.requests[-1].json()  # off by default
    cmdrdata.patch(exporter=memory, object_metadata="customer")
    client.responses.create(
        model="gpt-4.1", input="long job", background=True, metadata={"team": "a"}, customer_id="acme"
    )
    assert fake.requests[-1].json()["metadata"] == {"team": "a", "cmdrdata_customer_id": "acme"}
    with cmdrdata.customer("acme"):
        client.responses.create(model="gpt-4.1", input="now", background=False)
    assert "metadata" not in fake.requests[-1].json()
    # another process (nothing remembered) that reads it back finished bills the customer it names
    MEMORY.clear()
    memory.clear()
    body = background_response("completed", BG_USAGE)
    body["metadata"] = {"team": "a", "cmdrdata_customer_id": "acme"}
    fake.overrides[f"/v1/responses/{BG_ID}"] = reply(body)
    with cmdrdata.customer("poller"):
        client.responses.retrieve(BG_ID)
    (event,) = memory.wire()
    assert event["customer_id"] == "acme"
