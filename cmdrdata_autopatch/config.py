"""Settings: `patch()` keyword arguments first, then `CMDRDATA_*` environment variables, then defaults.

Everything is validated here, at `patch()` time, so a bad value is reported once, early, with the name of
the setting, the value and what is allowed, instead of failing later inside the background thread.

The policy for a bad environment value (README "Settings policy"): only a setting that decides *what is
billed or where it goes* may switch tracking off (`BILLING_SETTINGS`: the key, the endpoint, the exporter,
the default customer, the local file, the spool directory, the kill switch), because guessing there would
bill the wrong customer or send usage where nobody reads it. Any other setting (log level, queue size,
timeouts, stream usage, service labels...) only tunes how we work: a bad value there is a note ("warns once
and uses the default") and the process stays tracked. A bad `patch()` keyword still raises: it is code, and
the developer who wrote it is the one reading the traceback. Unknown `CMDRDATA_*` names and yes/no values
that are neither are notes too, with the closest valid spelling (difflib).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Callable, NamedTuple
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://api.cmdrdata.ai/api/events"
DEFAULT_JSONL_PATH = "cmdrdata-usage.jsonl"
EXPORTER_NAMES = ("http", "jsonl", "console", "memory", "none", "otlp")
STREAM_USAGE_POLICIES = ("auto", "always", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FSYNC_POLICIES = ("interval", "always", "off")
# CMDRDATA_OBJECT_METADATA: `customer` writes the paying customer into the metadata of objects that finish
# later (batches, fine-tuning jobs), so another process that retrieves them bills the right customer
OBJECT_METADATA_POLICIES = ("off", "customer")
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
    service: str | None = None
    environment: str | None = None
    stream_usage_hosts: tuple[str, ...] = ()
    object_metadata: str = "off"
    # CMDRDATA_OTLP_METRICS: also export the gen_ai.client.token.usage histogram (customer ids as an
    # attribute: high cardinality, hence opt-in)
    otlp_metrics: bool = False
    # what was wrong but did not switch tracking off: one line each, shown once by patch() and by doctor
    notes: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def exporters(self) -> tuple[str, ...]:
        """The exporter names (`CMDRDATA_EXPORTER` may list several: `http,otlp`)."""
        return tuple(self.exporter.split(","))

    @property
    def masked_api_key(self) -> str | None:
        """The API key as it may be shown to a person: its last four characters only."""
        if not self.api_key:
            return None
        return "****" + self.api_key[-4:] if len(self.api_key) > 8 else "****"

    def describe(self) -> dict[str, Any]:
        """The settings as a plain dict, secret masked (for `doctor` and `--info`)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "notes"}
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


def closest(value: str, allowed: Any) -> str | None:
    """The allowed spelling nearest to `value` (difflib), or None when nothing is near."""
    found = difflib.get_close_matches(value, list(allowed), n=1, cutoff=0.6)
    return found[0] if found else None


def _hint(value: Any, allowed: Any) -> str:
    near = closest(value.strip(), allowed) if isinstance(value, str) else None
    return f" (did you mean {near!r}?)" if near else ""


def _choice(allowed: tuple[str, ...], upper: bool = False) -> Parser:
    def parse(source: str, raw: Any) -> str:
        value = (raw.strip().upper() if upper else raw.strip().lower()) if isinstance(raw, str) else None
        if value not in allowed:
            hint = _hint(value, allowed) if value is not None else ""
            raise ConfigError(f"{source}={_cut(raw)!r} must be one of {', '.join(allowed)}{hint}")
        return str(value)

    return parse


def _exporters(source: str, raw: Any) -> str:
    """One exporter name or a comma list (`http,otlp`: each event goes to both), normalized and deduplicated.

    `otlp` is checked here, at `patch()` time: without its extra the error names the fix."""
    if not isinstance(raw, str) or not raw.strip():
        allowed = ", ".join(EXPORTER_NAMES)
        raise ConfigError(f"{source}={_cut(raw)!r} must be one of {allowed} (or a comma list)")
    names: list[str] = []
    items = raw.split(",")
    for item in items:
        name = item.strip().lower()
        if name not in EXPORTER_NAMES:
            what = "" if len(items) == 1 else f": {_cut(item.strip())!r} is not an exporter;"
            raise ConfigError(
                f"{source}={_cut(raw)!r}{what} must be one of {', '.join(EXPORTER_NAMES)} "
                f"(or a comma list, e.g. http,otlp){_hint(name, EXPORTER_NAMES)}"
            )
        if name not in names:
            names.append(name)
    if "otlp" in names:
        from .otlp_settings import missing

        why = missing()
        if why is not None:
            raise ConfigError(f"{source}={_cut(raw)!r}: {why}")
    return ",".join(names)


