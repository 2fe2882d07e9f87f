"""llama-index (llama-index-llms-openai, llama-index-embeddings-openai) against a loopback OpenAI.

Its OpenAI LLM calls `chat.completions.create` (complete and chat alike, streamed or not) and its embedding
model `embeddings.create`. Nothing it does at import or per call needs the network (checked by the guard in
conftest). Current releases cap openai below 3, so its nox sessions run on openai 2.x and 1.x only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("llama_index.llms.openai")
pytest.importorskip("llama_index.embeddings.openai")

from llama_index.core.llms import ChatMessage
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI

from .checks import expect_exchanges, run_plain_and_patched
from .conftest import FAKE_KEY
from .fake_server import CHAT, EMBEDDINGS, FakeOpenAIServer, usage_numbers

MODEL = "gpt-4o-mini"
HI = [ChatMessage(role="user", content="Say hi")]


def _llm(server: FakeOpenAIServer, **kwargs: Any) -> OpenAI:
    return OpenAI(model=MODEL, api_base=server.base_url, api_key=FAKE_KEY, max_retries=0, **kwargs)


def _raw_usage(raw: Any) -> Any:
    usage = raw.get("usage") if isinstance(raw, dict) else getattr(raw, "usage", None)
    return usage.model_dump() if hasattr(usage, "model_dump") else usage


def test_complete() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        response = _llm(server).complete("Say hi")
        return {"text": response.text, "usage": _raw_usage(response.raw)}

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=False)
    assert out.patched["text"] == "Answer number 1."
    assert out.patched["usage"]["prompt_tokens"] == usage_numbers(1)[0]


def test_chat_and_achat() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        llm = _llm(server)
        first = llm.chat(HI)
        second = asyncio.run(llm.achat(HI))
        return [str(first), str(second)]

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 2, stream=False)


def test_stream_chat_without_usage() -> None:
    """No usage chunk asked for: the event is an estimate, of the model the chunks name (defect 1)."""

    def scenario(server: FakeOpenAIServer) -> Any:
        return [r.delta for r in _llm(server).stream_chat(HI)]

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=True)
    assert "".join(out.patched) == "Streamed answer number 1."


def test_stream_chat_with_usage() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        llm = _llm(server, additional_kwargs={"stream_options": {"include_usage": True}})
        return [r.delta for r in llm.stream_chat(HI)]

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=True)
    assert out.server.exchanges[0].json()["stream_options"] == {"include_usage": True}


def test_embeddings() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        model = OpenAIEmbedding(
            model="text-embedding-3-small", api_base=server.base_url, api_key=FAKE_KEY, max_retries=0
        )
        return {"batch": model.get_text_embedding_batch(["a", "b"]), "query": model.get_query_embedding("c")}

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, EMBEDDINGS, 2)
    assert len(out.patched["batch"]) == 2
