"""A loopback OTLP/HTTP receiver (127.0.0.1, port 0): decodes `/v1/logs`, `/v1/metrics` and `/v1/traces`
bodies with `opentelemetry-proto`'s official messages (gzip and deflate aware) and keeps what arrived.

Failure injection: `status` answers every request with that code (500...), `hang` holds each request
until `release()` (or the server closes), and `closed_port()` gives a port nobody listens on.
"""

from __future__ import annotations

import gzip
import socket
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

MESSAGES = {
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
}


def any_value(value: AnyValue) -> Any:
    """An AnyValue as the Python value it carries."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attrs(key_values: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in key_values}


def closed_port() -> int:
    """A loopback port with no listener (bound, then closed): connecting to it is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


class OtlpReceiver:
    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.status = status
        self.hang = hang
        self.requests: list[tuple[str, Any, dict[str, str]]] = []
        self.encodings: list[str] = []
        self._released = threading.Event()
        self._cv = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                outer._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        encoding = (handler.headers.get("Content-Encoding") or "").lower()
        if self.hang:
            self._released.wait(60)
        path = handler.path.split("?", 1)[0]
        kinds = MESSAGES.get(path)
        if kinds is None or self.status != 200:
            handler.send_response(404 if kinds is None else self.status)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        data = raw
        if encoding == "gzip":
            data = gzip.decompress(raw)
        elif encoding == "deflate":
            data = zlib.decompress(raw)
        message = kinds[0]()
        message.ParseFromString(data)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._cv:
            self.requests.append((path, message, headers))
            self.encodings.append(encoding)
            self._cv.notify_all()
        reply = kinds[1]().SerializeToString()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/x-protobuf")
        handler.send_header("Content-Length", str(len(reply)))
        handler.end_headers()
        handler.wfile.write(reply)

    # -- what arrived --------------------------------------------------------------------------------

    def of(self, path: str) -> list[Any]:
        with self._cv:
            return [message for p, message, _ in self.requests if p == path]

    def log_records(self) -> list[dict[str, Any]]:
        """Every log record received, flattened: attributes, body, times, severity, resource, scope."""
        out = []
        for request in self.of("/v1/logs"):
            for resource_logs in request.resource_logs:
                resource = attrs(resource_logs.resource.attributes)
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        out.append(
                            {
                                "attributes": attrs(record.attributes),
                                "body": any_value(record.body),
                                "time_unix_nano": record.time_unix_nano,
                                "observed_time_unix_nano": record.observed_time_unix_nano,
                                "severity_text": record.severity_text,
                                "severity_number": record.severity_number,
                                "event_name": getattr(record, "event_name", ""),
                                "resource": resource,
                                "scope": scope_logs.scope.name,
                                "scope_version": scope_logs.scope.version,
                            }
                        )
        return out

    def histogram_points(self, name: str = "gen_ai.client.token.usage") -> list[dict[str, Any]]:
        """The latest data points of metric `name`: attributes, count, sum, bounds, unit, resource."""
        points: list[dict[str, Any]] = []
        for request in self.of("/v1/metrics"):
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        if metric.name != name:
                            continue
                        for point in metric.histogram.data_points:
                            points.append(
                                {
                                    "attributes": attrs(point.attributes),
                                    "count": point.count,
                                    "sum": point.sum,
                                    "bounds": list(point.explicit_bounds),
                                    "unit": metric.unit,
                                    "resource": attrs(resource_metrics.resource.attributes),
                                    "scope": scope_metrics.scope.name,
                                }
                            )
        return points

    def span_names(self) -> list[str]:
        names = []
        for request in self.of("/v1/traces"):
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    names.extend(span.name for span in scope_spans.spans)
        return names

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def env_for(receiver: Optional[OtlpReceiver], port: Optional[int] = None, **extra: str) -> dict[str, str]:
    """OTEL_* variables pointing our exporter at `receiver` (or at `port` on loopback)."""
    url = receiver.url if receiver is not None else f"http://127.0.0.1:{port}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_EXPORTER_OTLP_TIMEOUT": "3"}
    env.update(extra)
    return env


class GrpcOtlpReceiver(OtlpReceiver):
    """The same receiver over OTLP/gRPC (needs grpcio: the gRPC exporter's dependency)."""

    def __init__(self) -> None:  # (no HTTP server: the parent's readers work on `requests`)
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

        self.requests = []
        self.encodings = []
        self._cv = threading.Condition()
        self._released = threading.Event()
        outer = self

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                outer._keep("/v1/logs", request, context)
                return ExportLogsServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                outer._keep("/v1/metrics", request, context)
                return ExportMetricsServiceResponse()

        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self._grpc)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._grpc)
        self.port = self._grpc.add_insecure_port("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{self.port}"
        self._grpc.start()

    def _keep(self, path: str, request: Any, context: Any) -> None:
        headers = {key: value for key, value in context.invocation_metadata()}
        with self._cv:
            self.requests.append((path, request, headers))
            self._cv.notify_all()

    def close(self) -> None:
        self._grpc.stop(grace=None)
