"""The integrations' framework-free parts: run even where no web framework is installed."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from types import SimpleNamespace
from typing import Any
from wsgiref.util import FileWrapper

import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.integrations import CmdrDataASGIMiddleware, CmdrDataWSGIMiddleware, user_customer_id

from ..fake_openai import FakeOpenAI


def test_importing_the_integrations_imports_no_web_framework() -> None:
    code = (
        "import sys, cmdrdata_autopatch.integrations, cmdrdata_autopatch.integrations.wsgi;"
        "print(sorted(m for m in ('flask', 'django', 'celery', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
    return lambda data: None


def test_wsgi_bodies_with_nothing_left_to_run_are_passed_through_as_they_are() -> None:
    files: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        if environ["PATH_INFO"] == "/file":
            files.append(environ["wsgi.file_wrapper"](io.BytesIO(b"data")))
            return files[-1]
        return [b"listed"]

    wrapped = CmdrDataWSGIMiddleware(app)
    environ = {"PATH_INFO": "/file", "wsgi.file_wrapper": FileWrapper, "HTTP_X_CUSTOMER_ID": "acme"}
    assert wrapped(environ, _start_response) is files[0]  # the server's sendfile path still sees its file
    assert wrapped({"PATH_INFO": "/list"}, _start_response) == [b"listed"]


def test_metadata_cannot_override_the_customer(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        client.embeddings.create(model="text-embedding-3-small", input="x")
        start_response("200 OK", [])
        return [b""]

    wrapped = CmdrDataWSGIMiddleware(app, get_metadata=lambda environ: {"customer_id": "evil", "plan": "pro"})
    wrapped({"HTTP_X_CUSTOMER_ID": "acme"}, _start_response)
    [event] = memory.wire()
    assert (event["customer_id"], event["metadata"]) == ("acme", {"plan": "pro"})


def test_header_lookup_is_case_insensitive_on_asgi(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    aclient = fake.async_client()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await aclient.embeddings.create(model="text-embedding-3-small", input="x")

    scope = {"type": "http", "headers": [(b"x-org", b" globex ")]}
    asyncio.run(CmdrDataASGIMiddleware(app, header="X-Org")(scope, None, None))  # type: ignore[arg-type]
    assert [e["customer_id"] for e in memory.wire()] == ["globex"]


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"header": ""}, ValueError, "header must be a header name"),
        ({"header": 5}, ValueError, "header must be a header name"),
        ({"get_customer": "not callable"}, TypeError, "get_customer must be a callable"),
        ({"get_metadata": {"plan": "pro"}}, TypeError, "get_metadata must be a callable"),
    ],
)
def test_a_misconfigured_middleware_fails_at_start_up_not_per_request(
    options: Any, error: type, words: str
) -> None:
    with pytest.raises(error, match=words):
        CmdrDataWSGIMiddleware(lambda e, s: [], **options)


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (None, None),
        (SimpleNamespace(is_authenticated=False, pk=1), None),
        (SimpleNamespace(is_authenticated=True, pk=42), "42"),  # Django
        (SimpleNamespace(is_authenticated=True, get_id=lambda: "u-7", id=99), "u-7"),  # Flask-Login
        (SimpleNamespace(is_authenticated=lambda: True, id="old-style"), "old-style"),
        (SimpleNamespace(is_authenticated=True, identity="alice"), "alice"),  # Starlette
        (SimpleNamespace(is_authenticated=True), None),
    ],
)
def test_user_customer_id(user: Any, expected: Any) -> None:
    assert user_customer_id(user) == expected
