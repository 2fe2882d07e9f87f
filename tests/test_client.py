"""The seed's drop-in clients: `TrackedOpenAI`, `AsyncTrackedOpenAI`, `UsageTracker`.

What matters to a seed user: the client is still an `openai.OpenAI`; its calls are billed with its own
tracker key (proven on the wire by a CmdrData stand-in on 127.0.0.1 that records the Authorization header);
`customer_id=` / `track_usage=` work per call; and a process that also runs `patch()` bills each call once.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch import AsyncTrackedOpenAI, MemoryExporter, TrackedOpenAI, UsageTracker

from .apps.harness import RecordingServer, clean_env, run
from .fake_openai import FakeOpenAI

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _restore_classes() -> Iterator[None]:
    """The drop-in clients wrap the SDK classes (as patch() does); put them back after each test."""
    yield
    cmdrdata.unpatch()


def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_isinstance_holds(fake: FakeOpenAI) -> None:
    client = fake.client(cls=TrackedOpenAI, tracker=MemoryExporter())
    assert isinstance(client, openai.OpenAI)
    aclient = fake.async_client(cls=AsyncTrackedOpenAI, tracker=MemoryExporter())
    assert isinstance(aclient, openai.AsyncOpenAI)
    assert isinstance(client.tracker, UsageTracker)


def test_events_carry_the_clients_own_tracker_key_and_customer(
    fake: FakeOpenAI, server: RecordingServer
) -> None:
    a = fake.client(
        cls=TrackedOpenAI, tracker_key="tk-account-a-1111", tracker_endpoint=server.url, tracker_timeout=2.0
    )
    b = fake.client(cls=TrackedOpenAI, tracker_key="tk-account-b-2222", tracker_endpoint=server.url)
    a.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="acme")
    b.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="globex")
    assert a.tracker is not None and b.tracker is not None
    a.tracker.flush(5.0)
    b.tracker.flush(5.0)
    wait_for(lambda: len(server.events()) >= 2)
    posts = [r for r in server.requests if r["method"] == "POST"]
    by_key = {r["headers"]["Authorization"]: r for r in posts}
    assert set(by_key) == {"Bearer tk-account-a-1111", "Bearer tk-account-b-2222"}
    import json

    assert json.loads(by_key["Bearer tk-account-a-1111"]["body"])["customer_id"] == "acme"
    assert json.loads(by_key["Bearer tk-account-b-2222"]["body"])["customer_id"] == "globex"
    event = json.loads(by_key["Bearer tk-account-a-1111"]["body"])
    assert (event["input_tokens"], event["output_tokens"], event["api"]) == (11, 7, "chat.completions")
    # the CmdrData key never went to OpenAI, and our keywords never reached it
    sent_to_openai = [r.json() for r in fake.requests]
    assert all("customer_id" not in body for body in sent_to_openai)
    assert all("tk-account" not in str(r.headers) for r in fake.requests)
    a.tracker.shutdown(2.0)
    b.tracker.shutdown(2.0)


def test_customer_context_track_usage_and_copies(fake: FakeOpenAI) -> None:
    tracker = MemoryExporter()
    client = fake.client(cls=TrackedOpenAI, tracker=tracker)
    with cmdrdata.customer("ctx-customer"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="kw", track_usage=False)
    client.with_options(timeout=30).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, customer_id="copy"
    )
    client.copy(max_retries=1).embeddings.create(
        model="text-embedding-3-small", input="x", customer_id="copy2"
    )
    assert [(e.customer_id, e.api) for e in tracker.events] == [
        ("ctx-customer", "chat.completions"),
        ("copy", "chat.completions"),
        ("copy2", "embeddings"),
    ]
    assert "track_usage" not in fake.requests[1].json()


def test_legacy_context_helpers(fake: FakeOpenAI) -> None:
    tracker = MemoryExporter()
    client = fake.client(cls=TrackedOpenAI, tracker=tracker)
    cmdrdata.set_customer_context("legacy-1")
    try:
        assert cmdrdata.get_customer_context() == "legacy-1"
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        cmdrdata.clear_customer_context()
    with cmdrdata.customer_context("legacy-2"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert [e.customer_id for e in tracker.events] == ["legacy-1", "legacy-2"]


def test_async_client(fake: FakeOpenAI) -> None:
    tracker = MemoryExporter()
    client = fake.async_client(cls=AsyncTrackedOpenAI, tracker=tracker)

    async def go() -> None:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="async-acme")
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, customer_id="async-stream"
        )
        async for _ in stream:
            pass

    asyncio.run(go())
    assert [(e.customer_id, e.streaming) for e in tracker.events] == [
        ("async-acme", False),
        ("async-stream", True),
    ]


def test_with_patch_on_each_call_is_billed_once(fake: FakeOpenAI) -> None:
    cmdrdata.patch(exporter="memory")
    global_events = cmdrdata.get_exporter()
    tracker = MemoryExporter()
    tracked = fake.client(cls=TrackedOpenAI, tracker=tracker)
    plain = fake.client()
    tracked.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="t")
    plain.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="p")
    assert [e.customer_id for e in tracker.events] == ["t"]
    assert [e.customer_id for e in global_events.events] == ["p"]
    # no key of its own while patch() is on: the client's calls join the global exporter
    shared = fake.client(cls=TrackedOpenAI)
    assert shared.tracker is None
    shared.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="s")
    assert [e.customer_id for e in global_events.events] == ["p", "s"]


def test_usage_tracker_is_a_thin_handle_on_the_exporter() -> None:
    memory = MemoryExporter()
    tracker = UsageTracker(exporter=memory)
    event = cmdrdata.UsageEvent("chat.completions", time.time(), 0.1, customer_id="x")
    tracker.record(event)
    assert memory.events == [event]
    assert tracker.stats()["recorded"] == 1
    assert tracker.flush(1.0) == (1, 0) and tracker.shutdown(1.0) == (1, 0)
    with pytest.raises(TypeError):
        UsageTracker(exporter=object())
    with pytest.raises(ValueError, match=r"CMDRDATA_ENDPOINT|endpoint"):
        UsageTracker("tk-x-123456", endpoint="http://example.com/api/events")  # plain http off loopback


# ---------------------------------------------------------- openai missing or too old: a clear message


def fake_openai_dir(tmp_path: Path, version: str | None) -> Path:
    """A directory that, first on PYTHONPATH, shadows openai (with an old version) or hides it (None)."""
    root = tmp_path / "shadow"
    package = root / "openai"
    package.mkdir(parents=True)
    if version is None:
        (package / "__init__.py").write_text("raise ImportError('No module named openai', name='openai')\n")
    else:
        (package / "__init__.py").write_text(f"__version__ = {version!r}\nclass ChatCompletion: pass\n")
    return root


@pytest.mark.parametrize("version", ["0.28.0", None])
def test_old_or_missing_openai_gives_the_pip_line(tmp_path: Path, version: str | None) -> None:
    env = clean_env(tmp_path, PYTHONPATH=str(fake_openai_dir(tmp_path, version)))
    probe = (
        "import cmdrdata_autopatch as c; print('package-imports-ok'); "
        "from cmdrdata_autopatch import TrackedOpenAI"
    )
    result = run([sys.executable, "-c", probe], env)
    assert "package-imports-ok" in result.stdout  # the package itself never needs openai
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError") and "pip install -U 'openai>=1.0.0'" in last
    assert ("0.28.0" in last) if version else ("not installed" in last)


def test_patch_with_old_openai_warns_with_the_pip_line(tmp_path: Path) -> None:
    env = clean_env(tmp_path, PYTHONPATH=str(fake_openai_dir(tmp_path, "0.28.0")))
    probe = (
        "import cmdrdata_autopatch as c; c.patch(exporter='memory'); import openai; print('app-continues')"
    )
    result = run([sys.executable, "-c", probe], env)
    assert result.returncode == 0 and "app-continues" in result.stdout
    assert "openai 0.28.0 is too old" in result.stderr and "pip install -U 'openai>=1.0.0'" in result.stderr


def test_drop_in_client_events_carry_the_deployment_labels(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `patch()`, a drop-in client's events still name the service and environment."""
    from cmdrdata_autopatch.runtime import RUNTIME

    monkeypatch.setenv("CMDRDATA_SERVICE", "billing-api")
    monkeypatch.setenv("DD_ENV", "staging")
    monkeypatch.setenv("CMDRDATA_EXPORTER", "memory")
    monkeypatch.setattr(RUNTIME, "deployment", None)
    tracker = UsageTracker()  # settings from the environment, as a drop-in client's own tracker
    client = fake.client(cls=TrackedOpenAI, tracker=tracker)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="acme")
    memory = tracker.exporter
    assert isinstance(memory, MemoryExporter)
    assert [(e["service"], e["environment"]) for e in memory.wire()] == [("billing-api", "staging")]
