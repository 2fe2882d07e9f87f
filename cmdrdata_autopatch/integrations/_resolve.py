"""Working out who a web request is billed to, without ever failing the request.

Every framework integration funnels through `Resolver.block()`: it asks the configured sources in a fixed
order (the application's callable, then the authenticated user, then the header) and returns a ready
`customer(...)` block. A source that fails or yields an unusable value makes the request unattributed and is
reported once per kind of problem, because a middleware that raises would turn a billing detail into an
HTTP 500 for the user, and one that logs per request would flood the logs of a busy server.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..context import MAX_CUSTOMER_ID_LENGTH, customer, snapshot_metadata, validate_customer_id
from ..diagnostics import report_internal_error

logger = logging.getLogger("cmdrdata_autopatch.integrations")

DEFAULT_HEADER = "X-Customer-Id"

CustomerSource = Callable[[Any], Optional[Any]]
MetadataSource = Callable[[Any], Optional[dict[str, Any]]]

_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(key: str, message: str, *args: object) -> None:
    """Log `message` at warning level the first time `key` is seen in this process, at debug after."""
    with _warned_lock:
        first = key not in _warned
        _warned.add(key)
    logger.log(logging.WARNING if first else logging.DEBUG, message, *args)


def reset_warnings() -> None:
    """Forget which warnings were given (tests)."""
    with _warned_lock:
        _warned.clear()


def _why_invalid(value: str) -> str:
    """Why `value` is not a usable customer id, in words that never repeat the value itself."""
    if len(value) > MAX_CUSTOMER_ID_LENGTH:
        return f"it is {len(value)} characters long (at most {MAX_CUSTOMER_ID_LENGTH})"
    return "it contains control or non-printable characters"


def user_customer_id(user: Any) -> str | None:
    """The id of an authenticated user, or None for an anonymous one (or none at all).

    Understands Django (`is_authenticated`, `pk`), Flask-Login (`get_id()`) and Starlette
    (`identity`, e.g. `SimpleUser`), then falls back to `id` and `username`.
    """
    if user is None:
        return None
    authenticated = getattr(user, "is_authenticated", False)
    if callable(authenticated):  # Flask-Login before 0.3 and Django before 1.10 had a method
        authenticated = authenticated()
    if not authenticated:
        return None
    get_id = getattr(user, "get_id", None)
    candidates: list[Any] = [get_id() if callable(get_id) else None]
    for attr in ("pk", "identity", "id", "username"):
        try:
            candidates.append(getattr(user, attr, None))
        except NotImplementedError:  # Starlette's BaseUser leaves `identity` abstract
            continue
    for value in candidates:
        if value is not None and value != "":
            return str(value)
    return None


def checked_customer_id(value: Any, what: str) -> str | None:
    """`value` as a customer id, or None (with one warning per kind of problem) if it cannot be one."""
    if value is None:
        return None
    if not isinstance(value, str):
        warn_once(
            f"type:{what}",
            "cmdrdata-autopatch: %s is a %s, not a string; the request is unattributed. "
            "Return str(the_id) or None.",
            what,
            type(value).__name__,
        )
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return validate_customer_id(value)
    except ValueError:
        warn_once(
            f"invalid:{what}",
            "cmdrdata-autopatch: %s is not a usable customer id (%s); the request is unattributed.",
            what,
            _why_invalid(value),
        )
        return None


@dataclass(frozen=True)
class Resolver:
    """The configured sources of a request's customer and metadata (one per middleware instance)."""

    header: str | None = DEFAULT_HEADER
    get_customer: CustomerSource | None = None
    from_user: bool = False
    get_metadata: MetadataSource | None = None

    def __post_init__(self) -> None:
        if self.header is not None and (not isinstance(self.header, str) or not self.header.strip()):
            raise ValueError(
                f"header must be a header name such as {DEFAULT_HEADER!r} or None, got {self.header!r}"
            )
        for name in ("get_customer", "get_metadata"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be a callable taking the request, got {type(value).__name__}")

    def block(
        self,
        request: Any,
        header_value: Callable[[str], str | None],
        user: Callable[[], Any],
    ) -> customer:
        """A `customer(...)` block for this request; never raises (worst case: unattributed)."""
        customer_id = self._customer_id(request, header_value, user)
        metadata = self._metadata(request)
        try:
            return customer(customer_id, **metadata)
        except Exception as exc:  # validated above; only a bug of ours gets here
            report_internal_error("integrations.block", exc)
            return customer(None)

    def _customer_id(
        self, request: Any, header_value: Callable[[str], str | None], user: Callable[[], Any]
    ) -> str | None:
        if self.get_customer is not None:
            try:
                value = self.get_customer(request)
            except Exception as exc:
                warn_once(
                    "callable-raised",
                    "cmdrdata-autopatch: get_customer raised %s; the request is unattributed "
                    "(the application is unaffected).",
                    type(exc).__name__,
                )
                value = None
            found = self._checked(value, "get_customer's return value")
            if found is not None:
                return found
        if self.from_user:
            try:
                found = user_customer_id(user())
            except Exception as exc:
                warn_once(
                    "user-failed",
                    "cmdrdata-autopatch: reading the request's user failed (%s); trying the next source.",
                    type(exc).__name__,
                )
                found = None
            found = self._checked(found, "the user's id")
            if found is not None:
                return found
        if self.header is not None:
            try:
                raw = header_value(self.header)
            except Exception as exc:
                report_internal_error("integrations.header", exc)
                raw = None
            return self._checked(raw, f"header {self.header}")
        return None

    def _checked(self, value: Any, what: str) -> str | None:
        return checked_customer_id(value, what)

    def _metadata(self, request: Any) -> dict[str, Any]:
        if self.get_metadata is None:
            return {}
        try:
            value = self.get_metadata(request)
            if value is None:
                return {}
            snapshot = snapshot_metadata(value, "get_metadata's return value")
            return {str(k): v for k, v in snapshot.items() if k != "customer_id"}
        except Exception as exc:
            warn_once(
                "metadata",
                "cmdrdata-autopatch: get_metadata failed (%s); the request gets no metadata.",
                type(exc).__name__,
            )
            return {}
