"""Where OTLP goes, read from the standard `OTEL_EXPORTER_OTLP_*` variables, and whether the `otlp` extra is
installed: without importing the OpenTelemetry SDK, so `config.py` (the early error naming the fix) and
`doctor` can ask on any Python, with or without the extra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional

INSTALL_FIX = "pip install 'cmdrdata-autopatch[otlp]'"
GRPC_FIX = "pip install 'cmdrdata-autopatch[otlp-grpc]' (or opentelemetry-exporter-otlp-proto-grpc)"


def _env(environ: Mapping[str, str], *names: str) -> Optional[str]:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def protocol(environ: Mapping[str, str], signal: str = "LOGS") -> str:
    """`http/protobuf` (the default) or `grpc`, from OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL / _PROTOCOL."""
    value = _env(environ, f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    return "grpc" if (value or "").lower() == "grpc" else "http/protobuf"


def endpoint(environ: Mapping[str, str], signal: str = "LOGS") -> str:
    """Where the SDK's exporter will send this signal (the resolution the OTLP spec prescribes)."""
    own = _env(environ, f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    if own:
        return own
    base = _env(environ, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if protocol(environ, signal) == "grpc":
        return base or "http://localhost:4317"
    return (base or "http://localhost:4318").rstrip("/") + f"/v1/{signal.lower()}"


def describe(environ: Optional[Mapping[str, str]] = None, metrics: bool = False) -> dict[str, Any]:
    """Where OTLP goes, for `doctor` and `stats()`. Header *names* count; their values (API keys) never
    leave this function."""
    env = os.environ if environ is None else environ
    headers = _env(env, "OTEL_EXPORTER_OTLP_LOGS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS") or ""
    names = sorted({item.split("=", 1)[0].strip().lower() for item in headers.split(",") if "=" in item})
    out: dict[str, Any] = {
        "endpoint": endpoint(env),
        "protocol": protocol(env),
        "headers_set": bool(names),
        "header_names": names,
        "compression": _env(env, "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
        or "none",
        "timeout": _env(env, "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
        or "10 (default)",
        "metrics": metrics,
    }
    if metrics:
        out["metrics_endpoint"] = endpoint(env, "METRICS")
    return out


def missing(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Why the otlp exporter cannot be built here (the fix included), or None when it can."""
    import importlib.util

    env = os.environ if environ is None else environ
    try:
        if importlib.util.find_spec("opentelemetry.sdk") is None:
            return f"the otlp exporter needs the OpenTelemetry SDK; install it with: {INSTALL_FIX}"
        if protocol(env) == "grpc":
            if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None:
                return (
                    f"OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter; install it with: {GRPC_FIX}"
                )
        elif importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
            return f"the otlp exporter needs the OTLP/HTTP exporter; install it with: {INSTALL_FIX}"
    except (ImportError, ValueError):
        return f"the otlp exporter needs the OpenTelemetry SDK; install it with: {INSTALL_FIX}"
    return None
