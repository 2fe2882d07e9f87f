"""The OTLP exporter end to end: the real openai client (mock transport) under patch(), our exporter sending
OTLP/HTTP to a loopback receiver that decodes with opentelemetry-proto, every attribute of every event."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otlp extra is not installed")
pytest.importorskip("opentelemetry.proto", reason="opentelemetry-proto is not installed")

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.events import WIRE_FIELDS, UsageEvent
from cmdrdata_autopatch.exporter import FanOutRecorder
from cmdrdata_autopatch.otlp import OtlpExporter
from cmdrdata_autopatch.otlp_attributes import attributes, body

from .fake_openai import CHAT_USAGE, RESPONSES_USAGE, FakeOpenAI
from .otlp_receiver import OtlpReceiver, env_for
from .support import assert_invariant, eventually, run_python


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rec:
        yield rec


def _use(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-api")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test,team=ml")


@pytest.fixture
def both(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver) -> Iterator[tuple[Any, OtlpReceiver]]:
    """patch() with `memory,otlp`: the memory copy is the truth the received records are compared with."""
    _use(monkeypatch, env_for(receiver))
    cmdrdata.patch(exporter="memory,otlp")
    fan = cmdrdata.get_exporter()
    try:
        yield fan, receiver
    finally:
        cmdrdata.unpatch()


def _by_id(receiver: OtlpReceiver) -> dict[str, dict[str, Any]]:
    return {r["attributes"]["cmdrdata.event.id"]: r for r in receiver.log_records()}


def _drive(fake: FakeOpenAI) -> None:
    client = fake.client()
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    for _ in stream:
        pass
    client.embeddings.create(model="text-embedding-3-small", input="hello")
    with cmdrdata.customer("acme", plan="pro", seats=3, beta=True):
        if hasattr(client, "responses"):  # openai >= 1.66
            client.responses.create(model="gpt-4.1", input="hi")
        else:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        client.images.generate(prompt="a cat")


def test_every_event_arrives_with_every_field(both: tuple[Any, OtlpReceiver], fake: FakeOpenAI) -> None:
    fan, receiver = both
    _drive(fake)
    assert cmdrdata.flush(10) is not None
    memory = fan.members[0][1]
    wires = memory.wire()
    with_responses = hasattr(fake.client(), "responses")
    assert [w["api"] for w in wires] == [
        "chat.completions",
        "chat.completions",
        "embeddings",
        "responses" if with_responses else "chat.completions",
        "images",
    ]
    assert eventually(lambda: len(receiver.log_records()) == len(wires))
    received = _by_id(receiver)
    for wire in wires:
        record = received[wire["event_id"]]
        # every wire field, exactly as the pure mapping says (tested field by field below)
        assert record["attributes"] == attributes(wire), wire["api"]
        assert record["body"] == body(wire)
        start_ns = int(wire["request_start_time"] * 1e9)
        assert abs(record["time_unix_nano"] - start_ns) < 2_000  # the call's time, not the export's
        assert record["severity_text"] == "INFO"
        assert record["event_name"] == "cmdrdata.usage"
        assert record["scope"] == "cmdrdata_autopatch" and record["scope_version"] == cmdrdata.__version__
        resource = record["resource"]
        assert resource["service.name"] == "billing-api"
        assert resource["team"] == "ml" and resource["telemetry.sdk.name"] == "opentelemetry"
    chat, stream, embeddings, responses, images = (received[w["event_id"]]["attributes"] for w in wires)
    assert chat["gen_ai.operation.name"] == "chat" and chat["gen_ai.provider.name"] == "openai"
    assert chat["gen_ai.system"] == "openai" and chat["server.address"] == "api.openai.com"
    assert chat["gen_ai.usage.input_tokens"] == CHAT_USAGE["prompt_tokens"]
    assert chat["gen_ai.usage.output_tokens"] == CHAT_USAGE["completion_tokens"]
    assert chat["cmdrdata.usage.total_tokens"] == 18
    assert chat["gen_ai.usage.cache_read.input_tokens"] == chat["cmdrdata.usage.cached_input_tokens"] == 3
    assert chat["gen_ai.usage.reasoning.output_tokens"] == chat["cmdrdata.usage.reasoning_tokens"] == 2
    # (openai releases before 1.2 do not expose the x-request-id header)
    assert chat.get("cmdrdata.request.id") in ("req_test_123", None) and chat["cmdrdata.streaming"] is False
    assert chat["cmdrdata.usage.source"] == "reported" and chat["cmdrdata.error.occurred"] is False
    assert chat["gen_ai.request.model"] == chat["gen_ai.response.model"] == wires[0]["model"]
    assert '"prompt_tokens":11' in chat["cmdrdata.usage.details"]
    assert chat["cmdrdata.sdk.name"] == "cmdrdata-autopatch"
    assert chat["cmdrdata.sdk.openai_version"] == openai.__version__
    assert "cmdrdata.customer.id" not in chat and "error.type" not in chat
    assert stream["cmdrdata.streaming"] is True
    assert stream.get("cmdrdata.request.id") in ("req_stream_123", None)
    assert isinstance(stream["cmdrdata.time_to_first_token_ms"], float)
    assert stream["gen_ai.response.time_to_first_chunk"] == stream["cmdrdata.time_to_first_token_ms"] / 1000
    assert embeddings["gen_ai.operation.name"] == "embeddings"
    assert embeddings["gen_ai.usage.input_tokens"] == 6 and embeddings["gen_ai.usage.output_tokens"] == 0
    assert responses["gen_ai.operation.name"] == "chat"
    if with_responses:
        assert responses["gen_ai.usage.input_tokens"] == RESPONSES_USAGE["input_tokens"]
    assert responses["cmdrdata.customer.id"] == "acme"
    assert responses["cmdrdata.metadata.plan"] == "pro" and responses["cmdrdata.metadata.seats"] == 3
    assert responses["cmdrdata.metadata.beta"] is True
    assert images["gen_ai.operation.name"] == "generate_content"
    units = {k: v for k, v in images.items() if k.startswith("cmdrdata.units.")}
    assert units and units == {f"cmdrdata.units.{k}": v for k, v in wires[4]["units"].items()}
    stats = cmdrdata.stats()
    assert stats["exporters"]["otlp"]["exported"] == 5 and stats["exporters"]["otlp"]["failed"] == 0
    assert stats["exporters"]["memory"]["recorded"] == 5 and stats["recorded"] == 5  # the first one's


def test_a_failed_call_carries_error_type(both: tuple[Any, OtlpReceiver], fake: FakeOpenAI) -> None:
    fan, receiver = both
    fake.overrides["/chat/completions"] = (500, {"error": {"message": "boom", "code": "server_error"}})
    with pytest.raises(openai.InternalServerError):
        fake.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    cmdrdata.flush(10)
    assert eventually(lambda: len(receiver.log_records()) == 1)
    record = receiver.log_records()[0]
    attrs = record["attributes"]
    assert attrs["error.type"] == "InternalServerError" and attrs["cmdrdata.error.occurred"] is True
    assert attrs["http.response.status_code"] == 500
    wire = fan.members[0][1].wire()[0]
    assert attrs == attributes(wire) and attrs.get("cmdrdata.error.code") == wire["error_code"]
    assert attrs["cmdrdata.error.code"] == "server_error"  # every release (1.0.x: read from the body)
    assert "boom" in attrs["cmdrdata.error.message"]
    assert record["severity_text"] == "ERROR" and "error=InternalServerError" in record["body"]


def test_the_mapping_covers_every_wire_field() -> None:
    event = UsageEvent("chat.completions", 1_700_000_000.25, 0.5, customer_id="c-1", metadata={"k": [1, 2]})
    event.provider = "azure"
    event.model = "gpt-4o"
    event.input_tokens, event.output_tokens, event.total_tokens = 10, 4, 14
    event.cached_input_tokens, event.reasoning_tokens = 2, 1
    event.usage_details = {"prompt_tokens": 10}
    event.usage_source = "reported"
    event.units = {"web_search_calls": 2, "audio_seconds": 1.5}
    event.service_tier = "flex"
    event.source_id = "resp_9"
    event.service, event.environment = "svc", "prod"
    event.streaming = True
    event.request_id = "req_1"
    event.time_to_first_token_ms = 120.0
    event.error_occurred, event.error_type, event.error_code = True, "RateLimitError", "rate_limit"
    event.http_status, event.error_message = 429, "slow down"
    wire = event.to_wire()
    attrs = attributes(wire)
    expected = {
        "cmdrdata.event.id": wire["event_id"],
        "cmdrdata.customer.id": "c-1",
        "cmdrdata.provider": "azure",
        "gen_ai.provider.name": "azure.ai.openai",
        "gen_ai.system": "azure.ai.openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "cmdrdata.api": "chat.completions",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 4,
        "cmdrdata.usage.total_tokens": 14,
        "cmdrdata.usage.cached_input_tokens": 2,
        "gen_ai.usage.cache_read.input_tokens": 2,
        "cmdrdata.usage.reasoning_tokens": 1,
        "gen_ai.usage.reasoning.output_tokens": 1,
        "cmdrdata.usage.details": '{"prompt_tokens":10}',
        "cmdrdata.usage.source": "reported",
        "cmdrdata.units.web_search_calls": 2,
        "cmdrdata.units.audio_seconds": 1.5,
        "cmdrdata.service_tier": "flex",
        "gen_ai.openai.response.service_tier": "flex",
        "cmdrdata.source.id": "resp_9",
        "gen_ai.response.id": "resp_9",
        "cmdrdata.service": "svc",
        "cmdrdata.environment": "prod",
        "cmdrdata.streaming": True,
        "cmdrdata.request.id": "req_1",
        "cmdrdata.request.start_time": 1_700_000_000.25,
        "cmdrdata.request.end_time": 1_700_000_000.75,
        "cmdrdata.latency_ms": 500.0,
        "cmdrdata.time_to_first_token_ms": 120.0,
        "gen_ai.response.time_to_first_chunk": 0.12,
        "cmdrdata.error.occurred": True,
        "error.type": "RateLimitError",
        "cmdrdata.error.code": "rate_limit",
        "http.response.status_code": 429,
        "cmdrdata.error.message": "slow down",
        "cmdrdata.metadata.k": "[1,2]",
        "cmdrdata.sdk.name": "cmdrdata-autopatch",
        "cmdrdata.sdk.version": cmdrdata.__version__,
    }
    if wire["sdk"]["openai_version"] is not None:
        expected["cmdrdata.sdk.openai_version"] = wire["sdk"]["openai_version"]
    assert attrs == expected
    # each wire field is represented (the timestamp is the record's own time)
    covered = {
        "event_id", "customer_id", "provider", "model", "api", "input_tokens", "output_tokens",
        "total_tokens", "cached_input_tokens", "reasoning_tokens", "usage_details", "usage_source", "units",
        "service_tier", "source_id", "service", "environment", "streaming", "request_id",
        "request_start_time", "request_end_time", "latency_ms", "time_to_first_token_ms", "error_occurred",
        "error_type", "error_code", "http_status", "error_message", "metadata", "sdk", "timestamp",
    }  # fmt: skip
    assert covered == set(WIRE_FIELDS)


def test_an_openai_compatible_host_is_the_server_address() -> None:
    event = UsageEvent("embeddings", time.time(), 0.1)
    event.provider = "api.groq.com"
    attrs = attributes(event.to_wire())
    assert attrs["gen_ai.provider.name"] == "groq" and attrs["server.address"] == "api.groq.com"
    event = UsageEvent("completions", time.time(), 0.1)
    event.provider = "llm.internal:8000"
    attrs = attributes(event.to_wire())
    assert attrs["gen_ai.provider.name"] == "openai" and attrs["server.address"] == "llm.internal:8000"
    assert attrs["gen_ai.operation.name"] == "text_completion"


def _direct(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **kwargs: Any) -> OtlpExporter:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return OtlpExporter(register_exit=False, **kwargs)


def _event(i: int, customer: str = "c1") -> UsageEvent:
    event = UsageEvent("chat.completions", time.time(), 0.01, customer_id=customer)
    event.provider, event.model = "openai", "gpt-4o"
    event.input_tokens, event.output_tokens = 10 + i, 1 + i
    return event


def test_histogram_when_enabled(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver) -> None:
    exporter = _direct(monkeypatch, env_for(receiver), metrics=True)
    for i, customer in enumerate(("acme", "acme", "globex")):
        assert exporter.record(_event(i, customer)) is True
    exporter.flush(10)
    points = {
        (p["attributes"]["cmdrdata.customer.id"], p["attributes"]["gen_ai.token.type"]): p
        for p in receiver.histogram_points()
    }
    assert set(points) == {("acme", "input"), ("acme", "output"), ("globex", "input"), ("globex", "output")}
    assert points[("acme", "input")]["sum"] == 10 + 11 and points[("acme", "input")]["count"] == 2
    assert points[("acme", "output")]["sum"] == 1 + 2 and points[("globex", "output")]["sum"] == 3
    point = points[("globex", "input")]
    assert point["unit"] == "{token}" and point["bounds"][:3] == [1.0, 4.0, 16.0]
    assert point["attributes"]["gen_ai.operation.name"] == "chat"
    assert point["attributes"]["gen_ai.provider.name"] == "openai"
    assert point["attributes"]["gen_ai.request.model"] == "gpt-4o"
    assert point["scope"] == "cmdrdata_autopatch"
    assert len(receiver.log_records()) == 3
    exporter.sdk.meters.shutdown()


def test_no_histogram_unless_enabled(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver) -> None:
    exporter = _direct(monkeypatch, env_for(receiver))
    exporter.record(_event(1))
    exporter.flush(10)
    assert len(receiver.log_records()) == 1
    assert receiver.of("/v1/metrics") == [] and exporter.sdk.meters is None


def test_gzip_and_headers_from_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver
) -> None:
    env = env_for(receiver, OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
    env["OTEL_EXPORTER_OTLP_HEADERS"] = "x-api-key=secret-value-123,x-team=ml"
    exporter = _direct(monkeypatch, env)
    exporter.record(_event(1))
    exporter.flush(10)
    assert receiver.encodings == ["gzip"] and len(receiver.log_records()) == 1
    assert receiver.requests[0][2]["x-api-key"] == "secret-value-123"
    described = exporter.stats()["otlp"]
    assert described["headers_set"] is True and described["header_names"] == ["x-api-key", "x-team"]
    assert "secret-value-123" not in repr(exporter.stats())


def test_http_and_otlp_fan_out_both_receive(
    monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver, fake: FakeOpenAI, tmp_path: Any
) -> None:
    from .cmdrdata_server import FakeCmdrData

    _use(monkeypatch, env_for(receiver))
    with FakeCmdrData() as server:
        cmdrdata.patch(
            exporter="http,otlp", api_key="tk-fanout-test-0001", endpoint=server.url, spool_dir="off"
        )
        try:
            fan = cmdrdata.get_exporter()
            assert isinstance(fan, FanOutRecorder) and [n for n, _ in fan.members] == ["http", "otlp"]
            client = fake.client()
            for _ in range(3):
                client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
            cmdrdata.flush(10)
            assert eventually(lambda: len(server.stored) == 3 and len(receiver.log_records()) == 3)
            assert set(server.stored) == set(_by_id(receiver))
            stats = cmdrdata.stats()
            assert stats["delivered"] == 3 and stats["exporters"]["otlp"]["exported"] == 3
            assert stats["exporters"]["http"]["delivered"] == 3 and stats["fanout_errors"] == {
                "http": 0,
                "otlp": 0,
            }
            assert_invariant(stats["exporters"]["otlp"])
        finally:
            cmdrdata.unpatch()


def test_a_failing_member_costs_only_itself() -> None:
    class Broken:
        def record(self, event: Any) -> bool:
            raise RuntimeError("broken exporter")

    memory = cmdrdata.MemoryExporter()
    fan = FanOutRecorder([("broken", Broken()), ("memory", memory)])
    assert fan.record(_event(1)) is True
    assert len(memory.events) == 1 and fan.stats()["fanout_errors"] == {"broken": 1, "memory": 0}


GRPC_CHILD = """
import json, os, time
from cmdrdata_autopatch.events import UsageEvent
from cmdrdata_autopatch.otlp import OtlpExporter
from cmdrdata_autopatch.otlp_attributes import attributes
from tests.otlp_receiver import GrpcOtlpReceiver

