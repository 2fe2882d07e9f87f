"""langchain-openai against a loopback OpenAI: one exact event per HTTP call, output unchanged.

Each test drives `ChatOpenAI` / `OpenAIEmbeddings` the way an application does, through
`run_plain_and_patched` (see checks.py): same summary and same requests with and without `patch()`, and every
event equal to what the server sent for its call (model as the answer names it, token numbers of that call).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("langchain_openai")

import openai
from langchain_core.messages import AIMessage, BaseMessage
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

from .checks import expect_exchanges, run_plain_and_patched
from .conftest import FAKE_KEY
from .fake_server import CHAT, EMBEDDINGS, RESPONSES, Answer, FakeOpenAIServer, usage_numbers

MODEL = "gpt-4o-mini"


def chat(server: FakeOpenAIServer, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(model=MODEL, base_url=server.base_url, api_key=FAKE_KEY, max_retries=0, **kwargs)


def summary(message: BaseMessage) -> dict[str, Any]:
    """What the app reads from a message; LangChain's own run ids (`lc_run-...`) are drawn per run."""
    data = message.model_dump()
    if str(data.get("id") or "").startswith("lc_"):
        data["id"] = "<run id>"
    return data


def test_invoke() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        return summary(chat(server).invoke("Say hi"))

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=False)
    inp, outp, _, _ = usage_numbers(1)
    assert out.patched["usage_metadata"]["input_tokens"] == inp
    assert out.patched["usage_metadata"]["output_tokens"] == outp
    assert out.patched["content"] == "Answer number 1."


def test_ainvoke() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        return summary(asyncio.run(chat(server).ainvoke("Say hi")))

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=False)


def _streamed(model: ChatOpenAI, **kwargs: Any) -> dict[str, Any]:
    chunks = list(model.stream("Tell me something", **kwargs))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return {"pieces": [c.content for c in chunks], "merged": summary(merged)}


def test_stream_with_stream_usage() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        return _streamed(chat(server, stream_usage=True))

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=True)
    assert out.server.exchanges[0].json()["stream_options"] == {"include_usage": True}
    assert out.patched["merged"]["usage_metadata"]["input_tokens"] == usage_numbers(1)[0]
    assert out.patched["merged"]["content"] == "Streamed answer number 1."


def test_stream_without_stream_usage() -> None:
    """No usage chunk: the event is an estimate, but of the model the chunks name (issue 15, defect 1)."""

    def scenario(server: FakeOpenAIServer) -> Any:
        return _streamed(chat(server, stream_usage=False))

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=True)
    assert "stream_options" not in out.server.exchanges[0].json()
    assert out.patched["merged"].get("usage_metadata") is None


def test_astream_with_stream_usage() -> None:
    async def collect(model: ChatOpenAI) -> list[Any]:
        return [chunk.content async for chunk in model.astream("Tell me something")]

    def scenario(server: FakeOpenAIServer) -> Any:
        return asyncio.run(collect(chat(server, stream_usage=True)))

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=True)


def test_batch() -> None:
    """Three prompts run on LangChain's thread pool: three events, each with its own call's numbers, all
    billed to the customer of the thread that called `batch` (LangChain copies the context)."""

    def scenario(server: FakeOpenAIServer) -> Any:
        messages = chat(server).batch(["one", "two", "three"], config={"max_concurrency": 3})
        # which prompt got which canned answer depends on the order of arrival: compare the sets
        return sorted((m.content, m.usage_metadata["input_tokens"]) for m in messages)  # type: ignore[index]

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 3, stream=False)
    assert out.patched == sorted((f"Answer number {n}.", usage_numbers(n)[0]) for n in (1, 2, 3))


class Person(BaseModel):
    name: str
    age: int


def test_structured_output_json_schema() -> None:
    """`with_structured_output` (json_schema) goes through `chat.completions.with_raw_response.parse`."""

    def scenario(server: FakeOpenAIServer) -> Any:
        result = chat(server).with_structured_output(Person).invoke("Who is Ann?")
        assert isinstance(result, Person)
        return result.model_dump()

    out = run_plain_and_patched(scenario, (CHAT, [Answer(content='{"name": "Ann", "age": 31}')]))
    expect_exchanges(out.server, CHAT, 1, stream=False)
    assert out.server.exchanges[0].json()["response_format"]["type"] == "json_schema"
    assert out.patched == {"name": "Ann", "age": 31}


def test_structured_output_function_calling() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        runnable = chat(server).with_structured_output(Person, method="function_calling", include_raw=True)
        result = runnable.invoke("Who is Bob?")
        return {"parsed": result["parsed"].model_dump(), "raw": summary(result["raw"])}

    answer = Answer(tool_call=("Person", '{"name": "Bob", "age": 40}'))
    out = run_plain_and_patched(scenario, (CHAT, [answer]))
    expect_exchanges(out.server, CHAT, 1, stream=False)
    assert out.patched["parsed"] == {"name": "Bob", "age": 40}


def test_invoke_responses_api() -> None:
    """`use_responses_api=True` sends `responses.with_raw_response.create`."""

    def scenario(server: FakeOpenAIServer) -> Any:
        message = chat(server, use_responses_api=True).invoke("Say hi")
        assert isinstance(message, AIMessage)
        return summary(message)

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, RESPONSES, 1, stream=False)
    assert out.patched["usage_metadata"]["input_tokens"] == usage_numbers(1)[0]


def test_stream_responses_api() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        return _streamed(chat(server, use_responses_api=True))

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, RESPONSES, 1, stream=True)


def test_embeddings() -> None:
    """`embed_documents` (one request for the batch) and `embed_query`: two calls, two events.
    `check_embedding_ctx_length=False` keeps tiktoken from downloading its vocabulary."""

    def scenario(server: FakeOpenAIServer) -> Any:
        embedder = OpenAIEmbeddings(
            model="text-embedding-3-small",
            base_url=server.base_url,
            api_key=FAKE_KEY,
            max_retries=0,
            check_embedding_ctx_length=False,
        )
        return {"docs": embedder.embed_documents(["alpha", "beta"]), "query": embedder.embed_query("gamma")}

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, EMBEDDINGS, 2)
    assert len(out.patched["docs"]) == 2


def test_error_is_raised_unchanged_and_recorded() -> None:
    """A 400 reaches the app as the same exception; the call still yields one (error) event."""

    def scenario(server: FakeOpenAIServer) -> Any:
        with pytest.raises(openai.BadRequestError) as info:
            chat(server).invoke("Say hi")
        return (type(info.value).__name__, info.value.status_code, str(info.value))

    out = run_plain_and_patched(scenario, (CHAT, [Answer(status=400)]))
    expect_exchanges(out.server, CHAT, 1)
    assert out.events[0]["error_occurred"] is True
