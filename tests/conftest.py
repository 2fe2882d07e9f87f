"""Shared fixtures. Tests never reach the internet: OpenAI is `tests/fake_openai.py` (mock transport or a
loopback server), CmdrData is a loopback server the delivery tests start themselves."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.derived import forget_recent
from cmdrdata_autopatch.diagnostics import reset_internal_errors
from cmdrdata_autopatch.exporter import BackgroundExporter
from cmdrdata_autopatch.object_billing import MEMORY

from .apps.harness import RecordingServer
from .fake_openai import FakeOpenAI, LoopbackOpenAI

# Never let a developer's environment leak into the tests.
for _name in list(os.environ):
    # (service / environment fall back on the OpenTelemetry and Datadog names)
    if _name.startswith("CMDRDATA_") or _name in (
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "DD_SERVICE",
        "DD_ENV",
    ):
        del os.environ[_name]


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
def memory() -> Iterator[cmdrdata.MemoryExporter]:
    """patch() with the in-memory exporter; unpatch() afterwards."""
    reset_internal_errors()
    cmdrdata.patch(exporter="memory")
    exporter = cmdrdata.get_exporter()
    assert isinstance(exporter, cmdrdata.MemoryExporter)
    try:
        yield exporter
    finally:
        cmdrdata.unpatch()


@pytest.fixture
def loopback(fake: FakeOpenAI) -> Iterator[LoopbackOpenAI]:
    server = LoopbackOpenAI(fake)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    """A loopback server that records every request (CmdrData's side, for CLI and drop-in client tests)."""
    srv = RecordingServer()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def exporters() -> Iterator[list[BackgroundExporter]]:
    """Collects the exporters a test makes and shuts them down afterwards (no thread outlives the test)."""
    made: list[BackgroundExporter] = []
    yield made
    for exporter in made:
        exporter.shutdown(0.2)


@pytest.fixture
def fresh_object_memory() -> Iterator[None]:
    """Forget the object customers and recently billed ids this process holds, before and after a test
    of server-side objects: each test starts as a process that has never seen the object."""
    MEMORY.clear()
    forget_recent()
    yield
    MEMORY.clear()
    forget_recent()
