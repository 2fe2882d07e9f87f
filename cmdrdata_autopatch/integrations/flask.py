"""Flask: one customer per request, from a header, a callable on `flask.request`, or Flask-Login's user.

Flask loads the request (and Flask-Login the user) only inside `app.wsgi_app`, so the customer is resolved
in a `before_request` hook, where `flask.request` and `current_user` exist. That hook sets the customer in
the request's own context copy, made by the WSGI layer this module puts around `app.wsgi_app`, so the
customer also covers a streamed body (`stream_with_context`) and never leaks into the thread's next request.
"""

from __future__ import annotations

import contextvars
from typing import Any

from ._resolve import DEFAULT_HEADER, CustomerSource, MetadataSource, Resolver, warn_once
from .wsgi import CONTEXT_KEY, Environ, StartResponse, WSGIApp, run_in_request_context

_BLOCK_KEY = "cmdrdata_autopatch.block"


class _RequestContextLayer:
    """Runs each request of the wrapped WSGI app in a fresh copy of the context."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Any:
        return run_in_request_context(contextvars.copy_context(), self.app, environ, start_response)


def _current_user() -> Any:
    try:
        from flask_login import current_user
    except ImportError:
        return None
    get_object = getattr(current_user, "_get_current_object", None)
    return get_object() if callable(get_object) else current_user


def init_app(
    app: Any,
    header: str | None = DEFAULT_HEADER,
    get_customer: CustomerSource | None = None,
    from_user: bool = False,
    get_metadata: MetadataSource | None = None,
) -> None:
    """Attribute the OpenAI calls of every request of the Flask `app` to the request's customer.

    The customer is, first found wins: `get_customer(flask.request)`, then (``from_user=True``) Flask-Login's
    `current_user` when authenticated (its `get_id()`), then the `header` (``None`` disables it). A
    request with no customer, or an unusable one, is unattributed, never an error. `get_metadata(request)`
    may return a dict added to every event of the request.
    """
    import flask

    resolver = Resolver(header, get_customer, from_user, get_metadata)
    if not isinstance(app.wsgi_app, _RequestContextLayer):
        app.wsgi_app = _RequestContextLayer(app.wsgi_app)

    def enter_customer() -> None:
        request = flask.request
        block = resolver.block(request, request.headers.get, _current_user)
        if request.environ.get(CONTEXT_KEY) is None:
            # reached Flask without our WSGI layer (app.wsgi_app replaced, or test_request_context()):
            # no context copy of our own, so the block is undone at teardown
            warn_once(
                "flask-no-layer",
                "cmdrdata-autopatch: a request reached Flask without init_app()'s WSGI layer (app.wsgi_app "
                "replaced after init_app(), or test_request_context()); a streamed body is not attributed.",
            )
            flask.g.setdefault(_BLOCK_KEY, block)
        block.__enter__()  # in the request's own context copy: it ends with the request

    def exit_customer(_exc: BaseException | None) -> None:
        block = flask.g.pop(_BLOCK_KEY, None)
        if block is not None:
            block.__exit__(None, None, None)

    app.before_request(enter_customer)
    app.teardown_request(exit_customer)
