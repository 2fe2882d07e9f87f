"""Celery: a task runs for the customer that queued it.

A worker runs tasks far from the request that queued them, in another process or thread, so the customer
cannot follow through a context variable. `install()` connects three Celery signals: when a task is
published inside a customer block, the customer and its metadata ride along as message headers; when a
worker starts the task, they become the task's customer block, closed again when the task ends. Headers
can also be given explicitly (``task.apply_async(args, headers=customer_headers("acme"))``), which also
works in eager mode (`task_always_eager`, where nothing is published).
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable

from ..context import current, customer
from ..diagnostics import report_internal_error
from ._resolve import checked_customer_id

CUSTOMER_HEADER = "cmdrdata_customer"
METADATA_HEADER = "cmdrdata_metadata"

_open: dict[tuple[int, str], customer] = {}  # (thread, task id) -> the block a task runs in
_open_lock = threading.Lock()
_installed: list[bool] = [False]


def _safe(handler: Callable[..., None]) -> Callable[..., None]:
    """A signal handler that never fails the task it observes (failures are counted and logged once)."""

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            handler(*args, **kwargs)
        except Exception as exc:
            report_internal_error(f"integrations.celery.{handler.__name__}", exc)

    return run


def customer_headers(customer_id: str | None = None, **metadata: Any) -> dict[str, Any]:
    """Message headers naming a customer: the given one, else the one in force here (may be empty)."""
    ctx = current()
    who = customer_id if customer_id is not None else ctx.customer_id
    meta = {**(ctx.metadata or {}), **metadata} if customer_id is None else metadata
    headers: dict[str, Any] = {}
    if who is not None:
        headers[CUSTOMER_HEADER] = who
    if meta:
        headers[METADATA_HEADER] = meta
    return headers


@_safe
def _on_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """`before_task_publish`: add the current customer to the message, unless the caller named one."""
    if headers is None or CUSTOMER_HEADER in headers:
        return
    headers.update(customer_headers())


def _from_request(request: Any, key: str) -> Any:
    value = getattr(request, key, None)  # a worker merges custom headers into the request
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(key)  # eager mode keeps them apart
    return value


@_safe
def _on_prerun(task_id: str = "", task: Any = None, **_: Any) -> None:
    """`task_prerun`: enter the customer block the task's headers name (none: leave attribution alone)."""
    request = getattr(task, "request", None)
    customer_id = checked_customer_id(
        _from_request(request, CUSTOMER_HEADER), f"task header {CUSTOMER_HEADER}"
    )
    raw_metadata = _from_request(request, METADATA_HEADER)
    metadata = raw_metadata if isinstance(raw_metadata, dict) else {}
    if customer_id is None and not metadata:
        return
    try:
        block = customer(customer_id, **{str(k): v for k, v in metadata.items() if k != "customer_id"})
    except ValueError:  # metadata that is not JSON: the customer alone
        block = customer(customer_id)
    block.__enter__()
    with _open_lock:
        _open[(threading.get_ident(), task_id)] = block


@_safe
def _on_postrun(task_id: str = "", **_: Any) -> None:
    """`task_postrun`: close the block `_on_prerun` opened for this task in this thread."""
    with _open_lock:
        block = _open.pop((threading.get_ident(), task_id), None)
    if block is not None:
        block.__exit__(None, None, None)


def install(app: Any = None) -> None:
    """Connect the signal handlers (once per process; `app` is accepted for symmetry and ignored).

    Call it where both the publishing side (your web app) and the workers import it, e.g. next to
    ``app = Celery(...)``.
    """
    del app  # Celery's signals are process-wide
    from celery import signals

    if _installed[0]:
        return
    signals.before_task_publish.connect(_on_publish, weak=False)
    signals.task_prerun.connect(_on_prerun, weak=False)
    signals.task_postrun.connect(_on_postrun, weak=False)
    _installed[0] = True
