"""The OTLP exporter in real child processes: an application with its own global OpenTelemetry providers
keeps them (and gets none of our records), SIGTERM right after the calls still delivers, the extra's
absence is a clear early error, and `doctor` shows where OTLP goes without header values."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otlp extra is not installed")
pytest.importorskip("opentelemetry.proto", reason="opentelemetry-proto is not installed")

from .apps.harness import clean_env, console_script, run
from .otlp_receiver import OtlpReceiver, env_for
from .support import REPO, eventually, run_python, start_python

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

CALLS = """
import os, sys, time
sys.path.insert(0, os.environ["REPO"])
from tests.fake_openai import FakeOpenAI
import cmdrdata_autopatch as cmdrdata
cmdrdata.patch(exporter="otlp")
client = FakeOpenAI().client()
with cmdrdata.customer("acme"):
    for _ in range(int(os.environ["N"])):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
"""

APP_WITH_ITS_OWN_TELEMETRY = (
    """
from opentelemetry import _logs, metrics, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=os.environ["APP_TRACES"])))
trace.set_tracer_provider(tracer_provider)
app_logs = InMemoryLogExporter()
logger_provider = LoggerProvider()
logger_provider.add_log_record_processor(SimpleLogRecordProcessor(app_logs))
_logs.set_logger_provider(logger_provider)
app_metrics = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[app_metrics])
metrics.set_meter_provider(meter_provider)
# from here on the SDK's self-metrics are on: any otel.* series in the app's reader would be ours
os.environ["OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"] = "true"
"""
    + CALLS
    + """
with trace.get_tracer("app").start_as_current_span("app-span"):
    client.embeddings.create(model="text-embedding-3-small", input="x")
_logs.get_logger("app").emit(body="app log line")
cmdrdata.flush(10)
data = app_metrics.get_metrics_data()
points = [[m.name, dict(p.attributes), getattr(p, "value", None)]
          for rm in (data.resource_metrics if data else []) for sm in rm.scope_metrics
          for m in sm.metrics for p in m.data.data_points]
