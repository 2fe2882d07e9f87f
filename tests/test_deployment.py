"""`service` and `environment` on every event (issue 13 item 4): which deployment made the call.

Set once by `patch()` from `CMDRDATA_SERVICE` / `CMDRDATA_ENVIRONMENT`, else the names an OpenTelemetry or
Datadog deployment already sets; copied onto each event when it is created.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.config import load_settings

from .endpoints import MESSAGES
from .fake_openai import FakeOpenAI


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    try:
        yield monkeypatch
    finally:
        cmdrdata.unpatch()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (None, None)),
        (
            {"CMDRDATA_SERVICE": " billing-api ", "CMDRDATA_ENVIRONMENT": "staging"},
            ("billing-api", "staging"),
        ),
        ({"OTEL_SERVICE_NAME": "otel-svc"}, ("otel-svc", None)),
        ({"DD_SERVICE": "dd-svc", "DD_ENV": "prod"}, ("dd-svc", "prod")),
        (
            {
                "OTEL_RESOURCE_ATTRIBUTES": "team=x,service.name=res%20svc,deployment.environment=qa",
                "DD_ENV": "p",
            },
            ("res svc", "qa"),
        ),
        ({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=eu"}, (None, "eu")),
        (  # ours first, then OpenTelemetry, then Datadog
            {"CMDRDATA_SERVICE": "ours", "OTEL_SERVICE_NAME": "otel", "DD_SERVICE": "dd", "DD_ENV": "prod"},
            ("ours", "prod"),
        ),
        ({"OTEL_SERVICE_NAME": "otel", "DD_SERVICE": "dd"}, ("otel", None)),
    ],
)
def test_resolution_order(env: dict[str, str], expected: tuple[object, object]) -> None:
    settings = load_settings(env)
    assert (settings.service, settings.environment) == expected
    assert settings.notes == ()


def test_keywords_win(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings({"CMDRDATA_SERVICE": "env"}, service="kw", environment="dev")
    assert (settings.service, settings.environment) == ("kw", "dev")


def test_every_event_carries_them(fake: FakeOpenAI, patched: pytest.MonkeyPatch) -> None:
    patched.setenv("CMDRDATA_SERVICE", "billing-api")
    patched.setenv("DD_ENV", "production")
    cmdrdata.patch(exporter="memory")
    memory = cmdrdata.get_exporter()
    client = fake.client()
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    client.embeddings.create(model="text-embedding-3-small", input="hi")
    wires = memory.wire()
    assert len(wires) == 3
    assert {(w["service"], w["environment"]) for w in wires} == {("billing-api", "production")}


def test_an_event_keeps_the_labels_it_was_created_with(fake: FakeOpenAI, patched: pytest.MonkeyPatch) -> None:
    cmdrdata.patch(exporter="memory", service="old")
    memory = cmdrdata.get_exporter()
    fake.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    event = memory.events[0]
    cmdrdata.patch(exporter=memory, service="new", environment="e")
    fake.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert event.to_wire()["service"] == "old" and event.to_wire()["environment"] is None
    assert (memory.wire()[1]["service"], memory.wire()[1]["environment"]) == ("new", "e")


def test_unpatch_forgets_them(fake: FakeOpenAI, patched: pytest.MonkeyPatch) -> None:
    cmdrdata.patch(exporter="memory", service="svc")
    cmdrdata.unpatch()
    cmdrdata.patch(exporter="memory")
    memory = cmdrdata.get_exporter()
    fake.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert memory.wire()[0]["service"] is None
