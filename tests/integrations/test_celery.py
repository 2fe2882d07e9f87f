"""Celery tasks run for the customer that queued them: eager mode and a real in-process worker."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("celery")

from celery import Celery
from celery.contrib.testing.worker import start_worker

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.integrations import celery as cmdrdata_celery

from ..fake_openai import FakeOpenAI


def make_app(fake: FakeOpenAI, **conf: Any) -> Celery:
    app = Celery("cmdrdata_test", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.update(task_acks_late=False, broker_connection_retry_on_startup=False, **conf)
    client = fake.client()

    @app.task(name="embed", shared=False)
    def embed(text: str) -> Any:
        client.embeddings.create(model="text-embedding-3-small", input=text)
        return cmdrdata.get_customer_context()

    cmdrdata_celery.install(app)
    return app


def test_eager_tasks_take_the_customer_from_headers(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    app = make_app(fake, task_always_eager=True)
    embed = app.tasks["embed"]
    assert (
        embed.apply_async(("a",), headers=cmdrdata_celery.customer_headers("acme", plan="pro")).get()
        == "acme"
    )
    with cmdrdata.customer("outer"):  # an explicit header wins over the caller's block
        assert embed.apply_async(("b",), headers=cmdrdata_celery.customer_headers("named")).get() == "named"
        assert embed.delay("c").get() == "outer"  # eager: the caller's own context
    assert embed.delay("d").get() is None
    assert [(e["customer_id"], e["metadata"]) for e in memory.wire()] == [
        ("acme", {"plan": "pro"}),
        ("named", None),
        ("outer", None),
        (None, None),
    ]
    assert cmdrdata.get_customer_context() is None  # postrun closed every block


def test_a_worker_runs_each_task_for_the_customer_that_queued_it(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    """A real worker thread (memory broker) has no context of ours: the customer can only arrive in the
    message headers. One worker for all cases: starting and stopping one takes seconds."""
    app = make_app(fake, worker_hijack_root_logger=False, broker_transport_options={"polling_interval": 0.05})
    embed = app.tasks["embed"]
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"):
        results = []
        for i in range(4):
            with cmdrdata.customer(f"tenant-{i}", job=i):
                results.append(embed.delay(f"text {i}"))
        results.append(embed.delay("nobody"))
        results.append(embed.apply_async(("x",), headers={cmdrdata_celery.CUSTOMER_HEADER: "bad\nid"}))
        answers = [r.get(timeout=30) for r in results]
    assert answers == [f"tenant-{i}" for i in range(4)] + [None, None]
    assert [(e["customer_id"], e["metadata"]) for e in memory.wire()] == [
        *((f"tenant-{i}", {"job": i}) for i in range(4)),
        (None, None),
        (None, None),  # a bad header: unattributed, the task still runs
    ]