def _flag(source: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    hint = _hint(text, _TRUE + _FALSE[:-1])
    raise ConfigError(f"{source}={_cut(raw)!r} must be 1/0, true/false, yes/no, on/off{hint}")


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


MAX_LABEL = 128


def _label(source: str, raw: Any) -> str:
    """A deployment label (`service`, `environment`): short printable text, copied onto every event."""
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{source}={_cut(raw)!r} must be a non-empty string")
    text = raw.strip()
    if len(text) > MAX_LABEL or not text.isprintable():
        raise ConfigError(f"{source}={_cut(raw)!r} must be printable text of at most {MAX_LABEL} characters")
    return text


def _hosts(source: str, raw: Any) -> tuple[str, ...]:
    """Host names, comma separated (or a list in `patch()`); `*.example.com` matches any subdomain."""
    items = raw.split(",") if isinstance(raw, str) else raw
    try:
        hosts = tuple(str(item).strip().lower() for item in items if str(item).strip())
    except TypeError:
        raise ConfigError(f"{source}={_cut(raw)!r} must be host names separated by commas") from None
    for host in hosts:
        if not host or "/" in host or " " in host or ":" in host.replace("*.", ""):
            raise ConfigError(f"{source}: {_cut(host)!r} is not a host name (write api.example.com, no URL)")
    return hosts


def _resource_attribute(environ: Mapping[str, str], name: str) -> str | None:
    """One `key=value` of OTEL_RESOURCE_ATTRIBUTES (comma separated, values percent-encoded)."""
    from urllib.parse import unquote

    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() == name and value.strip():
            return unquote(value.strip())
    return None


def _service_fallback(environ: Mapping[str, str]) -> tuple[str, str] | None:
    # the conventions a deployment already sets for its tracer: OpenTelemetry first, then Datadog
    for name in ("OTEL_SERVICE_NAME", "DD_SERVICE"):
        if environ.get(name, "").strip():
            return environ[name], name
    value = _resource_attribute(environ, "service.name")
    return (value, "OTEL_RESOURCE_ATTRIBUTES service.name") if value else None


def _environment_fallback(environ: Mapping[str, str]) -> tuple[str, str] | None:
    value = _resource_attribute(environ, "deployment.environment.name") or _resource_attribute(
        environ, "deployment.environment"
    )
    if value:
        return value, "OTEL_RESOURCE_ATTRIBUTES deployment.environment"
    if environ.get("DD_ENV", "").strip():
        return environ["DD_ENV"], "DD_ENV"
    return None


Fallback = Callable[[Mapping[str, str]], "tuple[str, str] | None"]


class Setting(NamedTuple):
    """One row of the table. `billing`: decides what is billed or where it goes, so a bad value switches
    tracking off; any other bad environment value is a note and the default is used. `fallback`: where
    the value comes from when the `CMDRDATA_*` variable is not set (another tool's convention)."""

    key: str
    env: str
    parse: Parser
    billing: bool
    fallback: Fallback | None = None


# Adding a setting is adding a row (and a field on Settings). `exporter` is resolved after the loop (its
# default depends on whether a key is set), and so is the jsonl file (checked only when it is used).
SETTINGS_TABLE: tuple[Setting, ...] = (
    Setting("api_key", "CMDRDATA_API_KEY", _api_key, True),
    Setting("endpoint", "CMDRDATA_ENDPOINT", _endpoint, True),
    Setting("exporter", "CMDRDATA_EXPORTER", _exporters, True),
    Setting("customer_id", "CMDRDATA_CUSTOMER_ID", _customer, True),
    Setting("jsonl_path", "CMDRDATA_JSONL_PATH", _path, True),
    Setting("spool_dir", "CMDRDATA_SPOOL_DIR", _path, True),
    Setting("disabled", "CMDRDATA_DISABLED", _flag, True),
    Setting("queue_size", "CMDRDATA_QUEUE_SIZE", _number(int, 1), False),
    Setting("flush_interval", "CMDRDATA_FLUSH_INTERVAL", _number(float, 0, 3600), False),
    Setting("exit_timeout", "CMDRDATA_EXIT_TIMEOUT", _number(float, 0, 3600, allow_zero=True), False),
    Setting("max_in_flight", "CMDRDATA_MAX_IN_FLIGHT", _number(int, 1, MAX_IN_FLIGHT_LIMIT), False),
    Setting("write_ahead", "CMDRDATA_WRITE_AHEAD", _flag, False),
    Setting("spool_fsync", "CMDRDATA_SPOOL_FSYNC", _choice(FSYNC_POLICIES), False),
    Setting("stream_usage", "CMDRDATA_STREAM_USAGE", _choice(STREAM_USAGE_POLICIES), False),
    Setting("stream_usage_hosts", "CMDRDATA_STREAM_USAGE_HOSTS", _hosts, False),
    Setting("object_metadata", "CMDRDATA_OBJECT_METADATA", _choice(OBJECT_METADATA_POLICIES), False),
    Setting("otlp_metrics", "CMDRDATA_OTLP_METRICS", _flag, False),
    Setting("log_level", "CMDRDATA_LOG_LEVEL", _choice(LOG_LEVELS, upper=True), False),
    Setting("service", "CMDRDATA_SERVICE", _label, False, _service_fallback),
    Setting("environment", "CMDRDATA_ENVIRONMENT", _label, False, _environment_fallback),
)

# name of the patch() keyword -> environment variable
ENV_VARS = {row.key: row.env for row in SETTINGS_TABLE}
BILLING_SETTINGS = tuple(row.env for row in SETTINGS_TABLE if row.billing)
# read outside the table (start-up routes, the signal handlers): known names, and yes/no flags among them
OTHER_ENV_VARS = ("CMDRDATA_AUTOPATCH", "CMDRDATA_SIGNALS")
FLAG_ENV_VARS = ("CMDRDATA_AUTOPATCH", "CMDRDATA_DISABLED", "CMDRDATA_WRITE_AHEAD", "CMDRDATA_SIGNALS")
KNOWN_ENV_VARS = (*ENV_VARS.values(), *OTHER_ENV_VARS)
# the notes already shown in this process (by patch() or the start-up route): each is shown once
NOTED: set[str] = set()


def environment_notes(environ: Mapping[str, str]) -> list[str]:
    """Unknown `CMDRDATA_*` names and yes/no variables with neither value, each with the nearest spelling.

    Read by `patch()` (one warning each) and by `doctor`; a typo here would otherwise be silently ignored.
    """
    notes: list[str] = []
    for name in sorted(n for n in environ if n.startswith("CMDRDATA_")):
        if name not in KNOWN_ENV_VARS:
            prefix = len("CMDRDATA_")  # compared without it: every name shares it
            near = closest(name[prefix:], [known[prefix:] for known in KNOWN_ENV_VARS])
            hint = f"; did you mean CMDRDATA_{near}?" if near else ""
            notes.append(f"{name} is not a cmdrdata-autopatch setting and is ignored{hint}")
        elif name in OTHER_ENV_VARS and name in FLAG_ENV_VARS:
            try:
                _flag(name, environ[name])
            except ConfigError as exc:
                notes.append(f"{exc}; treated as off")
    return notes


def check_jsonl_path(path: str, source: str = "CMDRDATA_JSONL_PATH") -> str:
    """The local file must be a file in a directory that exists: we never create directories for it.

    Why not create them: a typo in the directory part (`/var/lgo/usage.jsonl`) would then quietly put the
    usage in a tree nobody looks at; refusing is the rule of a shell's `>` and of `logging.FileHandler`.
    """
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise ConfigError(f"{source}={_cut(path, 400)!r} is a directory; name a file in it (usage.jsonl)")
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        what = f"the directory {_cut(parent, 400)} does not exist"
        ancestor = parent
        while not os.path.lexists(ancestor) and os.path.dirname(ancestor) != ancestor:
            ancestor = os.path.dirname(ancestor)
        if os.path.lexists(ancestor) and not os.path.isdir(ancestor):  # "File exists" would hide this
            what = f"{_cut(ancestor, 400)} is a file, not a directory"
        raise ConfigError(
            f"{source}={_cut(path, 400)!r}: {what}; create the directory first "
            "(directories are never created for the usage file)"
        )
    return path


def _read(row: Setting, overrides: Mapping[str, Any], env: Mapping[str, str]) -> tuple[Any, str] | None:
    """The raw value of one setting and where it came from, or None when it is not set anywhere."""
    if overrides.get(row.key) is not None:
        return overrides[row.key], f"patch({row.key}=...)"
    text = env.get(row.env)
    if text is not None and text.strip() != "":
        return text.strip(), row.env
    return row.fallback(env) if row.fallback is not None else None


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Resolve settings from keyword overrides (None means "not given"), then the environment, then defaults.

    Raises `ConfigError` (a `ValueError`) naming the setting, the bad value and what is allowed, for a bad
    keyword or a bad billing setting; any other bad environment value becomes one of `Settings.notes`.
    """
    env = os.environ if environ is None else environ
    unknown = set(overrides) - set(ENV_VARS)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(sorted(unknown))}; known settings are {', '.join(ENV_VARS)}"
        )
    values: dict[str, Any] = {}
    notes = environment_notes(env)
    sources: dict[str, str] = {}
    for row in SETTINGS_TABLE:
        found = _read(row, overrides, env)
        if found is None:
            continue
        raw, source = found
        try:
            values[row.key] = row.parse(source, raw)
        except ConfigError as exc:
            if row.billing or source.startswith("patch("):
                raise
            notes.append(f"{exc}; using the default ({getattr(Settings, row.key, None)!r})")
            continue
        sources[row.key] = source
    if "exporter" not in values:
        values["exporter"] = "http" if values.get("api_key") else "jsonl"
    elif "http" in values["exporter"].split(",") and not values.get("api_key"):
        raise ConfigError(
            f"{sources['exporter']}={values['exporter']!r} needs a CmdrData API key: set CMDRDATA_API_KEY "
            "or pass patch(api_key=...), or choose exporter 'jsonl' for local, offline tracking"
        )
    if "jsonl" in values["exporter"].split(",") and "jsonl_path" in values:
        check_jsonl_path(values["jsonl_path"], sources["jsonl_path"])
    return Settings(**values, notes=tuple(notes))
