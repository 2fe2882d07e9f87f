"""Who a call is billed to: the customer context.

The customer lives in a `contextvars.ContextVar`, so it follows asyncio tasks (each task copies the context
it was created in) and stays separate between threads. Precedence for a call: the `customer_id=` keyword on
the call, then the innermost `customer(...)` block, then the default (`CMDRDATA_CUSTOMER_ID` or
`patch(customer_id=...)`). A call with none of these is still recorded, with `customer_id: null`.

Metadata is validated and snapshotted when it enters (a JSON round trip), so a caller mutating its dict
afterwards changes nothing that we send, and a value that cannot be serialized fails at the call site with a
clear `ValueError` instead of deep inside the background thread.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import math
from typing import Any, Callable, NamedTuple, TypeVar

from .runtime import RUNTIME

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

MAX_CUSTOMER_ID_LENGTH = 256


class CustomerContext(NamedTuple):
    """The customer and metadata active in the current context."""

    customer_id: str | None
    metadata: dict[str, Any] | None


_EMPTY = CustomerContext(None, None)
_current: contextvars.ContextVar[CustomerContext] = contextvars.ContextVar(
    "cmdrdata_customer", default=_EMPTY
)


def _shown(value: Any, limit: int = 40) -> str:
    """`repr(value)` as it may appear in an error message: long values are cut, with their length."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= 200 else f"{text[:200]}... ({len(text):,} characters)"


def validate_customer_id(value: Any) -> str:
    """Return `value` if it is a usable customer id; raise `ValueError` naming the value otherwise."""
    if not isinstance(value, str):
        raise ValueError(
            f"customer_id must be a string, got {type(value).__name__} {_shown(value)}; "
            f"pass str(your_id) if your ids are numbers"
        )
    if not value or len(value) > MAX_CUSTOMER_ID_LENGTH or not value.isprintable():
        raise ValueError(
            f"customer_id {_shown(value)} is not valid: it must be 1 to {MAX_CUSTOMER_ID_LENGTH} printable "
            "characters (no newlines or control characters)"
        )
    return value


def _non_finite_path(value: Any, path: str) -> str | None:
    """The key path of the first NaN/Infinity inside `value`, or None (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite_path(item, f"{path}[{key!r}]" if path else repr(key))
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _non_finite_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def snapshot_metadata(value: Any, what: str = "metadata") -> dict[str, Any]:
    """Validate that `value` is a JSON-serializable dict and return a deep, independent copy of it.

    NaN and Infinity are refused: they are not JSON, and a strict API would reject the whole event (and its
    billing) for them. The error names the key that holds one.
    """
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a dict, got {type(value).__name__} {_shown(value)}")
    try:
        copied: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    except ValueError as exc:
        where = _non_finite_path(value, "")
        if where is not None:
            raise ValueError(
                f"{what} key {where} holds a non-finite number (NaN or Infinity), which JSON cannot carry; "
                "use None or a string instead"
            ) from None
        raise ValueError(f"{what} {_shown(value)} is not JSON-serializable ({exc})") from None
    except TypeError as exc:
        raise ValueError(
            f"{what} {_shown(value)} is not JSON-serializable ({exc}); use strings, numbers, booleans, "
            "None, lists and dicts"
        ) from None
    return copied


# For the wrappers' hot path: the raw context (no default applied), one call instead of two lookups.
current_raw = _current.get


def current() -> CustomerContext:
    """The customer context in force here (the default customer of `patch()` when no block names one)."""
    ctx = _current.get()
    default = RUNTIME.default_customer
    if ctx.customer_id is None and default is not None:
        return CustomerContext(default, ctx.metadata)
    return ctx


class customer:
    """Attribute every OpenAI call inside the block (or decorated function) to `customer_id`.

    ``with cmdrdata.customer("acme", plan="pro"):`` and ``@cmdrdata.customer("acme")`` (on sync or async
    functions) both work; blocks nest, and metadata of an inner block is merged over the outer one.

    "No customer" is not an error, because a web app's natural line,
    ``with cmdrdata.customer(request.headers.get("x-customer-id")):``, must not turn every request without
    the header into an HTTP 500: `customer(None)`, `customer("")` and a whitespace-only id set no customer.
    Calls inside such a block are attributed exactly as with `customer_id=None` on the call: to an enclosing
    block's customer if there is one, else to the default customer, else `null`. Its metadata still applies.
    A value that is not a string at all (an int, a dict, bytes) or a malformed id (control characters, too
    long) is a bug in the caller, so it still raises `ValueError` at the line that builds the block.
    """

    def __init__(self, customer_id: str | None, **metadata: Any) -> None:
        if customer_id is None or (isinstance(customer_id, str) and not customer_id.strip()):
            self._customer_id: str | None = None
        else:
            self._customer_id = validate_customer_id(customer_id)
        self._metadata = snapshot_metadata(metadata) if metadata else None
        self._tokens: list[contextvars.Token[CustomerContext]] = []

    def _context(self) -> CustomerContext:
        outer = _current.get()
        if outer.metadata and self._metadata:
            merged: dict[str, Any] | None = {**outer.metadata, **self._metadata}
        else:
            merged = self._metadata or outer.metadata
        return CustomerContext(self._customer_id or outer.customer_id, merged)

    def __enter__(self) -> customer:
        self._tokens.append(_current.set(self._context()))
        return self

    def __exit__(self, *exc_info: object) -> None:
        _current.reset(self._tokens.pop())

    async def __aenter__(self) -> customer:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = _current.set(self._context())
                try:
                    return await func(*args, **kwargs)
                finally:
                    _current.reset(token)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _current.set(self._context())
            try:
                return func(*args, **kwargs)
            finally:
                _current.reset(token)

        return wrapper  # type: ignore[return-value]


def carry_context(func: Callable[..., T]) -> Callable[..., T]:
    """Bind `func` to a copy of the current context, for thread pools and executors.

    ``pool.submit(cmdrdata.carry_context(work), item)`` runs `work` with the customer that was active where
    it was submitted (a plain `ThreadPoolExecutor` would run it with no customer at all).
    """
    ctx = contextvars.copy_context()

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> T:
        return ctx.run(func, *args, **kwargs)

    return run


# --- the seed's legacy helpers, kept for drop-in compatibility ------------------------------------------


def set_customer_context(customer_id: str, **metadata: Any) -> None:
    """Set the customer for the rest of the current context (thread or task). Prefer `customer(...)`."""
    _current.set(
        CustomerContext(validate_customer_id(customer_id), snapshot_metadata(metadata) if metadata else None)
    )


def get_customer_context() -> str | None:
    """The customer id in force here, or None."""
    return current().customer_id


def clear_customer_context() -> None:
    """Forget the customer set by `set_customer_context` in the current context."""
    _current.set(_EMPTY)


def customer_context(customer_id: str, **metadata: Any) -> customer:
    """The seed's name for `customer(...)`: ``with customer_context("acme"):``."""
    return customer(customer_id, **metadata)
