"""The WSGI middleware and the Flask integration on real Flask apps (test client and a loopback server)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("flask")

import flask
import httpx
from werkzeug.serving import make_server
from werkzeug.test import Client

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.integrations import CmdrDataWSGIMiddleware
from cmdrdata_autopatch.integrations import flask as cmdrdata_flask
from cmdrdata_autopatch.integrations._resolve import reset_warnings

from ..endpoints import MESSAGES
from ..fake_openai import FakeOpenAI

N = 8  # concurrent requests


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    reset_warnings()
    yield
    reset_warnings()


def flask_app(fake: FakeOpenAI, barrier: threading.Barrier | None = None, **options: Any) -> Any:
    client = fake.client()
    app = flask.Flask("cmdrdata_test_app")
    app.secret_key = "test-only"

    @app.post("/chat")
    def chat() -> Any:
        if barrier is not None:
            barrier.wait()  # all N server threads inside a request at once
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        return {"who": cmdrdata.get_customer_context()}

    @app.post("/stream")
    def stream() -> Any:
        @flask.stream_with_context
        def body() -> Iterator[str]:  # runs while the server sends the body, after the view returned
            chunks = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
            client.embeddings.create(model="text-embedding-3-small", input="after")
            yield "|done"

        return flask.Response(body(), mimetype="text/plain")

    @app.post("/leak")
    def leak() -> Any:
        cmdrdata.set_customer_context("leaked")  # the legacy helper sets the customer for "the rest"
        return {"ok": True}

    cmdrdata_flask.init_app(app, **options)
    return app


def customers(memory: cmdrdata.MemoryExporter) -> list[Any]:
    return [e["customer_id"] for e in memory.wire()]


def test_flask_header_and_no_header(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    http = flask_app(fake).test_client()
    assert http.post("/chat", headers={"X-Customer-Id": "acme"}).get_json() == {"who": "acme"}
    assert http.post("/chat").status_code == 200
    assert http.post("/chat", headers={"X-Customer-Id": ""}).status_code == 200
    assert customers(memory) == ["acme", None, None]


def test_flask_bad_header_is_unattributed_with_one_warning(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, caplog: pytest.LogCaptureFixture
) -> None:
    http = flask_app(fake, header="X-Org").test_client()
    with caplog.at_level(logging.WARNING, "cmdrdata_autopatch"):
        for _ in range(3):
            assert http.post("/chat", headers={"X-Org": "o" * 257}).status_code == 200
    assert customers(memory) == [None, None, None]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "header X-Org" in warnings[0]


def test_flask_callable_and_metadata(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    http = flask_app(
        fake,
        get_customer=lambda request: request.args.get("org"),
        get_metadata=lambda request: {"endpoint": request.endpoint},
    ).test_client()
    http.post("/chat?org=globex")
    [event] = memory.wire()
    assert (event["customer_id"], event["metadata"]) == ("globex", {"endpoint": "chat"})


def test_flask_login_user(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    flask_login = pytest.importorskip("flask_login")

    class User(flask_login.UserMixin):  # type: ignore[misc]
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    app = flask_app(fake, from_user=True)
    manager = flask_login.LoginManager(app)
    manager.request_loader(
        lambda request: User(request.headers["X-User"]) if "X-User" in request.headers else None
    )
    http = app.test_client()
    http.post("/chat", headers={"X-User": "u-42", "X-Customer-Id": "header-loses"})
    http.post("/chat", headers={"X-Customer-Id": "anonymous-uses-header"})
    assert customers(memory) == ["u-42", "anonymous-uses-header"]


def test_flask_streamed_body_stays_attributed(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    http = flask_app(fake).test_client()
    response = http.post("/stream", headers={"X-Customer-Id": "streamer"})
    assert response.get_data(as_text=True).endswith("|done")
    assert [(e["customer_id"], e["api"]) for e in memory.wire()] == [
        ("streamer", "chat.completions"),
        ("streamer", "embeddings"),
    ]


def test_nothing_set_in_a_request_leaks_into_the_next_one(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    http = flask_app(fake).test_client()  # one thread serves both requests
    http.post("/leak", headers={"X-Customer-Id": "first"})
    assert http.post("/chat").get_json() == {"who": None}
    assert cmdrdata.get_customer_context() is None
    assert customers(memory) == [None]


def test_concurrent_requests_on_a_threaded_server(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    """A real threaded WSGI server on 127.0.0.1: N requests in N threads at once, streamed bodies too."""
    app = flask_app(fake, barrier=threading.Barrier(N, timeout=60))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:

        def post(path: str, who: str) -> int:
            return httpx.post(base + path, headers={"X-Customer-Id": who}, timeout=60).status_code

        with ThreadPoolExecutor(N) as pool:
            chats = list(pool.map(lambda i: post("/chat", f"chat-{i}"), range(N)))
            streams = list(pool.map(lambda i: post("/stream", f"stream-{i}"), range(N)))
    finally:
        server.shutdown()
        server.server_close()
    assert chats == streams == [200] * N
    got = sorted((e["customer_id"], e["api"]) for e in memory.wire())
    want = [(f"chat-{i}", "chat.completions") for i in range(N)]
    want += [(f"stream-{i}", api) for i in range(N) for api in ("chat.completions", "embeddings")]
    assert got == sorted(want)


def test_plain_wsgi_middleware(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    """Any WSGI app: header, callable on the environ, metadata, and a lazily produced body."""
    client = fake.client()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"a"
        client.embeddings.create(model="text-embedding-3-small", input="while iterating")
        yield b"b"

    wrapped = CmdrDataWSGIMiddleware(
        app,
        get_customer=lambda environ: environ.get("QUERY_STRING") or None,
        get_metadata=lambda environ: {"path": environ["PATH_INFO"]},
    )
    http = Client(wrapped)
    assert http.get("/x?from-query", headers={"X-Customer-Id": "header-loses"}).data == b"ab"
    assert http.get("/y", headers={"X-Customer-Id": "from-header"}).data == b"ab"
    assert http.get("/z").data == b"ab"
    assert [(e["customer_id"], e["metadata"]) for e in memory.wire()] == [
        ("from-query", {"path": "/x"}),
        ("from-header", {"path": "/y"}),
        (None, {"path": "/z"}),
    ]


def test_wsgi_body_close_runs_in_the_request_context(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.client()

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"x"

        def close(self) -> None:  # e.g. a framework's teardown that records a last call
            client.embeddings.create(model="text-embedding-3-small", input="on close")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return Body()

    response = Client(CmdrDataWSGIMiddleware(app)).get("/", headers={"X-Customer-Id": "closer"})
    assert response.data == b"x"
    assert customers(memory) == []  # not closed yet
    response.close()  # the server closes the body after sending it
    assert customers(memory) == ["closer"]


def test_flask_request_context_without_the_wsgi_layer(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    """`test_request_context()` skips app.wsgi_app: the customer still applies, and is undone at teardown."""
    app = flask_app(fake)
    with app.test_request_context("/chat", method="POST", headers={"X-Customer-Id": "in-context"}):
        app.preprocess_request()
        assert cmdrdata.get_customer_context() == "in-context"
    assert cmdrdata.get_customer_context() is None
