"""Our own failures: caught, counted, logged once.

Instrumentation must never break the application it observes. Every place where our code could fail on
the user's call path catches the exception and hands it here: the failure is counted per site (so
`stats()` and tests can see it) and logged once per site at warning level, then at debug level, so a
recurring fault neither floods the logs nor goes unseen.
"""

from __future__ import annotations

import logging
import re
import threading

logger = logging.getLogger("cmdrdata_autopatch")

_lock = threading.Lock()
_counts: dict[str, int] = {}

# OpenAI keys (sk-..., sk-proj-...), CmdrData keys (tk-..., cd-...) and bearer tokens never leave our code
# in a message, whatever path they arrive by (an exception text, a URL, a header echoed in an error).
_SECRET_RE = re.compile(
    r"(?:\b(?:sk|tk|cd|rk)-[A-Za-z0-9_\-*]{6,})|(?:(?i:bearer)\s+[A-Za-z0-9._\-~+/=]{6,})"
)


def redact(text: str) -> str:
    """Return `text` with anything that looks like an API key or bearer token masked."""
    return _SECRET_RE.sub("[REDACTED]", text)


def report_internal_error(site: str, exc: BaseException) -> None:
    """Count an internal failure at `site`; log it at warning level the first time, at debug after."""
    with _lock:
        seen = _counts.get(site, 0)
        _counts[site] = seen + 1
    try:
        message = redact(f"{type(exc).__name__}: {exc}")
    except Exception:  # an exception whose __str__ fails
        message = type(exc).__name__
    if seen == 0:
        logger.warning(
            "cmdrdata-autopatch: internal error in %s (%s); the OpenAI call is unaffected. "
            "Further errors here are logged at debug level.",
            site,
            message,
        )
    else:
        logger.debug("cmdrdata-autopatch: internal error in %s (%s)", site, message)


def internal_errors() -> dict[str, int]:
    """A snapshot of internal failure counts by site."""
    with _lock:
        return dict(_counts)


def reset_internal_errors() -> None:
    """Forget all counts (tests)."""
    with _lock:
        _counts.clear()
