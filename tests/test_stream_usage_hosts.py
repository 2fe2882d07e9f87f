"""Streaming usage under `auto` (issue 13 item 6): ask the hosts known to accept `stream_options`.

api.openai.com, Azure OpenAI from api-version 2024-09-01 on, and the hosts in CMDRDATA_STREAM_USAGE_HOSTS get
`stream_options.include_usage` (their streams are billed as reported); any other host is not asked (it may
reject the parameter) and its streams are estimated, flagged, and the report's footer names the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.report import Reading, Report
from cmdrdata_autopatch.report_query import Window
from cmdrdata_autopatch.report_text import footer_notes

from .endpoints import MESSAGES
from .fake_openai import OPENAI_VERSION, FakeOpenAI

pytestmark = pytest.mark.skipif(OPENAI_VERSION < (1, 26, 0), reason="stream_options arrived in 1.26.0")


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[cmdrdata.MemoryExporter]:
    monkeypatch.setenv("CMDRDATA_STREAM_USAGE_HOSTS", "gateway.internal, *.example.com")
    memory = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=memory)
    try:
        yield memory
    finally:
        cmdrdata.unpatch()


def stream_once(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, client: Any) -> tuple[bool, dict, list]:
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    asked = "stream_options" in fake.requests[-1].json()
    return asked, memory.wire()[-1], chunks


def azure(fake: FakeOpenAI, version: str) -> Any:
    return fake.client(
        openai.AzureOpenAI, azure_endpoint="https://myres.openai.azure.com", api_version=version
    )


@pytest.mark.parametrize(
    ("make", "asked"),
    [
        (lambda fake: fake.client(), True),
        (lambda fake: azure(fake, "2024-10-21"), True),
        (lambda fake: azure(fake, "2025-04-01-preview"), True),
        (lambda fake: azure(fake, "2024-02-01"), False),  # older api-versions reject the parameter
        (lambda fake: fake.client(base_url="https://gateway.internal/v1"), True),
        (lambda fake: fake.client(base_url="https://llm.example.com/v1"), True),
        (lambda fake: fake.client(base_url="https://example.com.evil.net/v1"), False),
        (lambda fake: fake.client(base_url="http://localhost:11434/v1"), False),
    ],
)
def test_auto_asks_only_hosts_known_to_accept(
    fake: FakeOpenAI, exporter: cmdrdata.MemoryExporter, make: Any, asked: bool
) -> None:
    plain = list(fake.client().chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    got_asked, event, chunks = stream_once(fake, exporter, make(fake))
    assert got_asked is asked
    assert event["usage_source"] == ("reported" if asked else "estimated")
    assert len(chunks) == len(plain)  # the usage-only chunk we caused is hidden from the caller
    assert all(chunk.choices for chunk in chunks)


def test_always_asks_every_host(fake: FakeOpenAI) -> None:
    memory = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=memory, stream_usage="always")
    try:
        asked, event, _ = stream_once(fake, memory, fake.client(base_url="http://localhost:11434/v1"))
    finally:
        cmdrdata.unpatch()
    assert asked and event["usage_source"] == "reported"


def test_hosts_setting_is_validated() -> None:
    from cmdrdata_autopatch.config import ConfigError, load_settings

    assert load_settings({"CMDRDATA_STREAM_USAGE_HOSTS": "A.example.com,,b"}).stream_usage_hosts == (
        "a.example.com",
        "b",
    )
    notes = load_settings({"CMDRDATA_STREAM_USAGE_HOSTS": "https://gw/v1"}).notes
    assert len(notes) == 1 and "not a host name" in notes[0]
    with pytest.raises(ConfigError, match="stream_usage_hosts"):
        load_settings({}, stream_usage_hosts=["http://x"])


def test_report_footer_names_the_fix_for_estimated_streams() -> None:
    def event(provider: str, streaming: bool, source: str = "estimated") -> dict:
        return {"provider": provider, "streaming": streaming, "usage_source": source, "customer_id": "c"}

    reading = Reading()
    reading.events = [
        event("gateway.internal", True),
        event("gateway.internal", True),
        event("azure", True),
        event("openai", False),
        event("openai", True, "reported"),
    ]
    report = Report.build(reading, Window(), [], None)
    text = "\n".join(footer_notes(report))
    assert "3 streamed call(s) had no usage reported" in text
    assert "CMDRDATA_STREAM_USAGE_HOSTS=gateway.internal" in text
    assert "Azure" in text and "2024-09-01" in text
    assert "1 other call(s)" in text