print(json.dumps({
    "tracer": trace.get_tracer_provider() is tracer_provider,
    "logger": _logs.get_logger_provider() is logger_provider,
    "meter": metrics.get_meter_provider() is meter_provider,
    "app_logs": [str(r.log_record.body) for r in app_logs.get_finished_logs()],
    "app_metrics": points,
    "stats": {k: v for k, v in cmdrdata.stats().items() if k in ("exported", "failed", "dropped")},
}))
"""
)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rec:
        yield rec


def _env(receiver: OtlpReceiver, n: int, **extra: str) -> dict[str, str]:
    return {**env_for(receiver), "N": str(n), "REPO": REPO, **extra}


def test_the_apps_own_providers_are_untouched(receiver: OtlpReceiver) -> None:
    with OtlpReceiver() as app_place:
        env = _env(
            receiver,
            3,
            APP_TRACES=app_place.url + "/v1/traces",
            CMDRDATA_OTLP_METRICS="1",
        )
        code = "import json, os\n" + APP_WITH_ITS_OWN_TELEMETRY
        result = run_python(code, env)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout.strip().splitlines()[-1])
        assert out["tracer"] and out["logger"] and out["meter"]  # still the app's, all three
        assert out["app_logs"] == ["app log line"]  # none of our records in the app's log pipeline
        # the app's reader holds the app's own SDK self-metrics (its spans, its one log line, its
        # processors) and nothing of ours: no histogram, no exporter counters, one log created, not five
        for name, attributes, value in out["app_metrics"]:
            assert not name.startswith(("gen_ai.", "otel.sdk.exporter")), out["app_metrics"]
            if name == "otel.sdk.log.created":
                assert value == 1, out["app_metrics"]
            if name.startswith("otel.sdk.processor"):
                assert attributes["otel.component.type"].startswith("simple_"), out["app_metrics"]
        assert out["stats"] == {"exported": 4, "failed": 0, "dropped": {}}
        # the app's span went to the app's own place, and nothing of ours did
        assert eventually(lambda: app_place.span_names() == ["app-span"])
        assert app_place.log_records() == [] and app_place.of("/v1/metrics") == []
        # ours went to ours: 4 records, the histogram, and no span of the app's
        records = receiver.log_records()
        assert len(records) == 4 and receiver.span_names() == []
        assert {r["attributes"]["gen_ai.operation.name"] for r in records} == {"chat", "embeddings"}
        assert receiver.histogram_points()


@POSIX
def test_sigterm_right_after_the_calls_still_delivers(receiver: OtlpReceiver) -> None:
    code = CALLS + "\nprint('READY', flush=True)\nwhile True:\n    time.sleep(0.05)\n"
    proc = start_python(code, _env(receiver, 20, CMDRDATA_FLUSH_INTERVAL="30", CMDRDATA_EXIT_TIMEOUT="10"))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY"), (line, proc.stderr.read() if proc.stderr else "")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM, err
    records = receiver.log_records()
    assert len(records) == 20, err  # the 30 s batching window was cut short by the exit drain
    assert {r["attributes"]["cmdrdata.customer.id"] for r in records} == {"acme"}


def test_atexit_delivers_with_a_fan_out(receiver: OtlpReceiver, tmp_path: Path) -> None:
    code = CALLS.replace('exporter="otlp"', 'exporter="jsonl,otlp"')
    env = _env(receiver, 5, CMDRDATA_JSONL_PATH=str(tmp_path / "u.jsonl"), CMDRDATA_FLUSH_INTERVAL="30")
    env["CMDRDATA_EXIT_TIMEOUT"] = "10"  # (returns as soon as both are done: a loaded CI machine is slow)
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert len(receiver.log_records()) == 5
    assert len((tmp_path / "u.jsonl").read_text().splitlines()) == 5


BLOCK_OTEL = "import sys\nsys.modules['opentelemetry'] = None  # as if the otlp extra were not installed\n"


def test_without_the_extra_the_package_imports_and_otlp_fails_early_naming_the_fix() -> None:
    code = BLOCK_OTEL + (
        "import cmdrdata_autopatch as c\n"
        "c.patch(exporter='memory')\n"
        "print('memory ok')\n"
        "try:\n"
        "    c.patch(exporter='http,otlp', api_key='tk-0123456789')\n"
        "except ValueError as exc:\n"
        "    print('error:', exc)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "memory ok" in result.stdout
    assert "pip install 'cmdrdata-autopatch[otlp]'" in result.stdout
    assert "CMDRDATA_EXPORTER" in result.stdout or "exporter" in result.stdout


def test_unknown_exporter_names_are_a_clear_error() -> None:
    from cmdrdata_autopatch.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=r"'jsnl' is not an exporter.*did you mean 'jsonl'"):
        load_settings({"CMDRDATA_EXPORTER": "otlp,jsnl"})
    with pytest.raises(ConfigError, match=r"'kafka' is not an exporter; must be one of .*otlp"):
        load_settings({"CMDRDATA_EXPORTER": "http,kafka", "CMDRDATA_API_KEY": "tk-0123456789"})
    with pytest.raises(ConfigError, match=r"otpl.*did you mean 'otlp'"):
        load_settings({"CMDRDATA_EXPORTER": "otpl"})
    settings = load_settings({"CMDRDATA_EXPORTER": " HTTP , otlp,http", "CMDRDATA_API_KEY": "tk-0123456789"})
    assert settings.exporter == "http,otlp" and settings.exporters == ("http", "otlp")
    with pytest.raises(ConfigError, match="needs a CmdrData API key"):
        load_settings({"CMDRDATA_EXPORTER": "otlp,http"})
    assert load_settings({"CMDRDATA_OTLP_METRICS": "yes"}).otlp_metrics is True
    noted = load_settings({"CMDRDATA_OTLP_METRICS": "maybe"})
    assert noted.otlp_metrics is False and any("CMDRDATA_OTLP_METRICS" in n for n in noted.notes)


def test_doctor_shows_where_otlp_goes_never_header_values(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path,
        CMDRDATA_EXPORTER="jsonl,otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT="https://collector.example.internal:4318",
        OTEL_EXPORTER_OTLP_HEADERS="x-honeycomb-team=hc-secret-value-42",
        CMDRDATA_OTLP_METRICS="1",
    )
    result = run([*console_script("cmdrdata-autopatch"), "doctor", "--json", "--no-network"], env)
    assert "hc-secret-value-42" not in result.stdout + result.stderr
    data = json.loads(result.stdout)
    otlp = data["otlp"]
    assert otlp["endpoint"] == "https://collector.example.internal:4318/v1/logs"
    assert otlp["protocol"] == "http/protobuf" and otlp["headers_set"] is True
    assert otlp["header_names"] == ["x-honeycomb-team"] and otlp["metrics"] is True
    assert otlp["metrics_endpoint"] == "https://collector.example.internal:4318/v1/metrics"
    assert not any("clear text" in w for w in data["warnings"])  # https
    assert any("CMDRDATA_OTLP_METRICS" in w for w in data["warnings"])
    plain = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.example.internal:4318"}
    result = run([*console_script("cmdrdata-autopatch"), "doctor", "--json", "--no-network"], plain)
    warnings = json.loads(result.stdout)["warnings"]
    assert any("x-honeycomb-team" in w and "clear text" in w for w in warnings), warnings
    assert "hc-secret-value-42" not in result.stdout + result.stderr
    text = run([*console_script("cmdrdata-autopatch"), "doctor", "--no-network"], env)
    assert "collector.example.internal:4318/v1/logs" in text.stdout
    assert "hc-secret-value-42" not in text.stdout + text.stderr


def test_grpc_without_its_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from cmdrdata_autopatch.config import ConfigError, load_settings

    # as if the optional gRPC exporter were not installed (find_spec answers None for a None entry)
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc", None)
    env = {"CMDRDATA_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grpc"}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")
    fix = r"cmdrdata-autopatch\[otlp-grpc\].*opentelemetry-exporter-otlp-proto-grpc"
    with pytest.raises(ConfigError, match=fix):
        load_settings(env)


@POSIX
def test_a_forked_child_exports_its_own_events_only(receiver: OtlpReceiver) -> None:
    code = """
