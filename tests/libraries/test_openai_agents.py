"""openai-agents against a loopback OpenAI (Responses API): one exact event per model call, output unchanged.

Tracing is off (`OPENAI_AGENTS_DISABLE_TRACING=1` in conftest, and `set_tracing_disabled(True)` here), so
the SDK exports nothing; the conftest network guard fails the test if anything tries to leave the machine.
`Runner.run` sends `responses.create`; `Runner.run_streamed` sends `responses.with_streaming_response.create`;
a run with a tool makes two model calls, which must be two events with their own numbers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

import cmdrdata_autopatch as cmdrdata

from .checks import expect_exchanges, run_plain_and_patched
from .conftest import FAKE_KEY
from .fake_server import CHAT, RESPONSES, Answer, FakeOpenAIServer, usage_numbers

set_tracing_disabled(True)
MODEL = "gpt-4.1-mini"


def _client(server: FakeOpenAIServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key=FAKE_KEY, max_retries=0)


def _agent(server: FakeOpenAIServer, **kwargs: Any) -> Agent[Any]:
    model = OpenAIResponsesModel(model=MODEL, openai_client=_client(server))
    return Agent(name="helper", instructions="Be brief.", model=model, **kwargs)


def _usage(result: Any) -> list[tuple[int, int]]:
    return [(r.usage.input_tokens, r.usage.output_tokens) for r in result.raw_responses]


def test_runner_run() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        result = asyncio.run(Runner.run(_agent(server), "Say hi"))
        return {"final": result.final_output, "usage": _usage(result)}

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, RESPONSES, 1, stream=False)
    assert out.patched == {"final": "Answer number 1.", "usage": [usage_numbers(1)[:2]]}


def test_runner_run_streamed() -> None:
    async def run(server: FakeOpenAIServer) -> dict[str, Any]:
        result = Runner.run_streamed(_agent(server), "Say hi")
        kinds = [event.type async for event in result.stream_events()]
        return {"final": result.final_output, "events": kinds, "usage": _usage(result)}

    def scenario(server: FakeOpenAIServer) -> Any:
        return asyncio.run(run(server))

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, RESPONSES, 1, stream=True)
    assert out.patched["final"] == "Answer number 1."
    assert out.patched["usage"] == [usage_numbers(1)[:2]]


@function_tool
def lookup_weather(city: str) -> str:
    """Weather for a city."""
    return f"Sunny in {city}"


TOOL_SCRIPT = (
    RESPONSES,
    [Answer(tool_call=("lookup_weather", '{"city": "Oslo"}')), Answer(content="Sunny.")],
)


def test_runner_run_with_a_tool_is_two_calls() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        result = asyncio.run(Runner.run(_agent(server, tools=[lookup_weather]), "Weather in Oslo?"))
        return {"final": result.final_output, "usage": _usage(result)}

    out = run_plain_and_patched(scenario, TOOL_SCRIPT)
    expect_exchanges(out.server, RESPONSES, 2, stream=False)
    assert out.patched == {"final": "Sunny.", "usage": [usage_numbers(1)[:2], usage_numbers(2)[:2]]}


def test_runner_run_streamed_with_a_tool_is_two_calls() -> None:
    async def run(server: FakeOpenAIServer) -> dict[str, Any]:
        result = Runner.run_streamed(_agent(server, tools=[lookup_weather]), "Weather in Oslo?")
        kinds = [event.type async for event in result.stream_events()]
        return {"final": result.final_output, "events": kinds, "usage": _usage(result)}

    def scenario(server: FakeOpenAIServer) -> Any:
        return asyncio.run(run(server))

    out = run_plain_and_patched(scenario, TOOL_SCRIPT)
    expect_exchanges(out.server, RESPONSES, 2, stream=True)
    assert out.patched["final"] == "Sunny."


def test_runner_run_chat_completions_model() -> None:
    """The same agent on `OpenAIChatCompletionsModel`: `chat.completions.create`."""

    def scenario(server: FakeOpenAIServer) -> Any:
        model = OpenAIChatCompletionsModel(model=MODEL, openai_client=_client(server))
        result = asyncio.run(Runner.run(Agent(name="helper", model=model), "Say hi"))
        return {"final": result.final_output, "usage": _usage(result)}

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=False)
    assert out.patched == {"final": "Answer number 1.", "usage": [usage_numbers(1)[:2]]}


def test_runner_run_streamed_chat_completions_model() -> None:
    """`run_streamed` on `OpenAIChatCompletionsModel`: a chat stream without the usage chunk (the agent asks
    for it only with `ModelSettings(include_usage=True)`): the event is an estimate of the answered model."""

    async def run(server: FakeOpenAIServer) -> dict[str, Any]:
        model = OpenAIChatCompletionsModel(model=MODEL, openai_client=_client(server))
        result = Runner.run_streamed(Agent(name="helper", model=model), "Say hi")
        kinds = [event.type async for event in result.stream_events()]
        return {"final": result.final_output, "events": kinds}

    def scenario(server: FakeOpenAIServer) -> Any:
        return asyncio.run(run(server))

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=True)
    assert out.patched["final"] == "Streamed answer number 1."


def test_concurrent_runs_bill_each_customer() -> None:
    """Two runs at once on one event loop, each inside its own `customer(...)`: each model call is billed to
    the customer of the run that made it (the agent's tasks carry the caller's context)."""

    async def run_for(server: FakeOpenAIServer, who: str) -> Any:
        with cmdrdata.customer(who):
            result = await Runner.run(_agent(server), f"I am {who}")
        return who, result.final_output

    async def both(server: FakeOpenAIServer) -> Any:
        return sorted(await asyncio.gather(run_for(server, "globex"), run_for(server, "initech")))

    def customer_of(ex: Any) -> str:
        return "globex" if "I am globex" in ex.body.decode() else "initech"

    def scenario(server: FakeOpenAIServer) -> Any:
        # which run got which canned answer depends on arrival order: compare who ran, not the answer
        return [who for who, _ in asyncio.run(both(server))]

    out = run_plain_and_patched(scenario, customer_of=customer_of)
    expect_exchanges(out.server, RESPONSES, 2, stream=False)
    assert sorted(e["customer_id"] for e in out.events) == ["globex", "initech"]


def test_runner_run_streamed_chat_completions_model_with_usage() -> None:
    async def run(server: FakeOpenAIServer) -> dict[str, Any]:
        model = OpenAIChatCompletionsModel(model=MODEL, openai_client=_client(server))
        agent = Agent(name="helper", model=model, model_settings=ModelSettings(include_usage=True))
        result = Runner.run_streamed(agent, "Say hi")
        kinds = [event.type async for event in result.stream_events()]
        return {"final": result.final_output, "events": kinds, "usage": _usage(result)}

    def scenario(server: FakeOpenAIServer) -> Any:
        return asyncio.run(run(server))

    out = run_plain_and_patched(scenario)
    expect_exchanges(out.server, CHAT, 1, stream=True)
    assert out.server.exchanges[0].json()["stream_options"] == {"include_usage": True}
    assert out.patched["usage"] == [usage_numbers(1)[:2]]
