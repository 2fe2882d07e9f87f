"""Web-framework integrations: bill each request's OpenAI calls to the request's customer.

- `CmdrDataASGIMiddleware` (`integrations.asgi`): FastAPI, Starlette, any ASGI app.
- `CmdrDataWSGIMiddleware` (`integrations.wsgi`): any WSGI app.
- `integrations.flask.init_app(app)`: Flask, with Flask-Login's user if wanted.
- `integrations.django.CmdrDataMiddleware`: Django (WSGI or ASGI), with `request.user` if wanted.
- `integrations.celery.install(app)`: Celery tasks run for the customer that queued them.

Each takes the customer from, first found wins, a callable on the request, the authenticated user (opt-in),
then a header (default `X-Customer-Id`). No customer, or an unusable one, leaves the request unattributed
(default customer, else `null`), with one warning per kind of problem: never an error in the request path.
Importing this package imports no web framework.
"""

from __future__ import annotations

from ._resolve import DEFAULT_HEADER, user_customer_id
from .asgi import CmdrDataASGIMiddleware
from .wsgi import CmdrDataWSGIMiddleware

__all__ = ["DEFAULT_HEADER", "CmdrDataASGIMiddleware", "CmdrDataWSGIMiddleware", "user_customer_id"]
