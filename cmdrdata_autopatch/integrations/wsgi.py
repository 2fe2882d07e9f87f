"""WSGI middleware (Flask, Django, Falcon, Bottle, any WSGI app): one customer per request.

A WSGI response body is produced after the application returns, when the server iterates it (Flask's
`stream_with_context`, Django's `StreamingHttpResponse`). So each request runs in its own copy of the
context (`contextvars.copy_context()`), and every step of the body's iteration and its `close()` run in
that same copy: calls made while streaming keep the request's customer, and nothing set during a request
(even by the legacy `set_customer_context`) leaks into the next request served by the same thread.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator
from typing import Any, Callable

from ._resolve import DEFAULT_HEADER, CustomerSource, MetadataSource, Resolver

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

CONTEXT_KEY = "cmdrdata_autopatch.context"  # the request's context copy, for integrations further in


def environ_header(environ: Environ) -> Callable[[str], str | None]:
    """A reader of request headers from a WSGI environ (`X-Customer-Id` is `HTTP_X_CUSTOMER_ID`)."""

    def read(name: str) -> str | None:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        value = environ.get(key)
        return value if isinstance(value, str) else None

    return read


class _ContextBody:
    """The application's response iterable, each step run in the request's context copy.

    Implements only what PEP 3333 lets a server use (iteration and `close()`); a list or tuple body is
    never wrapped (it has nothing left to run), so servers still see its length.
    """

    def __init__(self, ctx: contextvars.Context, body: Iterable[bytes]) -> None:
        self._ctx = ctx
        self._body = body
        self._iter: Iterator[bytes] | None = None

    def __iter__(self) -> _ContextBody:
        return self

    def __next__(self) -> bytes:
        if self._iter is None:
            self._iter = self._ctx.run(iter, self._body)
        return self._ctx.run(next, self._iter)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if callable(close):
            self._ctx.run(close)


def run_in_request_context(
    ctx: contextvars.Context, app: WSGIApp, environ: Environ, start_response: StartResponse
) -> Iterable[bytes]:
    """Call `app` in `ctx` and return its body so that iterating and closing it also run in `ctx`."""
    environ[CONTEXT_KEY] = ctx
    body = ctx.run(app, environ, start_response)
    file_wrapper = environ.get("wsgi.file_wrapper")
    if isinstance(body, (list, tuple)) or (isinstance(file_wrapper, type) and isinstance(body, file_wrapper)):
        return body  # nothing of the app's left to run (a file keeps the server's sendfile path)
    return _ContextBody(ctx, body)


class CmdrDataWSGIMiddleware:
    """Bill every OpenAI call made while serving a request (body streaming included) to its customer.

    ``app.wsgi_app = CmdrDataWSGIMiddleware(app.wsgi_app)`` (Flask) or around any WSGI callable. The
    customer is, first found wins: `get_customer(environ)`, then the `header` (``None`` disables it). For
    the logged-in user use the framework's own integration (`integrations.flask.init_app`,
    `integrations.django.CmdrDataMiddleware`): a WSGI middleware runs before the framework loads the user.
    A request with no customer, or with an unusable one, is unattributed, never an error.
    `get_metadata(environ)` may return a dict added to every event of the request.
    """

    def __init__(
        self,
        app: WSGIApp,
        header: str | None = DEFAULT_HEADER,
        get_customer: CustomerSource | None = None,
        get_metadata: MetadataSource | None = None,
    ) -> None:
        self.app = app
        self._resolver = Resolver(header, get_customer, False, get_metadata)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        block = self._resolver.block(environ, environ_header(environ), lambda: None)
        ctx = contextvars.copy_context()
        ctx.run(block.__enter__)  # left to die with `ctx` when the request is over
        return run_in_request_context(ctx, self.app, environ, start_response)
