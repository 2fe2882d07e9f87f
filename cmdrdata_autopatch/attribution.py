"""Who a call is billed to: our own keywords, the `.stream()` hand-down token, and the precedence rule.

The rule, written once (`bill_to`): the `customer_id=` keyword on the call, then the innermost
`customer(...)` block, then the process default (`CMDRDATA_CUSTOMER_ID` / `patch(customer_id=...)`).
Metadata merges the same way: the block's metadata, overlaid by `cmdrdata_metadata=`.

Our keywords (`customer_id=`, `cmdrdata_metadata=`, `track_usage=`) are taken out of the call's keywords
before the request is built, so they never reach OpenAI. A bad value raises `ValueError` at the call site,
before anything is sent.
"""

from __future__ import annotations

import os
from typing import Any

from . import context
from .runtime import Runtime

# How a `.stream()` helper hands `customer_id=` down to the `create` it calls later (at the manager's
# `__enter__`, possibly in another context): an opaque token in `extra_headers`, which the `create` wrapper
# takes out again before the request is built. Only the token would ever travel, never the customer id.
ATTRIBUTION_HEADER = "X-Cmdrdata-Attribution"
_MAX_PENDING = 10_000
_pending: dict[str, tuple[Any, Any, bool]] = {}

# One-line whys for the aliases the hot path calls: a module attribute lookup per call saved each.
context_now = context.current_raw  # the raw (customer, metadata) of the innermost block


def bill_to(customer_id: Any, metadata: Any, ctx: Any, default: str | None) -> tuple[Any, Any]:
    """(customer, metadata) of a call: keyword > block > default; keyword metadata over the block's."""
    if customer_id is None:
        customer_id = ctx[0] or default
    block = ctx[1]
    if block:
        metadata = {**block, **metadata} if metadata else block
    return customer_id, metadata


def who_pays(rt: Runtime, instance: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, Any, Any] | None:
    """Take our keywords out of a call's `kwargs` (ValueError on a bad one: the caller's mistake), then
    (client, recorder, customer, metadata) of a call that is recorded; None for `track_usage=False` or a
    client no recorder serves. The one setup shared by the resource wrappers and the object rows."""
    customer_id, metadata, track = take_our_kwargs(kwargs)
    if not track:
        return None
    client = getattr(instance, "_client", None)
    recorder = rt.recorder_for(client)
    if recorder is None:
        return None
    customer_id, metadata = bill_to(customer_id, metadata, context_now(), rt.default_customer)
    return client, recorder, customer_id, metadata


def take_our_kwargs(kwargs: dict[str, Any]) -> tuple[Any, Any, bool]:
    """Pop and validate our keywords (and a handed-down token). Raises ValueError on a bad value."""
    customer_id = kwargs.pop("customer_id", None)
    metadata = kwargs.pop("cmdrdata_metadata", None)
    track = kwargs.pop("track_usage", True)
    headers = kwargs.get("extra_headers")
    if type(headers) is dict and ATTRIBUTION_HEADER in headers:
        headers = dict(headers)
        handed_down = _pending.pop(headers.pop(ATTRIBUTION_HEADER), None)
        kwargs["extra_headers"] = headers
        if handed_down is not None:
            customer_id = customer_id if customer_id is not None else handed_down[0]
            metadata = metadata if metadata is not None else handed_down[1]
            track = track and handed_down[2]
        return customer_id, metadata, track is not False  # validated by the helper's wrapper
    if customer_id is not None:
        context.validate_customer_id(customer_id)
    if metadata is not None:
        metadata = context.snapshot_metadata(metadata, "cmdrdata_metadata")
    return customer_id, metadata, track is not False


def hand_down(kwargs: dict[str, Any]) -> None:
    """For helpers that call `create` later: take our keywords off and leave a token in their place.
    `responses.stream(response_id=)` calls `retrieve(stream=True)` instead, an object row whose wrapper
    takes the token out the same way, so the customer survives that path too."""
    customer_id, metadata, track = take_our_kwargs(kwargs)
    if customer_id is None and metadata is None and track:
        return
    token = os.urandom(12).hex()
    if len(_pending) >= _MAX_PENDING:  # managers created and never entered
        try:
            _pending.pop(next(iter(_pending)), None)
        except (RuntimeError, StopIteration):  # another thread changed it meanwhile: fine either way
            pass
    _pending[token] = (customer_id, metadata, track)
    headers = kwargs.get("extra_headers")
    kwargs["extra_headers"] = {**(headers if isinstance(headers, dict) else {}), ATTRIBUTION_HEADER: token}