import os, sys
sys.path.insert(0, os.environ["REPO"])
from tests.support import make_event
import cmdrdata_autopatch as cmdrdata
cmdrdata.patch(exporter="otlp")
exporter = cmdrdata.get_exporter()
exporter.record(make_event(1, customer="parent"))
cmdrdata.flush(10)
exporter.record(make_event(2, customer="parent-late"))  # queued when the fork happens
pid = os.fork()
if pid == 0:
    exporter.record(make_event(3, customer="child"))
    cmdrdata.flush(10)
    print("child", exporter.stats()["exported"], flush=True)
    os._exit(0)
os.waitpid(pid, 0)
cmdrdata.flush(10)
print("parent", exporter.stats()["exported"], flush=True)
"""
    result = run_python(code, _env(receiver, 0, CMDRDATA_FLUSH_INTERVAL="0.5"))
    assert result.returncode == 0, result.stderr
    assert "child 1" in result.stdout and "parent 2" in result.stdout, result.stdout + result.stderr
    customers = sorted(r["attributes"]["cmdrdata.customer.id"] for r in receiver.log_records())
    assert customers == ["child", "parent", "parent-late"]  # each event once, by the process that had it


def test_replay_finds_the_http_spool_of_a_fan_out(tmp_path: Path) -> None:
    from cmdrdata_autopatch.config import load_settings
    from cmdrdata_autopatch.replay import spool_directory

    env = {"CMDRDATA_API_KEY": "tk-0123456789", "CMDRDATA_SPOOL_DIR": str(tmp_path)}
    alone = spool_directory(load_settings({**env, "CMDRDATA_EXPORTER": "http"}))
    assert alone is not None
    assert spool_directory(load_settings({**env, "CMDRDATA_EXPORTER": "http,otlp"})) == alone
    assert spool_directory(load_settings({**env, "CMDRDATA_EXPORTER": "otlp"})) is None


def test_the_exit_line_counts_every_lost_event_with_its_reason() -> None:
    from .otlp_receiver import closed_port

    env = {**env_for(None, port=closed_port(), OTEL_EXPORTER_OTLP_TIMEOUT="1"), "N": "3", "REPO": REPO}
    result = run_python(CALLS, env)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("cmdrdata-autopatch: at exit")]
    assert len(lines) == 1, result.stderr
    assert "0 usage event(s) exported over OTLP" in lines[0] and "3 lost in this run" in lines[0], lines
    assert any(why in lines[0] for why in ("export_failed=", "exit_timeout=", "in_flight_at_exit=")), lines