receiver = GrpcOtlpReceiver()
os.environ.update({
    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    "OTEL_EXPORTER_OTLP_INSECURE": "true",
    "OTEL_EXPORTER_OTLP_HEADERS": "x-team=ml",
})
exporter = OtlpExporter(register_exit=False, metrics=True)
event = UsageEvent("chat.completions", time.time(), 0.01, customer_id="acme")
event.provider, event.model = "openai", "gpt-4o"
event.input_tokens, event.output_tokens = 12, 3
exporter.record(event)
exporter.flush(10)
records = receiver.log_records()
print(json.dumps({
    "exported": exporter.stats()["exported"],
    "protocol": exporter.stats()["otlp"]["protocol"],
    "same_attributes": len(records) == 1 and records[0]["attributes"] == attributes(event.to_wire()),
    "header": receiver.requests[0][2].get("x-team"),
    "kinds": sorted({p["attributes"]["gen_ai.token.type"] for p in receiver.histogram_points()}),
}))
exporter.sdk.meters.shutdown()
receiver.close()
"""


def test_grpc_when_its_exporter_is_installed() -> None:
    """In a child process: gRPC, once initialized, installs fork handlers that abort children forked later
    without exec on Python 3.9 (every later subprocess of this test session would be at risk)."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc", reason="the optional gRPC exporter")
    result = run_python(GRPC_CHILD, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["exported"] == 1 and out["protocol"] == "grpc"
    assert out["same_attributes"] is True
    assert out["header"] == "ml"
    assert out["kinds"] == ["input", "output"]
