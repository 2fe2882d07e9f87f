"""The Django middleware on a real Django project (settings made here; test clients and a threaded server)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

pytest.importorskip("django")

import django
import httpx
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        DATABASES={},
        MIDDLEWARE=[],
        USE_TZ=True,
    )
    django.setup()

from asgiref.sync import markcoroutinefunction
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import SynchronousOnlyOperation
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from django.utils.functional import SimpleLazyObject

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.integrations._resolve import reset_warnings

from ..endpoints import MESSAGES
from ..fake_openai import FakeOpenAI

N = 8  # concurrent requests
OURS = "cmdrdata_autopatch.integrations.django.CmdrDataMiddleware"
AUTH = f"{__name__}.HeaderAuthMiddleware"


class HeaderAuthMiddleware:
    """Stands in for Django's AuthenticationMiddleware without a database: `X-User: 7` logs in user 7."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        user_id = request.headers.get("X-User")
        request.user = User(pk=int(user_id), username=f"user{user_id}") if user_id else AnonymousUser()
        return self.get_response(request)


def _user_from(request: HttpRequest) -> Any:
    user_id = request.headers.get("X-User")
    return User(pk=int(user_id), username=f"user{user_id}") if user_id else AnonymousUser()


class AsyncAuthMiddleware:
    """Like Django's AuthenticationMiddleware under ASGI: `request.user` is lazy and loading it from the
    event loop raises SynchronousOnlyOperation (it would query the database); `request.auser` is the async
    way (Django >= 5.0), offered here only when `with_auser` is set."""

    sync_capable = False
    async_capable = True
    with_auser = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> Any:
        def load() -> Any:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return _user_from(request)
            raise SynchronousOnlyOperation("You cannot call this from an async context")

        request.user = SimpleLazyObject(load)
        if self.with_auser:

            async def auser() -> Any:
                return _user_from(request)

            request.auser = auser
        return await self.get_response(request)


class AsyncAuthWithoutAuser(AsyncAuthMiddleware):
    with_auser = False


class State:
    """What the views use; set by the `app` fixture (Django's URLconf is module-level)."""

    fake: FakeOpenAI
    client: Any
    aclient: Any
    barrier: threading.Barrier | None = None
    arrived: list[int] = []


def chat(request: HttpRequest) -> JsonResponse:
    if State.barrier is not None:
        State.barrier.wait()
    State.client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    return JsonResponse({"who": cmdrdata.get_customer_context()})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def body() -> Iterator[bytes]:  # iterated by the handler after every middleware has returned
        chunks = State.client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content.encode()
        State.client.embeddings.create(model="text-embedding-3-small", input="after")
        yield b"|done"

    return StreamingHttpResponse(body(), content_type="text/plain")


async def achat(request: HttpRequest) -> JsonResponse:
    State.arrived.append(1)
    for _ in range(30_000):  # all N requests in flight before any calls OpenAI (fails, never hangs)
        if len(State.arrived) >= N:
            break
        await asyncio.sleep(0.001)
    else:
        raise AssertionError(f"only {len(State.arrived)} of {N} requests were served concurrently")
    await State.aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    return JsonResponse({"who": cmdrdata.get_customer_context()})


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    async def body() -> AsyncIterator[bytes]:
        yield b"start|"
        await State.aclient.embeddings.create(model="text-embedding-3-small", input="async body")
        yield b"end"

    return StreamingHttpResponse(body(), content_type="text/plain")


async def aself_named(request: HttpRequest) -> StreamingHttpResponse:
    cmdrdata.set_customer_context(request.GET["org"])  # the view knows the customer only now

    async def body() -> AsyncIterator[bytes]:
        await State.aclient.embeddings.create(model="text-embedding-3-small", input="async body")
        yield b"ok"

    return StreamingHttpResponse(body(), content_type="text/plain")


