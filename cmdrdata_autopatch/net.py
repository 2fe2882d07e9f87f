"""The safety net below the resource methods: every billable request the SDK client sends is billed.

The resource wrappers see calls made through `client.chat.completions.create(...)` and friends, with their
richer context (our keywords, the stream-usage policy). Some requests never pass through them:

* a library that calls the client's low-level methods itself: `client.post("/chat/completions",
  cast_to=ChatCompletion, body=..., stream=...)` (litellm sends chat completions and embeddings this way);
* a method taken from a client before `patch()`: a bound `create` saved earlier, or a
  `with_raw_response` / `with_streaming_response` accessor used once before (the SDK caches it with the
  method of that moment).

All of them end in the client's `request` method (`SyncAPIClient.request` / `AsyncAPIClient.request` in
`openai._base_client`, present with `options` as its second argument in every release from 1.0.0 to
3.57.0; resources call `client.post`, which calls `self.request` at call time). The net wraps that method
on the two base classes. For a `POST` whose path the table marks as billable (`Target.path`, matched as a
suffix so Azure's `/deployments/<name>/...` form matches too) it records one event, with the api and the
usage rules of that row, the model and the estimate's input from the request body, and the customer from
the context. It never changes the request: no keywords of ours to take off, no `stream_options` injected.

A request made inside a resource wrapper is already observed: the wrappers' nesting guard is set, and the
net passes the call straight through after one contextvar read. So no call is billed twice, and a call
the resource wrappers bill costs the net almost nothing (measured in `benchmarks/overhead.py`).
"""

from __future__ import annotations

from typing import Any

from .attribution import bill_to, context_now
from .diagnostics import report_internal_error
from .observe import Call, raw_mode
from .runtime import Runtime
from .targets import Target
from .wrappers import Wrapper, await_observed, inside_call, run_observed

# One-line why for the alias: the guard is read first on every request the SDK sends.
_inside_get = inside_call.get


def _options(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`request(cast_to, options, ...)`: the request options, passed by position or by name."""
    return args[1] if len(args) > 1 else kwargs.get("options")


def row_for(options: Any, paths: tuple[tuple[str, Target], ...]) -> Target | None:
    """The table row a request bills under, or None when it bills nothing (not a POST, or a path the
    table does not name: file uploads, retrieves, lists, moderations...)."""
    method = getattr(options, "method", None)
    if type(method) is not str or method.lower() != "post":
        return None
    url = getattr(options, "url", None)
    if type(url) is not str:
        return None
    path = url.split("?", 1)[0].rstrip("/")
    for suffix, row in paths:
        if path.endswith(suffix):
            return row
    return None


def _body(options: Any) -> dict[str, Any]:
    """The request body's fields (JSON or multipart form fields), with `extra_body` laid over them."""
    body = getattr(options, "json_data", None)
    body = body if isinstance(body, dict) else {}
    extra = getattr(options, "extra_json", None)
    if isinstance(extra, dict) and extra:
        body = {**body, **extra}
    return body


def _net_call(rt: Runtime, row: Target, client: Any, options: Any, recorder: Any) -> Call:
    customer_id, metadata = bill_to(None, None, context_now(), rt.default_customer)
    kinds = (row.usage_kind, row.stream_kind)
    call = Call(row.api, kinds, client, _body(options), customer_id, metadata, recorder, 0.0, 0.0)
    call.raw = raw_mode(getattr(options, "headers", None))
    return call


def make_net_wrappers(rt: Runtime, paths: tuple[tuple[str, Target], ...]) -> tuple[Wrapper, Wrapper]:
    """The (sync, async) wrapt wrappers for `SyncAPIClient.request` / `AsyncAPIClient.request`."""

    def prepare(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
        recorder = rt.recorder_for(client)
        if recorder is None:
            return None
        try:
            options = _options(args, kwargs)
            row = row_for(options, paths)
            return None if row is None else _net_call(rt, row, client, options, recorder)
        except Exception as exc:
            report_internal_error("safety net setup", exc)
            return None

    def net_sync(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _inside_get():
            return wrapped(*args, **kwargs)  # a resource wrapper observes this request already
        call = prepare(instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        return run_observed(rt, call, wrapped, args, kwargs)

    def net_async(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _inside_get():
            return wrapped(*args, **kwargs)
        call = prepare(instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        return await_observed(rt, call, wrapped(*args, **kwargs))

    return net_sync, net_async
