"""patch()/unpatch(): in place, on the classes, idempotent, reversible, lazy, and import-order proof."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import openai
import pytest
import wrapt
from openai.resources.chat.completions import Completions as ChatCompletions

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch import patching
from cmdrdata_autopatch.targets import targets_for

from .endpoints import MESSAGES
from .fake_openai import OPENAI_VERSION, FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CMDRDATA_")}
    full_env.update(env)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def _import_all_targets() -> None:
    patching.resolve_all_targets()


def _originals() -> dict[str, Any]:
    import importlib

    out = {}
    for row in targets_for(openai.__version__):
        module = importlib.import_module(row.module)
        for cls_name in (row.class_name, "Async" + row.class_name):
            cls = getattr(module, cls_name)
            out[f"{row.module}:{cls_name}.{row.method_name}"] = cls.__dict__.get(row.method_name)
    return out


def test_unpatch_restores_the_exact_original_objects() -> None:
    import gc

    gc.collect()
    if len(patching._registry.owners):
        # openai 1.0.x keeps every client alive in an lru_cache on BaseClient, so a drop-in client made by
        # an earlier test never dies and (rightly) keeps the wrappers it needs
        assert OPENAI_VERSION < (1, 2, 0)
        pytest.skip("an immortal drop-in client (openai 1.0.x lru_cache) keeps the wrappers installed")
    _import_all_targets()
    before = _originals()
    assert all(v is not None for v in before.values())
    cmdrdata.patch(exporter="memory")
    during = _originals()
    for key, value in during.items():
        assert isinstance(value, wrapt.FunctionWrapper), key
        assert value.__wrapped__ is before[key], key
    cmdrdata.unpatch()
    after = _originals()
    for key, value in after.items():
        assert value is before[key], key
    assert not cmdrdata.is_patched()


def test_patch_twice_wraps_once(fake: FakeOpenAI) -> None:
    exporter = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=exporter)
    cmdrdata.patch(exporter=exporter)
    try:
        create = ChatCompletions.__dict__["create"]
        assert not isinstance(create.__wrapped__, wrapt.FunctionWrapper)
        fake.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        cmdrdata.unpatch()
    assert len(exporter.events) == 1


def test_patch_unpatch_patch(fake: FakeOpenAI) -> None:
    client = fake.client()
    first = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=first)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    cmdrdata.unpatch()
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    second = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=second)
    try:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        cmdrdata.unpatch()
    assert len(first.events) == 1 and len(second.events) == 1


def test_clients_created_before_patch_are_covered(fake: FakeOpenAI) -> None:
    sync_client, async_client = fake.client(), fake.async_client()
    _ = sync_client.chat.completions, sync_client.embeddings  # resources built before patch()
    exporter = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=exporter)
    try:
        sync_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        sync_client.embeddings.create(model="text-embedding-3-small", input="x")
        import asyncio

        asyncio.run(async_client.chat.completions.create(model="gpt-4o", messages=MESSAGES))
    finally:
        cmdrdata.unpatch()
    assert [e["api"] for e in exporter.wire()] == ["chat.completions", "embeddings", "chat.completions"]


def test_module_level_client(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    from .fake_openai import httpx_mod

    saved = (openai.api_key, openai.http_client)
    openai.api_key = "sk-test-module-level"
    openai.http_client = httpx_mod.Client(transport=httpx_mod.MockTransport(fake.handler))
    try:
        openai.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="module-co")
    finally:
        openai.api_key, openai.http_client = saved
        openai._client = None  # the module client caches itself
    assert memory.wire()[0]["customer_id"] == "module-co"


def test_patch_status_lists_every_row(memory: cmdrdata.MemoryExporter) -> None:
    _import_all_targets()
    rows = cmdrdata.patch_status()
    in_range = {r.key for r in targets_for(openai.__version__)}
    assert len(rows) == len(patching.TARGETS)
    for row in rows:
        key = f"{row['module']}:{row['method']}"
        if key in in_range:
            assert row["status"] == "patched", row
        else:
            assert row["status"] == "not in this version", row


def test_patch_before_import_openai_in_a_fresh_process() -> None:
    code = """
        import sys
        import cmdrdata_autopatch as cmdrdata
        cmdrdata.patch(exporter="memory")
        assert "openai" not in sys.modules, "patch() must not import openai"
        sys.path.insert(0, "tests")
        from tests.fake_openai import FakeOpenAI
        fake = FakeOpenAI()
        fake.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        print(len(cmdrdata.get_exporter().events))
    """
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


@pytest.mark.skipif(OPENAI_VERSION < (1, 78, 0), reason="resources load lazily from openai 1.78.0")
def test_patch_imports_no_resource_module_the_app_does_not_use() -> None:
    code = """
        import sys, json
        import openai
        before = {m for m in sys.modules if m.startswith("openai.resources")}
        import cmdrdata_autopatch as cmdrdata
        cmdrdata.patch(exporter="memory")
        after_patch = {m for m in sys.modules if m.startswith("openai.resources")}
        client = openai.OpenAI(api_key="sk-test")
        client.embeddings  # the app touches one resource
        touched = {m for m in sys.modules if m.startswith("openai.resources")}
        status = {r["method"] + "@" + r["module"]: r["status"] for r in cmdrdata.patch_status()}
        new_at_patch, touched = sorted(after_patch - before), sorted(touched - after_patch)
        print(json.dumps({"new_at_patch": new_at_patch, "touched": touched, "status": status}))
    """
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["new_at_patch"] == []
    assert "openai.resources.embeddings" in out["touched"]
    assert out["status"]["Embeddings.create@openai.resources.embeddings"] == "patched"
    if OPENAI_VERSION >= (3, 16, 1):  # before, `openai.resources/__init__` imports every resource at once
        assert not any("chat" in m or "images" in m for m in out["touched"])
        assert out["status"]["Images.generate@openai.resources.images"] == "pending"


def test_disabled_env_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMDRDATA_DISABLED", "1")
    cmdrdata.patch(exporter="memory")
    assert not cmdrdata.is_patched()


@pytest.mark.parametrize(
    ("kwargs", "env", "needle"),
    [
        ({"queue_size": "abc"}, {}, "queue_size"),
        ({"stream_usage": "sometimes"}, {}, "stream_usage"),  # a keyword is code: it raises
        ({}, {"CMDRDATA_EXPORTER": "kafka"}, "CMDRDATA_EXPORTER"),  # billing settings switch it off
        ({}, {"CMDRDATA_CUSTOMER_ID": "a\nb"}, "CMDRDATA_CUSTOMER_ID"),
        ({"exporter": "kafka"}, {}, "exporter"),
        ({"endpoint": "http://billing.example.com/api"}, {}, "https"),
        ({"customer_id": 42}, {}, "customer_id"),
        ({}, {"CMDRDATA_EXPORTER": "http"}, "CMDRDATA_API_KEY"),
        ({"bogus_setting": 1}, {}, "bogus_setting"),
    ],
)
def test_bad_configuration_fails_early_and_names_the_setting(
    kwargs: dict[str, Any], env: dict[str, str], needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=needle):
        cmdrdata.patch(**kwargs)
    assert not cmdrdata.is_patched()


def test_exporter_object_must_have_record() -> None:
    with pytest.raises(TypeError, match="record"):
        cmdrdata.patch(exporter=object())


def test_internal_failure_never_reaches_the_caller(fake: FakeOpenAI) -> None:
    class Exploding:
        def record(self, event: Any) -> None:
            raise RuntimeError("exporter is broken")

    cmdrdata.patch(exporter=Exploding())
    try:
        result = fake.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        cmdrdata.unpatch()
    assert result.usage.total_tokens == 18
    assert cmdrdata.stats()["internal_errors"].get("exporter.record", 0) >= 1


def test_unpatch_keeps_wrappers_while_a_dropin_client_lives(fake: FakeOpenAI) -> None:
    from cmdrdata_autopatch.client import TrackedOpenAI

    from .fake_openai import httpx_mod

    own = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter="memory")
    tracked = TrackedOpenAI(
        api_key="sk-test",
        tracker=own,
        http_client=httpx_mod.Client(transport=httpx_mod.MockTransport(fake.handler)),
    )
    cmdrdata.unpatch()
    assert not cmdrdata.is_patched()
    tracked.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="still-billed")
    assert "customer_id" not in fake.requests[-1].json()
    assert [e["customer_id"] for e in own.wire()] == ["still-billed"]
    fake.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)  # plain clients: not recorded
    assert len(own.events) == 1
    del tracked
    cmdrdata.unpatch()
    if len(patching._registry.owners):
        # openai 1.0.x keeps every client alive in an lru_cache on BaseClient: it never dies, so the
        # wrappers it needs must stay
        assert OPENAI_VERSION < (1, 2, 0)
        return
    create = ChatCompletions.__dict__["create"]
    assert not isinstance(create, wrapt.FunctionWrapper)


def test_explicit_patch_without_openai_says_how_to_fix() -> None:
    code = """
        import importlib.util, logging, sys
        logging.basicConfig(level=logging.WARNING)
        find = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "openai" else find(name, *a)
        import cmdrdata_autopatch as cmdrdata
        cmdrdata.patch(exporter="memory")
    """
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert "pip install -U 'openai>=1.0.0'" in proc.stderr
