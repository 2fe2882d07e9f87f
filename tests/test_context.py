"""Customer attribution: context manager, decorator, threads, asyncio, precedence, validation."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch import context

from .endpoints import MESSAGES
from .fake_openai import FakeOpenAI


def test_context_manager_nests_and_merges_metadata() -> None:
    assert context.current().customer_id is None
    with cmdrdata.customer("outer", plan="pro", region="eu"):
        with cmdrdata.customer("inner", region="us"):
            assert context.current() == ("inner", {"plan": "pro", "region": "us"})
        assert context.current() == ("outer", {"plan": "pro", "region": "eu"})
    assert context.current().customer_id is None


def test_decorator_sync_and_async() -> None:
    @cmdrdata.customer("deco-sync")
    def sync_fn() -> Any:
        return context.current().customer_id

    @cmdrdata.customer("deco-async", tier="gold")
    async def async_fn() -> Any:
        await asyncio.sleep(0)
        return context.current()

    assert sync_fn() == "deco-sync"
    assert asyncio.run(async_fn()) == ("deco-async", {"tier": "gold"})
    assert context.current().customer_id is None


def test_default_customer_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMDRDATA_CUSTOMER_ID", "env-default")
    cmdrdata.patch(exporter="memory")
    try:
        assert context.current().customer_id == "env-default"
        with cmdrdata.customer("ctx"):
            assert context.current().customer_id == "ctx"
    finally:
        cmdrdata.unpatch()
    assert context.current().customer_id is None


def test_threads_do_not_see_each_others_customer(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client()
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        with cmdrdata.customer(f"thread-{i}"):
            barrier.wait()
            for _ in range(5):
                client.chat.completions.create(model="gpt-4o", messages=MESSAGES, cmdrdata_metadata={"i": i})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = memory.wire()
    assert len(events) == 40
    assert all(e["customer_id"] == f"thread-{e['metadata']['i']}" for e in events)


def test_carry_context_into_a_thread_pool(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client()

    def call() -> None:
        client.embeddings.create(model="text-embedding-3-small", input="x")

    with ThreadPoolExecutor(2) as pool, cmdrdata.customer("pooled"):
        pool.submit(cmdrdata.carry_context(call)).result()
        pool.submit(call).result()  # without carry_context a pool thread has no customer
    assert [e["customer_id"] for e in memory.wire()] == ["pooled", None]


def test_a_thousand_concurrent_tasks_keep_their_customers(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.async_client()

    async def one(i: int) -> None:
        with cmdrdata.customer(f"task-{i}", n=i):
            await asyncio.sleep(0)
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(1000)))

    asyncio.run(main())
    events = memory.wire()
    assert len(events) == 1000
    assert all(e["customer_id"] == f"task-{e['metadata']['n']}" for e in events)
    assert len({e["customer_id"] for e in events}) == 1000


def test_legacy_helpers() -> None:
    cmdrdata.set_customer_context("legacy-co")
    try:
        assert cmdrdata.get_customer_context() == "legacy-co"
    finally:
        cmdrdata.clear_customer_context()
    assert cmdrdata.get_customer_context() is None
    with cmdrdata.customer_context("cm-co"):
        assert cmdrdata.get_customer_context() == "cm-co"


@pytest.mark.parametrize("bad", [7, "x" * 300, "tab\there", b"bytes", {"id": 1}])
def test_customer_validation_names_the_value(bad: Any) -> None:
    with pytest.raises(ValueError, match="customer_id"):
        cmdrdata.customer(bad)


def test_context_metadata_must_be_json() -> None:
    with pytest.raises(ValueError, match="JSON"):
        cmdrdata.customer("x", when=object())
