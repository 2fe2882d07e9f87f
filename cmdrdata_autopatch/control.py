"""The owner of the process-wide switch: `patch()`, `unpatch()`, `is_patched()`, `flush()`, `shutdown()`,
`stats()`.

The only module that knows configuration, delivery and patching together: it resolves the settings,
builds the recorder (through the one exporter factory), writes them into the runtime object the wrappers
read (`runtime.RUNTIME`), and asks `patching.py` (the mechanism) to wrap or unwrap the classes.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from . import object_billing, patching
from .config import NOTED, Settings, load_settings
from .context import validate_customer_id
from .diagnostics import internal_errors
from .exporter import Recorder
from .recorder import call_optional
from .runtime import RUNTIME

logger = logging.getLogger("cmdrdata_autopatch")

_lock = threading.RLock()


class _Switch:
    """What `patch()` decided, for `current_settings()` and the start-up routes."""

    settings: Settings | None = None
    # set by the start-up routes (.pth, cmdrdata-run): every Python process they reach calls patch(),
    # including tools in environments without openai, which must not be warned at
    at_startup = False


switch = _Switch()


def build_recorder(settings: Settings, http_timeout: float | None = None) -> Any:
    """The recorder for `settings` (`http_timeout`: a drop-in `UsageTracker(timeout=...)` overrides the
    HTTP transport's timeouts). `exporter.build_exporter` is the one factory; this only loads it lazily."""
    from . import exporter

    return exporter.build_exporter(settings, http_timeout=http_timeout)


def _recorder_for(exporter: Any, settings: Settings) -> Any:
    if exporter is not None and not isinstance(exporter, str):
        if not isinstance(exporter, Recorder):
            raise TypeError(
                f"patch(exporter={exporter!r}): expected an exporter name "
                "('http', 'jsonl', 'console', 'otlp', 'memory', 'none', or a comma list such as 'http,otlp') "
                "or an object with a record(event) method"
            )
        return exporter
    return build_recorder(settings)


def _warn_without_openai() -> None:
    if "openai" in sys.modules or switch.at_startup:
        return
    import importlib.util

    if importlib.util.find_spec("openai") is None:
        logger.warning(
            "cmdrdata-autopatch: the openai package is not installed, so there is nothing to track "
            "yet. Fix: pip install -U 'openai>=1.0.0'"
        )


def warn_notes(notes: Any) -> None:
    """Log each settings note once per process (patch() may run twice: the .pth and the launcher)."""
    for note in notes:
        if note not in NOTED:
            NOTED.add(note)
            logger.warning("cmdrdata-autopatch: warning: %s", note)


def patch(exporter: Any = None, **settings: Any) -> None:
    """Track every OpenAI call in this process. Safe to call before or after `import openai`, and twice.

    `exporter` is a name (`http`, `jsonl`, `console`, `otlp`, `memory`, `none`), a comma list of names
    (`http,otlp`: every event to each), or any object with `record(event)`.
    Other keywords (`api_key`, `endpoint`, `customer_id`, `jsonl_path`, `spool_dir`, `queue_size`,
    `flush_interval`, `exit_timeout`, `stream_usage`, `stream_usage_hosts`, `log_level`, `service`,
    `environment`, ...) override the `CMDRDATA_*` environment. A bad keyword, or a bad environment value of
    a setting that decides what is billed or where it goes, raises `ValueError` here naming the setting and
    what is allowed; any other bad environment value is logged once and its default is used.
    """
    if isinstance(exporter, str):
        settings["exporter"] = exporter
    resolved = load_settings(**settings)
    warn_notes(resolved.notes)
    if resolved.disabled:
        logger.info("cmdrdata-autopatch: CMDRDATA_DISABLED is set; not patching")
        return
    if resolved.log_level:
        logger.setLevel(resolved.log_level)
    _warn_without_openai()
    with _lock:
        if RUNTIME.recorder is not None and exporter is None and not settings:
            return  # already patched with the same (default) configuration
        recorder = _recorder_for(exporter, resolved)
        default = None if resolved.customer_id is None else validate_customer_id(resolved.customer_id)
        previous = RUNTIME.recorder
        RUNTIME.recorder = recorder
        RUNTIME.stream_usage = resolved.stream_usage
        RUNTIME.set_deployment(resolved.service, resolved.environment)
        RUNTIME.object_metadata = resolved.object_metadata == "customer"
        RUNTIME.set_stream_usage_hosts(resolved.stream_usage_hosts)
        RUNTIME.default_customer = default
        switch.settings = resolved
        patching.install()
    if previous is not None and previous is not recorder:
        call_optional(previous, "flush", resolved.exit_timeout)


def adopt_deployment(settings: Settings) -> None:
    """The `service` / `environment` labels for a drop-in client's events when `patch()` set none (the
    drop-in clients read the same `CMDRDATA_*` environment, so the labels are the process's own)."""
    with _lock:
        if RUNTIME.deployment is None:
            RUNTIME.set_deployment(settings.service, settings.environment)


def unpatch() -> None:
    """Restore every wrapped method to the exact original object. Recorded events are still delivered.

    While a drop-in `TrackedOpenAI` client is alive its calls still need the wrappers: then only
    process-wide tracking stops (other clients' calls pass straight through, unrecorded).
    """
    with _lock:
        RUNTIME.recorder = None
        RUNTIME.default_customer = None
        RUNTIME.set_deployment(None, None)
        RUNTIME.object_metadata = False
        patching.uninstall()


is_patched = patching.is_patched


def get_exporter() -> Any:
    """The exporter events go to (e.g. the `MemoryExporter` after `patch(exporter="memory")`)."""
    return RUNTIME.recorder


def current_settings() -> Settings | None:
    """The settings `patch()` resolved, or None before it."""
    return switch.settings


def flush(timeout: float = 5.0) -> Any:
    """Deliver what has been recorded so far, waiting at most `timeout` seconds."""
    return call_optional(RUNTIME.recorder, "flush", timeout)


def shutdown(timeout: float = 2.0) -> Any:
    """Flush, then stop the exporter (serverless handlers call this at the end of an invocation)."""
    return call_optional(RUNTIME.recorder, "shutdown", timeout)


def stats() -> dict[str, Any]:
    """Delivery counters of the active exporter, plus our own internal error counts."""
    counters = call_optional(RUNTIME.recorder, "stats")
    out: dict[str, Any] = dict(counters) if counters else {}
    out["internal_errors"] = internal_errors()
    out["objects"] = object_billing.stats()  # background responses pending, objects billed (issue 12)
    return out