def self_named(request: HttpRequest) -> StreamingHttpResponse:
    cmdrdata.set_customer_context(request.GET["org"])

    def body() -> Iterator[bytes]:
        State.client.embeddings.create(model="text-embedding-3-small", input="sync body")
        yield b"ok"

    return StreamingHttpResponse(body(), content_type="text/plain")


def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    path("chat", chat),
    path("stream", stream),
    path("achat", achat),
    path("astream", astream),
    path("ok", ok),
    path("aself", aself_named),
    path("self", self_named),
]


@pytest.fixture(autouse=True)
def app(fake: FakeOpenAI) -> Iterator[None]:
    reset_warnings()
    State.fake, State.client, State.aclient = fake, fake.client(), fake.async_client()
    State.barrier, State.arrived = None, []
    with override_settings(MIDDLEWARE=[AUTH, OURS]):
        yield
    reset_warnings()


def customers(memory: cmdrdata.MemoryExporter) -> list[Any]:
    return [e["customer_id"] for e in memory.wire()]


def test_header_no_header_and_bad_header(
    memory: cmdrdata.MemoryExporter, caplog: pytest.LogCaptureFixture
) -> None:
    http = Client()
    assert http.post("/chat", headers={"X-Customer-Id": "acme"}).json() == {"who": "acme"}
    assert http.post("/chat").json() == {"who": None}
    with caplog.at_level("WARNING", "cmdrdata_autopatch"):
        assert http.post("/chat", headers={"X-Customer-Id": "x" * 999}).status_code == 200
        assert http.post("/chat", headers={"X-Customer-Id": "y" * 999}).status_code == 200
    assert customers(memory) == ["acme", None, None, None]
    assert len([r for r in caplog.records if r.levelno >= 30]) == 1


def test_user_then_header(memory: cmdrdata.MemoryExporter) -> None:
    with override_settings(CMDRDATA_MIDDLEWARE={"from_user": True}):
        http = Client()
        http.post("/chat", headers={"X-User": "7", "X-Customer-Id": "header-loses"})
        http.post("/chat", headers={"X-Customer-Id": "anonymous-uses-header"})
    assert customers(memory) == ["7", "anonymous-uses-header"]


def org_from_query(request: HttpRequest) -> str | None:
    return request.GET.get("org")


def test_callable_by_dotted_path_and_metadata(memory: cmdrdata.MemoryExporter) -> None:
    options = {
        "get_customer": f"{__name__}.org_from_query",
        "get_metadata": lambda request: {"path": request.path},
        "header": None,
    }
    with override_settings(CMDRDATA_MIDDLEWARE=options):
        Client().post("/chat?org=globex")
        Client().post("/chat", headers={"X-Customer-Id": "header-disabled"})
    assert [(e["customer_id"], e["metadata"]) for e in memory.wire()] == [
        ("globex", {"path": "/chat"}),
        (None, {"path": "/chat"}),
    ]


def test_subclass_overrides(memory: cmdrdata.MemoryExporter) -> None:
    from cmdrdata_autopatch.integrations.django import CmdrDataMiddleware

    class TenantMiddleware(CmdrDataMiddleware):
        def get_customer(self, request: Any) -> str | None:
            return request.headers.get("X-Tenant")

        def get_metadata(self, request: Any) -> dict[str, Any] | None:
            return {"plan": "enterprise"}

    global SubclassMiddleware
    SubclassMiddleware = TenantMiddleware
    with override_settings(MIDDLEWARE=[AUTH, f"{__name__}.SubclassMiddleware"]):
        Client().post("/chat", headers={"X-Tenant": "initech"})
    [event] = memory.wire()
    assert (event["customer_id"], event["metadata"]) == ("initech", {"plan": "enterprise"})


SubclassMiddleware: Any = None


def test_streaming_response_stays_attributed(memory: cmdrdata.MemoryExporter) -> None:
    response = Client().post("/stream", headers={"X-Customer-Id": "streamer"})
    assert b"".join(response.streaming_content).endswith(b"|done")
    assert [(e["customer_id"], e["api"]) for e in memory.wire()] == [
        ("streamer", "chat.completions"),
        ("streamer", "embeddings"),
    ]


