"""The ASGI middleware on real FastAPI and Starlette apps, driven in-process (no sockets, no OpenAI)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, Optional

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("starlette")

import httpx
from fastapi import BackgroundTasks, FastAPI, Request, WebSocket
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.integrations import CmdrDataASGIMiddleware
from cmdrdata_autopatch.integrations._resolve import reset_warnings

from ..endpoints import MESSAGES
from ..fake_openai import FakeOpenAI

N = 8  # concurrent requests


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    reset_warnings()
    yield
    reset_warnings()


def fastapi_app(fake: FakeOpenAI, sync_barrier: threading.Barrier | None = None, **options: Any) -> FastAPI:
    """A FastAPI app whose endpoints call OpenAI in every way a request can: async, sync, streamed."""
    aclient = fake.async_client()
    sclient = fake.client()
    app = FastAPI()
    app.add_middleware(CmdrDataASGIMiddleware, **options)

    @app.post("/chat")
    async def chat() -> dict[str, Any]:
        result = await aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        return {"text": result.choices[0].message.content, "who": cmdrdata.get_customer_context()}

    @app.post("/sync-chat")
    def sync_chat() -> dict[str, Any]:  # runs in Starlette's thread pool
        if sync_barrier is not None:
            sync_barrier.wait()  # all N pool threads inside the endpoint at once
        sclient.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        return {"ok": True}

    @app.post("/stream")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            # the OpenAI stream and a second call both run after the endpoint has returned
            chunks = await aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content.encode()
            await aclient.embeddings.create(model="text-embedding-3-small", input="after")
            yield b"|done"

        return StreamingResponse(body(), media_type="text/plain")

    @app.post("/sync-stream")
    def sync_stream() -> StreamingResponse:
        def body() -> Iterator[bytes]:  # iterated in a worker thread, after the endpoint returned
            yield b"start|"
            sclient.embeddings.create(model="text-embedding-3-small", input="in a sync generator")
            yield b"end"

        return StreamingResponse(body(), media_type="text/plain")

    @app.post("/background")
    async def background(tasks: BackgroundTasks) -> dict[str, Any]:
        def later() -> None:
            sclient.embeddings.create(model="text-embedding-3-small", input="after the response")

        tasks.add_task(later)
        return {"queued": True}

    return app


def customers(memory: cmdrdata.MemoryExporter) -> list[Any]:
    return [e["customer_id"] for e in memory.wire()]


def test_header_names_the_customer(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    with TestClient(fastapi_app(fake)) as http:
        response = http.post("/chat", headers={"X-Customer-Id": "acme"})
    assert response.status_code == 200
    assert response.json() == {"text": "Hello!", "who": "acme"}
    [event] = memory.wire()
    assert event["customer_id"] == "acme"
    assert event["api"] == "chat.completions"
    assert event["input_tokens"] == 11


def test_no_header_is_unattributed_not_an_error(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, "cmdrdata_autopatch"), TestClient(fastapi_app(fake)) as http:
        assert http.post("/chat").status_code == 200
        assert http.post("/chat", headers={"X-Customer-Id": "  "}).status_code == 200
    assert customers(memory) == [None, None]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_no_header_goes_to_the_default_customer(fake: FakeOpenAI) -> None:
    cmdrdata.patch(exporter="memory", customer_id="house")
    try:
        with TestClient(fastapi_app(fake)) as http:
            http.post("/chat")
            http.post("/chat", headers={"x-customer-id": "acme"})
        assert [e["customer_id"] for e in cmdrdata.get_exporter().wire()] == ["house", "acme"]
    finally:
        cmdrdata.unpatch()


def test_bad_header_is_unattributed_with_one_warning(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, caplog: pytest.LogCaptureFixture
) -> None:
    too_long = "a" * 300
    with caplog.at_level(logging.WARNING, "cmdrdata_autopatch"), TestClient(fastapi_app(fake)) as http:
        for _ in range(3):
            assert http.post("/chat", headers={"X-Customer-Id": too_long}).status_code == 200
    assert customers(memory) == [None, None, None]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "header X-Customer-Id" in warnings[0] and "300 characters" in warnings[0]
    assert too_long not in warnings[0]


async def _raw_asgi_call(app: Any, headers: list[tuple[bytes, bytes]]) -> int:
    """Call an ASGI app with a hand-made scope (bytes no HTTP client would send) and return the status."""
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


def test_control_characters_in_a_header_on_a_bare_asgi_app(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    aclient = fake.async_client()

    async def bare(scope: Any, receive: Any, send: Any) -> None:  # no framework at all
        await aclient.embeddings.create(model="text-embedding-3-small", input="x")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = CmdrDataASGIMiddleware(bare, header="X-Tenant")
    statuses = asyncio.run(
        _gather(
            _raw_asgi_call(app, [(b"x-tenant", b"acme\x00evil")]),
            _raw_asgi_call(app, [(b"X-TENANT", b"caf\xe9")]),
            _raw_asgi_call(app, [(b"x-customer-id", b"ignored")]),
        )
    )
    assert statuses == [204, 204, 204]
    assert sorted(customers(memory), key=str) == [None, None, "café"]


async def _gather(*coros: Any) -> list[Any]:
    return list(await asyncio.gather(*coros))


def test_callable_and_metadata(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    def tenant(request: Request) -> str | None:
        return request.query_params.get("tenant")

    def metadata(request: Request) -> dict[str, Any]:
        return {"path": request.url.path, "plan": request.headers.get("x-plan", "free")}

    app = fastapi_app(fake, get_customer=tenant, get_metadata=metadata)
    with TestClient(app) as http:
        http.post("/chat?tenant=globex", headers={"X-Plan": "pro", "X-Customer-Id": "header-loses"})
        http.post("/chat", headers={"X-Customer-Id": "header-fallback"})  # callable says None: next source
    first, second = memory.wire()
    assert (first["customer_id"], first["metadata"]) == ("globex", {"path": "/chat", "plan": "pro"})
    assert second["customer_id"] == "header-fallback"
    assert second["metadata"] == {"path": "/chat", "plan": "free"}


def test_a_failing_callable_never_fails_the_request(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: Request) -> str:
        raise KeyError("no tenant")

    def wrong_type(request: Request) -> Any:
        return 42

    with caplog.at_level(logging.WARNING, "cmdrdata_autopatch"):
        with TestClient(fastapi_app(fake, get_customer=broken, header=None)) as http:
            assert http.post("/chat", headers={"X-Customer-Id": "unused"}).status_code == 200
        with TestClient(fastapi_app(fake, get_customer=wrong_type, get_metadata=broken)) as http:
            assert http.post("/chat").status_code == 200
    assert customers(memory) == [None, None]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "get_customer raised KeyError" in messages
    assert "get_customer's return value is a int" in messages
    assert "get_metadata failed (KeyError)" in messages


def test_starlette_authenticated_user(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    aclient = fake.async_client()

    class HeaderAuth(AuthenticationBackend):
        async def authenticate(self, conn: Any) -> Any:
            name = conn.headers.get("x-user")
            return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None

    async def endpoint(request: Request) -> JSONResponse:
        await aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        return JSONResponse({"user": request.user.is_authenticated})

    app = Starlette(
        routes=[Route("/chat", endpoint, methods=["POST"])],
        middleware=[  # the first is outermost: authentication runs before the customer is read
            Middleware(AuthenticationMiddleware, backend=HeaderAuth()),
            Middleware(CmdrDataASGIMiddleware, from_user=True),
        ],
    )
    with TestClient(app) as http:
        http.post("/chat", headers={"X-User": "alice", "X-Customer-Id": "header-loses"})
        http.post("/chat", headers={"X-Customer-Id": "anonymous-uses-header"})
        http.post("/chat")
    assert customers(memory) == ["alice", "anonymous-uses-header", None]


@pytest.mark.parametrize("path", ["/chat", "/sync-chat"])
def test_concurrent_requests_keep_their_customers(
    path: str, fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    """N requests in flight at once (tasks for async endpoints, pool threads for sync ones)."""
    app = fastapi_app(fake, sync_barrier=threading.Barrier(N, timeout=60))
    inside: list[int] = []

    @app.middleware("http")
    async def all_in_flight(request: Request, call_next: Any) -> Any:
        # every request waits here until all N are inside the app, so their customers truly overlap
        inside.append(1)
        while len(inside) < N:
            await asyncio.sleep(0.001)
        return await call_next(request)

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as http:
            responses = await asyncio.gather(
                *(http.post(path, headers={"X-Customer-Id": f"customer-{i}"}) for i in range(N))
            )
        return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200] * N
    assert sorted(customers(memory)) == sorted(f"customer-{i}" for i in range(N))


def test_streaming_response_bodies_stay_attributed(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    async def main() -> list[tuple[str, str]]:
        transport = httpx.ASGITransport(app=fastapi_app(fake))
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as http:
            responses = await asyncio.gather(
                *(
                    http.post(p, headers={"X-Customer-Id": f"{p[1:]}-{i}"})
                    for i in range(N // 2)
                    for p in ("/stream", "/sync-stream")
                )
            )
        return [(r.request.headers["x-customer-id"], r.text) for r in responses]

    bodies = asyncio.run(main())
    assert all(text.endswith(("|done", "end")) for _, text in bodies)
    assert "word0 word1" in bodies[0][1]
    events = memory.wire()
    by_customer: dict[str, list[str]] = {}
    for e in events:
        by_customer.setdefault(e["customer_id"], []).append(e["api"])
    assert len(events) == 3 * (N // 2)  # stream: chat + embeddings; sync-stream: embeddings
    for i in range(N // 2):
        assert sorted(by_customer[f"stream-{i}"]) == ["chat.completions", "embeddings"]
        assert by_customer[f"sync-stream-{i}"] == ["embeddings"]
    assert all(e["streaming"] for e in events if e["api"] == "chat.completions")


def test_background_tasks_after_the_response_stay_attributed(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    with TestClient(fastapi_app(fake)) as http:
        assert http.post("/background", headers={"X-Customer-Id": "later-co"}).json() == {"queued": True}
    [event] = memory.wire()
    assert (event["customer_id"], event["api"]) == ("later-co", "embeddings")


def test_lifespan_and_websocket_scopes(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    aclient = fake.async_client()
    app = FastAPI()
    app.add_middleware(CmdrDataASGIMiddleware)

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await aclient.embeddings.create(model="text-embedding-3-small", input=await socket.receive_text())
        await socket.send_text("ok")
        await socket.close()

    with TestClient(app) as http:  # noqa: SIM117 - the lifespan scope passes through untouched
        with http.websocket_connect("/ws", headers={"X-Customer-Id": "ws-co"}) as socket:
            socket.send_text("hello")
            assert socket.receive_text() == "ok"
    assert customers(memory) == ["ws-co"]


def test_customer_known_only_after_authentication_in_a_dependency(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    """The README recipe: an async dependency names the customer; the middleware keeps it to the request."""
    from fastapi import Depends

    aclient = fake.async_client()
    app = FastAPI()
    app.add_middleware(CmdrDataASGIMiddleware, header=None)

    async def current_org(request: Request) -> Optional[str]:  # FastAPI evaluates these on Python 3.9
        org = request.headers.get("authorization", "")[len("Org ") :] or None
        if org:
            cmdrdata.set_customer_context(org)
        return org

    @app.post("/stream")
    async def stream(org: Optional[str] = Depends(current_org)) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            await aclient.embeddings.create(model="text-embedding-3-small", input="while streaming")
            yield (org or "-").encode()

        return StreamingResponse(body())

    @app.post("/plain")
    async def plain() -> dict[str, Any]:
        await aclient.embeddings.create(model="text-embedding-3-small", input="no dependency")
        return {"who": cmdrdata.get_customer_context()}

    with TestClient(app) as http:
        assert http.post("/stream", headers={"Authorization": "Org initech"}).text == "initech"
        assert http.post("/plain").json() == {"who": None}  # nothing carried over from the last request
    assert customers(memory) == ["initech", None]
