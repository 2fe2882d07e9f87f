"""Django: a middleware class that bills each request's OpenAI calls to the request's customer.

Add ``"cmdrdata_autopatch.integrations.django.CmdrDataMiddleware"`` to `MIDDLEWARE`, after
`AuthenticationMiddleware` when the customer comes from `request.user`. Settings, all optional, in one dict:

    CMDRDATA_MIDDLEWARE = {
        "header": "X-Customer-Id",            # None: do not read a header
        "from_user": True,                    # the authenticated request.user's pk
        "get_customer": "billing.customer_for",   # a callable or its dotted path: request -> id or None
        "get_metadata": "billing.metadata_for",   # request -> dict or None
    }

or subclass and override `get_customer(request)` / `get_metadata(request)`. Works under WSGI and ASGI
(sync and async views). A `StreamingHttpResponse` body is produced after the middleware returns, so its
iterator is wrapped to run each step with the request's customer.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Callable

# Django >= 4.2 requires asgiref >= 3.6, which has both (they mark a middleware instance as async)
from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from ..context import current_raw, customer
from ..diagnostics import report_internal_error
from ._resolve import DEFAULT_HEADER, Resolver


def _setting(name: str, default: Any) -> Any:
    from django.conf import settings

    options = getattr(settings, "CMDRDATA_MIDDLEWARE", None) or {}
    value = options.get(name, default)
    if isinstance(value, str) and name.startswith("get_"):
        from django.utils.module_loading import import_string

        value = import_string(value)
    return value


def _sync_steps(ctx: contextvars.Context, content: Iterable[Any]) -> Iterator[Any]:
    iterator = ctx.run(iter, content)
    try:
        while True:
            try:
                yield ctx.run(next, iterator)
            except StopIteration:
                return
    finally:
        close = getattr(iterator, "close", None)
        if callable(close):
            ctx.run(close)


async def _async_steps(block: customer, content: AsyncIterator[Any]) -> AsyncIterator[Any]:
    iterator = content.__aiter__()
    while True:
        with block:  # set and reset around each step: the iterating task's context is not ours
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                return
        yield item


async def _async_user(request: Any) -> Any:
    """The request's user, loaded without blocking the event loop (None when it cannot be had)."""
    try:
        auser = getattr(request, "auser", None)  # Django >= 5.0's AuthenticationMiddleware sets it
        if callable(auser):
            return await auser()
        from asgiref.sync import sync_to_async

        def load() -> Any:
            user = getattr(request, "user", None)
            getattr(user, "is_authenticated", None)  # forces a lazy user while in a worker thread
            return user

        return await sync_to_async(load)()
    except Exception as exc:
        report_internal_error("integrations.django.user", exc)
        return None


class CmdrDataMiddleware:
    """Django middleware: the request's customer from `get_customer`, then `request.user`, then a header."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
        own_customer = type(self).get_customer is not CmdrDataMiddleware.get_customer
        own_metadata = type(self).get_metadata is not CmdrDataMiddleware.get_metadata
        self._resolver = Resolver(
            header=_setting("header", DEFAULT_HEADER),
            get_customer=self.get_customer if own_customer else _setting("get_customer", None),
            from_user=bool(_setting("from_user", False)),
            get_metadata=self.get_metadata if own_metadata else _setting("get_metadata", None),
        )

    def get_customer(self, request: Any) -> str | None:
        """Override to name the request's customer (None: try the user, then the header)."""
        return None

    def get_metadata(self, request: Any) -> dict[str, Any] | None:
        """Override to add metadata to every event of the request."""
        return None

    def _block(self, request: Any) -> customer:
        return self._resolver.block(request, request.headers.get, lambda: getattr(request, "user", None))

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        ctx = contextvars.copy_context()
        ctx.run(self._block(request).__enter__)  # dies with `ctx`
        response = ctx.run(self.get_response, request)
        if getattr(response, "streaming", False) and not getattr(response, "is_async", False):
            response.streaming_content = _sync_steps(ctx, response.streaming_content)
        return response

    async def __acall__(self, request: Any) -> Any:
        if self._resolver.from_user:
            # under ASGI, touching the lazy `request.user` may query the database from the event loop,
            # which Django forbids: load it the async way first
            user = await _async_user(request)
            block = self._resolver.block(request, request.headers.get, lambda: user)
        else:
            block = self._block(request)
        with block:
            response = await self.get_response(request)
            if getattr(response, "streaming", False):
                # the body runs later, in the server's task: give it what is in force now, including a
                # customer the view named itself (`set_customer_context`)
                if getattr(response, "is_async", False):
                    now = current_raw()
                    body_block = customer(now.customer_id, **(now.metadata or {}))
                    response.streaming_content = _async_steps(body_block, response.streaming_content)
                else:
                    response.streaming_content = _sync_steps(
                        contextvars.copy_context(), response.streaming_content
                    )
        return response