@override_settings(MIDDLEWARE=[OURS])  # an all-async chain: Django runs requests concurrently
def test_async_views_and_async_streaming_under_asgi(memory: cmdrdata.MemoryExporter) -> None:
    async def main() -> list[Any]:
        http = AsyncClient()
        chats = await asyncio.gather(
            *(http.post("/achat", headers={"X-Customer-Id": f"async-{i}"}) for i in range(N))
        )
        streamed = await http.post("/astream", headers={"X-Customer-Id": "async-streamer"})
        body = b"".join([chunk async for chunk in streamed.streaming_content])
        return [r.json()["who"] for r in chats] + [body]

    results = asyncio.run(main())
    assert results == [f"async-{i}" for i in range(N)] + [b"start|end"]
    assert sorted(customers(memory)) == sorted([f"async-{i}" for i in range(N)] + ["async-streamer"])


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def test_concurrent_requests_on_a_threaded_wsgi_server(memory: cmdrdata.MemoryExporter) -> None:
    State.barrier = threading.Barrier(N, timeout=60)
    server = make_server("127.0.0.1", 0, WSGIHandler(), _ThreadingServer, _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:

        def post(i: int) -> Any:
            return httpx.post(f"{base}/chat", headers={"X-Customer-Id": f"thread-{i}"}, timeout=60).json()

        with ThreadPoolExecutor(N) as pool:
            answers = list(pool.map(post, range(N)))
    finally:
        server.shutdown()
        server.server_close()
    assert answers == [{"who": f"thread-{i}"} for i in range(N)]
    assert sorted(customers(memory)) == sorted(f"thread-{i}" for i in range(N))


@pytest.mark.parametrize("auth", ["AsyncAuthMiddleware", "AsyncAuthWithoutAuser"])
def test_async_user_is_loaded_without_touching_the_database_from_the_event_loop(
    auth: str, memory: cmdrdata.MemoryExporter, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> list[Any]:
        http = AsyncClient()
        State.arrived = [1] * N  # no waiting in the view: one request at a time here
        first = await http.post("/achat", headers={"X-User": "9", "X-Customer-Id": "header-loses"})
        second = await http.post("/achat", headers={"X-Customer-Id": "anonymous-uses-header"})
        return [first.json()["who"], second.json()["who"]]

    settings_ = {"MIDDLEWARE": [f"{__name__}.{auth}", OURS], "CMDRDATA_MIDDLEWARE": {"from_user": True}}
    with override_settings(**settings_), caplog.at_level("WARNING", "cmdrdata_autopatch"):
        assert asyncio.run(main()) == ["9", "anonymous-uses-header"]
    assert customers(memory) == ["9", "anonymous-uses-header"]
    assert not caplog.records


@override_settings(MIDDLEWARE=[OURS])
def test_a_customer_named_by_the_view_covers_its_streamed_body_and_no_more(
    memory: cmdrdata.MemoryExporter,
) -> None:
    async def main() -> None:
        http = AsyncClient()
        for path_ in ("/aself?org=async-org", "/self?org=sync-org"):
            content = (await http.get(path_)).streaming_content
            if hasattr(content, "__aiter__"):
                assert b"".join([chunk async for chunk in content]) == b"ok"
            else:  # a sync body under ASGI: Django consumes it in a worker thread
                assert b"".join(content) == b"ok"
        await http.get("/achat")  # the next request starts clean

    State.arrived = [1] * N
    asyncio.run(main())
    sync = Client()
    assert b"".join(sync.get("/self?org=wsgi-org").streaming_content) == b"ok"
    assert sync.post("/chat").json() == {"who": None}
    assert customers(memory) == ["async-org", "sync-org", None, "wsgi-org", None]
