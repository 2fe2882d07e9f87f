"""Settings: `patch()` keyword arguments first, then `CMDRDATA_*` environment variables, then defaults.

Everything is validated here, at `patch()` time, so a bad value is reported once, early, with the name of
the setting, the value and what is allowed, instead of failing later inside the background thread.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://api.cmdrdata.ai/api/events"
DEFAULT_JSONL_PATH = "cmdrdata-usage.jsonl"
EXPORTER_NAMES = ("http", "jsonl", "console", "memory", "none")
STREAM_USAGE_POLICIES = ("auto", "always", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class ConfigError(ValueError):
    """A setting has a value we cannot use. The message names the setting, the value and the fix."""


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment variable `name` is set to a true-ish value (1, true, yes, on)."""
    value = (environ if environ is not None else os.environ).get(name, "")
    return value.strip().lower() in _TRUE


@dataclass(frozen=True)
class Settings:
    """The resolved configuration. `api_key` is never shown by `repr()` and never written to an event."""

    api_key: str | None = field(default=None, repr=False)
    endpoint: str = DEFAULT_ENDPOINT
    exporter: str = "jsonl"
    customer_id: str | None = None
    jsonl_path: str = DEFAULT_JSONL_PATH
    spool_dir: str | None = None
    queue_size: int = 10_000
    flush_interval: float = 1.0
    exit_timeout: float = 2.0
    stream_usage: str = "auto"
    log_level: str | None = None
    disabled: bool = False

    @property
    def masked_api_key(self) -> str | None:
        """The API key as it may be shown to a person: its last four characters only."""
        if not self.api_key:
            return None
        return "****" + self.api_key[-4:] if len(self.api_key) > 8 else "****"

    def describe(self) -> dict[str, Any]:
        """The settings as a plain dict, secret masked (for `doctor` and `--info`)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["api_key"] = self.masked_api_key
        return out


# name of the patch() keyword -> environment variable
ENV_VARS = {
    "api_key": "CMDRDATA_API_KEY",
    "endpoint": "CMDRDATA_ENDPOINT",
    "exporter": "CMDRDATA_EXPORTER",
    "customer_id": "CMDRDATA_CUSTOMER_ID",
    "jsonl_path": "CMDRDATA_JSONL_PATH",
    "spool_dir": "CMDRDATA_SPOOL_DIR",
    "queue_size": "CMDRDATA_QUEUE_SIZE",
    "flush_interval": "CMDRDATA_FLUSH_INTERVAL",
    "exit_timeout": "CMDRDATA_EXIT_TIMEOUT",
    "stream_usage": "CMDRDATA_STREAM_USAGE",
    "log_level": "CMDRDATA_LOG_LEVEL",
    "disabled": "CMDRDATA_DISABLED",
}


def _source(key: str, from_kwarg: bool) -> str:
    return f"patch({key}=...)" if from_kwarg else ENV_VARS[key]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_endpoint(value: str, source: str = "CMDRDATA_ENDPOINT") -> str:
    """Accept an https URL, or plain http to a loopback host only (a key never crosses a network in clear)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source}={value!r} is not a URL; expected https://host/path")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"{source}={value!r} uses plain http to a non-loopback host; use https:// "
            "(plain http is allowed only for localhost / 127.0.0.1 / ::1)"
        )
    return value


def _positive_number(key: str, raw: Any, from_kwarg: bool, kind: type, allow_zero: bool = False) -> Any:
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{_source(key, from_kwarg)}={raw!r} is not a number; expected a positive {kind.__name__}"
        ) from None
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        limit = "zero or more" if allow_zero else "greater than zero"
        raise ConfigError(f"{_source(key, from_kwarg)}={raw!r} is out of range; expected {limit}")
    return value


def _choice(key: str, raw: Any, from_kwarg: bool, allowed: tuple[str, ...], upper: bool = False) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{_source(key, from_kwarg)}={raw!r} must be one of {', '.join(allowed)}")
    value = raw.strip().upper() if upper else raw.strip().lower()
    if value not in allowed:
        raise ConfigError(f"{_source(key, from_kwarg)}={raw!r} must be one of {', '.join(allowed)}")
    return value


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Resolve settings from keyword overrides (None means "not given"), then the environment, then defaults.

    Raises `ConfigError` (a `ValueError`) naming the setting, the bad value and what is allowed.
    """
    from .context import validate_customer_id  # the same rule for the env default as for a call

    env = os.environ if environ is None else environ
    unknown = set(overrides) - set(ENV_VARS)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(sorted(unknown))}; known settings are {', '.join(ENV_VARS)}"
        )

    def pick(key: str) -> tuple[Any, bool]:
        if overrides.get(key) is not None:
            return overrides[key], True
        raw = env.get(ENV_VARS[key])
        if raw is None or raw.strip() == "":
            return None, False
        return raw.strip(), False

    values: dict[str, Any] = {}
    api_key, _ = pick("api_key")
    if api_key is not None and not isinstance(api_key, str):
        raise ConfigError("patch(api_key=...) must be a string (the CmdrData API key)")
    values["api_key"] = api_key or None

    endpoint, kw = pick("endpoint")
    if endpoint is not None:
        values["endpoint"] = validate_endpoint(str(endpoint), _source("endpoint", kw))

    exporter, kw = pick("exporter")
    if exporter is None:
        values["exporter"] = "http" if values["api_key"] else "jsonl"
    else:
        values["exporter"] = _choice("exporter", exporter, kw, EXPORTER_NAMES)
        if values["exporter"] == "http" and not values["api_key"]:
            raise ConfigError(
                f"{_source('exporter', kw)}='http' needs a CmdrData API key: set CMDRDATA_API_KEY "
                "or pass patch(api_key=...), or choose exporter 'jsonl' for local, offline tracking"
            )

    customer_id, kw = pick("customer_id")
    if customer_id is not None:
        try:
            values["customer_id"] = validate_customer_id(customer_id)
        except ValueError as exc:
            raise ConfigError(f"{_source('customer_id', kw)}: {exc}") from None

    for key in ("jsonl_path", "spool_dir"):
        raw, kw = pick(key)
        if raw is not None:
            if not isinstance(raw, (str, os.PathLike)):
                raise ConfigError(f"{_source(key, kw)}={raw!r} must be a file system path")
            values[key] = os.fspath(raw)

    raw, kw = pick("queue_size")
    if raw is not None:
        values["queue_size"] = _positive_number("queue_size", raw, kw, int)
    for key in ("flush_interval",):
        raw, kw = pick(key)
        if raw is not None:
            values[key] = _positive_number(key, raw, kw, float)
    raw, kw = pick("exit_timeout")
    if raw is not None:
        values["exit_timeout"] = _positive_number("exit_timeout", raw, kw, float, allow_zero=True)

    raw, kw = pick("stream_usage")
    if raw is not None:
        values["stream_usage"] = _choice("stream_usage", raw, kw, STREAM_USAGE_POLICIES)
    raw, kw = pick("log_level")
    if raw is not None:
        values["log_level"] = _choice("log_level", raw, kw, LOG_LEVELS, upper=True)

    raw, kw = pick("disabled")
    if raw is not None:
        if isinstance(raw, bool):
            values["disabled"] = raw
        elif str(raw).lower() in _TRUE or str(raw).lower() in _FALSE:
            values["disabled"] = str(raw).lower() in _TRUE
        else:
            raise ConfigError(f"{_source('disabled', kw)}={raw!r} must be 1/0, true/false, yes/no")
    return Settings(**values)
