"""Settings: `patch()` keyword arguments first, then `CMDRDATA_*` environment variables, then defaults.

Everything is validated here, at `patch()` time, so a bad value is reported once, early, with the name of
the setting, the value and what is allowed, instead of failing later inside the background thread.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Callable
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://api.cmdrdata.ai/api/events"
DEFAULT_JSONL_PATH = "cmdrdata-usage.jsonl"
EXPORTER_NAMES = ("http", "jsonl", "console", "memory", "none")
STREAM_USAGE_POLICIES = ("auto", "always", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FSYNC_POLICIES = ("interval", "always", "off")
MAX_IN_FLIGHT_LIMIT = 256
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
    flush_interval: float = 0.1
    exit_timeout: float = 2.0
    max_in_flight: int = 16
    write_ahead: bool = True
    spool_fsync: str = "interval"
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
        raise ConfigError(f"{source}={_cut(value)!r} is not a URL; expected https://host/path")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"{source}={_cut(value)!r} uses plain http to a non-loopback host; use https:// "
            "(plain http is allowed only for localhost / 127.0.0.1 / ::1)"
        )
    return value


def _cut(value: Any, limit: int = 60) -> Any:
    """A value as it may appear in a message: long strings are cut (a message must stay readable)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}... ({len(value)} characters)"
    return value


# Parsers: (source, raw value) -> value, raising ConfigError. `source` names the setting in messages.
Parser = Callable[[str, Any], Any]


def _number(kind: type, minimum: float, maximum: float = math.inf, allow_zero: bool = False) -> Parser:
    def parse(source: str, raw: Any) -> Any:
        if isinstance(raw, bool):
            raise ConfigError(f"{source}={raw!r} is not a number; expected a positive {kind.__name__}")
        try:
            value = kind(raw)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(
                f"{source}={_cut(raw)!r} is not a number; expected a positive {kind.__name__}"
            ) from None
        if not math.isfinite(value):
            raise ConfigError(
                f"{source}={_cut(raw)!r} is not a finite number; expected a positive {kind.__name__}"
            )
        if value < minimum or (value == 0 and not allow_zero) or value > maximum:
            limit = "zero or more" if allow_zero else "greater than zero"
            if maximum != math.inf:
                limit += f" and at most {maximum:g}"
            raise ConfigError(f"{source}={_cut(raw)!r} is out of range; expected {limit}")
        return value

    return parse


def _choice(allowed: tuple[str, ...], upper: bool = False) -> Parser:
    def parse(source: str, raw: Any) -> str:
        value = (raw.strip().upper() if upper else raw.strip().lower()) if isinstance(raw, str) else None
        if value not in allowed:
            raise ConfigError(f"{source}={_cut(raw)!r} must be one of {', '.join(allowed)}")
        return str(value)

    return parse


def _flag(source: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigError(f"{source}={_cut(raw)!r} must be 1/0, true/false, yes/no, on/off")


def _path(source: str, raw: Any) -> str:
    if not isinstance(raw, (str, os.PathLike)):
        raise ConfigError(f"{source}={_cut(raw)!r} must be a file system path")
    return os.fspath(raw)


def _api_key(source: str, raw: Any) -> str | None:
    if not isinstance(raw, str):
        raise ConfigError("patch(api_key=...) must be a string (the CmdrData API key)")
    return raw or None


def _endpoint(source: str, raw: Any) -> str:
    return validate_endpoint(str(raw), source)


def _customer(source: str, raw: Any) -> str:
    from .context import validate_customer_id  # the same rule for the env default as for a call

    try:
        return validate_customer_id(raw)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


# The table: patch() keyword, environment variable, parser. `exporter` is resolved after it (its default
# depends on whether a key is set). Adding a setting is adding a row (and a field on Settings).
SETTINGS_TABLE: tuple[tuple[str, str, Parser], ...] = (
    ("api_key", "CMDRDATA_API_KEY", _api_key),
    ("endpoint", "CMDRDATA_ENDPOINT", _endpoint),
    ("exporter", "CMDRDATA_EXPORTER", _choice(EXPORTER_NAMES)),
    ("customer_id", "CMDRDATA_CUSTOMER_ID", _customer),
    ("jsonl_path", "CMDRDATA_JSONL_PATH", _path),
    ("spool_dir", "CMDRDATA_SPOOL_DIR", _path),
    ("queue_size", "CMDRDATA_QUEUE_SIZE", _number(int, 1)),
    ("flush_interval", "CMDRDATA_FLUSH_INTERVAL", _number(float, 0, 3600)),
    ("exit_timeout", "CMDRDATA_EXIT_TIMEOUT", _number(float, 0, 3600, allow_zero=True)),
    ("max_in_flight", "CMDRDATA_MAX_IN_FLIGHT", _number(int, 1, MAX_IN_FLIGHT_LIMIT)),
    ("write_ahead", "CMDRDATA_WRITE_AHEAD", _flag),
    ("spool_fsync", "CMDRDATA_SPOOL_FSYNC", _choice(FSYNC_POLICIES)),
    ("stream_usage", "CMDRDATA_STREAM_USAGE", _choice(STREAM_USAGE_POLICIES)),
    ("log_level", "CMDRDATA_LOG_LEVEL", _choice(LOG_LEVELS, upper=True)),
    ("disabled", "CMDRDATA_DISABLED", _flag),
)

# name of the patch() keyword -> environment variable
ENV_VARS = {key: env for key, env, _ in SETTINGS_TABLE}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Resolve settings from keyword overrides (None means "not given"), then the environment, then defaults.

    Raises `ConfigError` (a `ValueError`) naming the setting, the bad value and what is allowed.
    """
    env = os.environ if environ is None else environ
    unknown = set(overrides) - set(ENV_VARS)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(sorted(unknown))}; known settings are {', '.join(ENV_VARS)}"
        )
    values: dict[str, Any] = {}
    exporter_source = ""
    for key, env_name, parse in SETTINGS_TABLE:
        if overrides.get(key) is not None:
            raw, source = overrides[key], f"patch({key}=...)"
        else:
            text = env.get(env_name)
            if text is None or text.strip() == "":
                continue
            raw, source = text.strip(), env_name
        values[key] = parse(source, raw)
        if key == "exporter":
            exporter_source = source
    if "exporter" not in values:
        values["exporter"] = "http" if values.get("api_key") else "jsonl"
    elif values["exporter"] == "http" and not values.get("api_key"):
        raise ConfigError(
            f"{exporter_source}='http' needs a CmdrData API key: set CMDRDATA_API_KEY "
            "or pass patch(api_key=...), or choose exporter 'jsonl' for local, offline tracking"
        )
    return Settings(**values)
