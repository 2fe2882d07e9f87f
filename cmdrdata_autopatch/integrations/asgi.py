"""ASGI middleware (FastAPI, Starlette, Quart, Django under ASGI, any ASGI app): one customer per request.

The customer block wraps the whole ASGI call, not just the endpoint: in ASGI the response body is sent
inside the application's `__call__`, so calls made while a `StreamingResponse` generator runs, or in a
background task after the response, are still attributed. Each request runs in its own asyncio task, and
the customer lives in a context variable, so concurrent requests never see each other's customer.
"""

from __future__ import annotations

from collections.abc import Awaitable, MutableMapping
from typing import Any, Callable

from ._resolve import DEFAULT_HEADER, CustomerSource, MetadataSource, Resolver

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _starlette_connection_class() -> Any:
    """Starlette's `HTTPConnection` when Starlette (and so FastAPI) is installed: callables then get a real
    request object; else None and they get the raw ASGI scope."""
    try:
        from starlette.requests import HTTPConnection
    except ImportError:  # pragma: no cover - exercised only without Starlette
        return None
    return HTTPConnection


_HTTPConnection: Any = _starlette_connection_class()


def _header_reader(scope: Scope) -> Callable[[str], str | None]:
    def read(name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in scope.get("headers") or ():
            if key.lower() == wanted:
                return bytes(value).decode("latin-1")
        return None

    return read


class CmdrDataASGIMiddleware:
    """Bill every OpenAI call made while serving a request to that request's customer.

    ``app.add_middleware(CmdrDataASGIMiddleware)`` (FastAPI / Starlette), or
    ``app = CmdrDataASGIMiddleware(app)`` around any ASGI app.
    The customer is, first found wins: `get_customer(request)`, then (with ``from_user=True``) the
    authenticated user (`scope["user"]`, set by Starlette's `AuthenticationMiddleware`, which must then run
    before this one), then the `header` (``None`` disables it). `request` is a Starlette `HTTPConnection`
    (headers, url, cookies, `state`, `user`) when Starlette is installed, else the ASGI scope. A request
    with no customer, or with an unusable one, is unattributed, never an error. `get_metadata(request)` may
    return a dict added to every event of the request (e.g. the plan or the route).
    """

    def __init__(
        self,
        app: ASGIApp,
        header: str | None = DEFAULT_HEADER,
        get_customer: CustomerSource | None = None,
        from_user: bool = False,
        get_metadata: MetadataSource | None = None,
    ) -> None:
        self.app = app
        self._resolver = Resolver(header, get_customer, from_user, get_metadata)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan and others: no request, no customer
            return
        request: Any = _HTTPConnection(scope) if _HTTPConnection is not None else scope
        block = self._resolver.block(request, _header_reader(scope), lambda: scope.get("user"))
        with block:
            await self.app(scope, receive, send)
