"""litellm against a loopback OpenAI (`api_base=`): one exact event per HTTP call, output unchanged.

Current litellm sends chat completions (streamed or not) and embeddings through the `openai` client's
low-level `client.post(...)`, not the resource methods (issue 15, defect 4), so on a package without a
safety net below the resource methods these tests see no event at all. The stream tests also cover
defect 2: litellm's stream wrapper restarts iteration of the SDK stream on every chunk it hands out.
litellm reads its cost map from the package (LITELLM_LOCAL_MODEL_COST_MAP, set in conftest) and sends no
telemetry; the conftest network guard fails the test if it tries.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("litellm")

import litellm

from .checks import expect_exchanges, run_plain_and_patched
from .conftest import FAKE_KEY
from .fake_server import CHAT, EMBEDDINGS, FakeOpenAIServer, usage_numbers

litellm.telemetry = False
litellm.suppress_debug_info = True
litellm.callbacks = []
litellm.success_callback = []
litellm.failure_callback = []

MODEL = "openai/gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hi"}]


def _args(server: FakeOpenAIServer) -> dict[str, Any]:
    return {"api_base": server.base_url, "api_key": FAKE_KEY, "num_retries": 0}


def _chunk_summary(chunks: list[Any]) -> list[dict[str, Any]]:
    """What the app reads from each chunk; litellm stamps `created` on stream chunks with its own clock."""
    out = []
    for chunk in chunks:
        data = chunk.model_dump()
        data.pop("created", None)
        out.append(data)
    return out


def test_completion() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        return litellm.completion(model=MODEL, messages=MESSAGES, **_args(server)).model_dump()

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=False)
    assert out.patched["usage"]["prompt_tokens"] == usage_numbers(1)[0]


def test_acompletion() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        return asyncio.run(litellm.acompletion(model=MODEL, messages=MESSAGES, **_args(server))).model_dump()

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=False)


def test_stream_with_usage() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        stream = litellm.completion(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            **_args(server),
        )
        return _chunk_summary(list(stream))

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=True)
    assert out.patched[-1]["usage"]["prompt_tokens"] == usage_numbers(1)[0]


def test_stream_without_usage() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        stream = litellm.completion(model=MODEL, messages=MESSAGES, stream=True, **_args(server))
        return _chunk_summary(list(stream))

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=True)
    assert "stream_options" not in out.server.exchanges[0].json()


def test_async_stream_with_usage() -> None:
    """litellm's async wrapper runs `async for chunk in stream` anew on every `__anext__` (defect 2)."""

    async def collect(server: FakeOpenAIServer) -> list[Any]:
        stream = await litellm.acompletion(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            **_args(server),
        )
        return [chunk async for chunk in stream]

    def scenario(server: FakeOpenAIServer) -> Any:
        return _chunk_summary(asyncio.run(collect(server)))

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=True)
    assert out.patched[-1]["usage"]["prompt_tokens"] == usage_numbers(1)[0]


def test_embeddings() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        result = litellm.embedding(model="openai/text-embedding-3-small", input=["a", "b"], **_args(server))
        return result.model_dump()

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, EMBEDDINGS, 1)
    assert out.patched["usage"]["prompt_tokens"] == usage_numbers(1)[0]
    assert len(out.patched["data"]) == 2


def test_aembedding() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        coro = litellm.aembedding(model="openai/text-embedding-3-small", input=["a"], **_args(server))
        return asyncio.run(coro).model_dump()

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, EMBEDDINGS, 1)
