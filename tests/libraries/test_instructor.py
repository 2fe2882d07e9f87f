"""instructor against a loopback OpenAI: a response model with retries bills each attempt by its own numbers.

instructor validates the model's answer and, when it fails, asks again; between attempts it writes running
totals into each response's `usage` (issue 15, defect 3). The server answers invalid JSON first and valid JSON
after, so two HTTP calls must give two events whose numbers are what the server sent for each call, not the
totals instructor wrote. instructor patches `client.chat.completions.create` on the client it wraps, so a
client wrapped before `patch()` keeps the method of that moment (defect 5): still one event per call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("instructor")

import instructor
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

import cmdrdata_autopatch as cmdrdata

from .checks import CUSTOMER, assert_billed_exactly, expect_exchanges, patched, run_plain_and_patched
from .conftest import FAKE_KEY
from .fake_server import CHAT, Answer, FakeOpenAIServer, usage_numbers

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Ann is 31."}]


class Person(BaseModel):
    name: str
    age: int


INVALID_THEN_VALID = (
    CHAT,
    [
        Answer(tool_call=("Person", '{"name": "Ann", "age": ')),  # truncated JSON
        Answer(tool_call=("Person", '{"name": "Ann", "age": "thirty-one"}')),  # not an int
        Answer(tool_call=("Person", '{"name": "Ann", "age": 31}')),
    ],
)


def _client(server: FakeOpenAIServer) -> Any:
    return instructor.from_openai(OpenAI(base_url=server.base_url, api_key=FAKE_KEY, max_retries=0))


def _summary(person: Person, completion: Any) -> dict[str, Any]:
    """The parsed model and the completion instructor returns (its `usage` is instructor's running total)."""
    return {"person": person.model_dump(), "completion": completion.model_dump()}


def test_response_model_first_try() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        person, completion = _client(server).chat.completions.create_with_completion(
            model=MODEL, response_model=Person, messages=MESSAGES, max_retries=2
        )
        return _summary(person, completion)

    out = run_plain_and_patched(scenario, (CHAT, INVALID_THEN_VALID[1][2:]))
    expect_exchanges(out.server, CHAT, 1, stream=False)
    assert out.patched["person"] == {"name": "Ann", "age": 31}


def test_response_model_with_retries_bills_each_attempt() -> None:
    def scenario(server: FakeOpenAIServer) -> Any:
        person, completion = _client(server).chat.completions.create_with_completion(
            model=MODEL, response_model=Person, messages=MESSAGES, max_retries=3
        )
        return _summary(person, completion)

    out = run_plain_and_patched(scenario, INVALID_THEN_VALID)
    expect_exchanges(out.server, CHAT, 3, stream=False)
    assert out.patched["person"] == {"name": "Ann", "age": 31}
    # the app sees instructor's total; each event must carry its own attempt's numbers (checked above)
    assert out.patched["completion"]["usage"]["prompt_tokens"] == sum(usage_numbers(n)[0] for n in (1, 2, 3))


def test_async_response_model_with_retries_bills_each_attempt() -> None:
    async def run(server: FakeOpenAIServer) -> Any:
        client = instructor.from_openai(
            AsyncOpenAI(base_url=server.base_url, api_key=FAKE_KEY, max_retries=0)
        )
        person, completion = await client.chat.completions.create_with_completion(
            model=MODEL, response_model=Person, messages=MESSAGES, max_retries=3
        )
        return _summary(person, completion)

    def scenario(server: FakeOpenAIServer) -> Any:
        return asyncio.run(run(server))

    out = run_plain_and_patched(scenario, INVALID_THEN_VALID)
    expect_exchanges(out.server, CHAT, 3, stream=False)


def test_client_wrapped_before_patch_is_still_billed(openai_server: FakeOpenAIServer) -> None:
    """`instructor.from_openai` before `patch()` (the app's import order): each attempt still one event."""
    openai_server.script(INVALID_THEN_VALID[0], *INVALID_THEN_VALID[1])
    client = _client(openai_server)
    with patched() as memory, cmdrdata.customer(CUSTOMER):
        person = client.chat.completions.create(
            model=MODEL, response_model=Person, messages=MESSAGES, max_retries=3
        )
        assert person.model_dump() == {"name": "Ann", "age": 31}
        expect_exchanges(openai_server, CHAT, 3, stream=False)
        assert_billed_exactly(memory, openai_server)
