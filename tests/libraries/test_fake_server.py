"""The fake server and the billing check, tested on their own (only `openai` needed, so these always run).

The library tests are only as good as these two: the server's answers must parse with the real SDK exactly
as OpenAI's do, and the check must fail on every way billing can be wrong (a missing event, an extra one,
another call's numbers, a running total, the requested model instead of the answered one).
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.targets import parse_version

from .checks import (
    CUSTOMER,
    BillingMismatch,
    assert_billed_exactly,
    billing_mismatches,
    run_plain_and_patched,
)
from .conftest import FAKE_KEY
from .fake_server import CHAT, EMBEDDINGS, RESPONSES, Answer, Exchange, FakeOpenAIServer, usage_numbers

# These run in every `tests(openai=...)` nox session too, down to openai 1.0.0 on Python 3.9.
OPENAI = parse_version(openai.__version__)
needs_responses = pytest.mark.skipif(OPENAI < (1, 66, 0), reason="responses API from openai 1.66")
needs_stream_options = pytest.mark.skipif(OPENAI < (1, 26, 0), reason="stream_options from openai 1.26")


def _client(server: FakeOpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=FAKE_KEY, max_retries=0)


def test_chat_answer_parses_and_is_recorded(openai_server: FakeOpenAIServer) -> None:
    completion = _client(openai_server).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    inp, out, cached, reasoning = usage_numbers(1)
    assert completion.model == "gpt-4o-mini-2099-01-01"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (inp, out)
    usage = completion.usage.model_dump()  # the details are extra fields (dicts) on old releases
    assert usage["prompt_tokens_details"]["cached_tokens"] == cached
    assert usage["completion_tokens_details"]["reasoning_tokens"] == reasoning
    (ex,) = openai_server.exchanges
    assert (ex.method, ex.path, ex.route, ex.status, ex.stream) == (
        "POST",
        "/v1/chat/completions",
        CHAT,
        200,
        False,
    )
    assert ex.headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert ex.json()["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("include_usage", [pytest.param(True, marks=needs_stream_options), False])
def test_chat_stream_has_the_usage_chunk_only_when_asked(
    openai_server: FakeOpenAIServer, include_usage: bool
) -> None:
    options: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        _client(openai_server).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            **options,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streamed answer number 1."
    assert {c.model for c in chunks} == {"gpt-4o-mini-2099-01-01"}
    usage = [c.usage for c in chunks if getattr(c, "usage", None) is not None]  # no field before 1.26
    (ex,) = openai_server.exchanges
    if include_usage:
        assert [u.prompt_tokens for u in usage] == [usage_numbers(1)[0]]
        assert ex.numbers == usage_numbers(1)
    else:
        assert usage == []
        assert ex.usage is None and ex.numbers is None


@needs_responses
def test_responses_answer_and_stream_parse(openai_server: FakeOpenAIServer) -> None:
    client = _client(openai_server)
    response = client.responses.create(model="gpt-4.1", input="hi")
    assert response.output_text == "Answer number 1."
    assert response.usage is not None and response.usage.input_tokens == usage_numbers(1)[0]
    events = list(client.responses.create(model="gpt-4.1", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    done = events[-1].response  # type: ignore[union-attr]
    assert done.output_text == "Answer number 2."
    assert done.usage is not None and done.usage.output_tokens_details.reasoning_tokens == usage_numbers(2)[3]
    assert [e.sequence_number for e in events] == list(range(len(events)))


@needs_responses
def test_responses_function_call(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(RESPONSES, Answer(tool_call=("f", '{"x": 1}')))
    response = _client(openai_server).responses.create(model="gpt-4.1", input="hi")
    (item,) = response.output
    assert (item.type, item.name, item.arguments) == ("function_call", "f", '{"x": 1}')  # type: ignore[union-attr]


def test_embeddings_float_and_base64(openai_server: FakeOpenAIServer) -> None:
    client = _client(openai_server)
    as_floats = client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], encoding_format="float"
    )
    default = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])  # base64 on the wire
    assert len(as_floats.data) == len(default.data) == 2
    assert as_floats.data[0].embedding == pytest.approx([0.002, 0.003, 0.004, 0.005])
    assert default.data[0].embedding == pytest.approx([0.003, 0.004, 0.005, 0.006])
    assert default.model == "text-embedding-3-small"
    assert [e.numbers for e in openai_server.calls(EMBEDDINGS)] == [(117, 0, 0, 0), (134, 0, 0, 0)]


def test_scripted_error_is_an_openai_error(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(CHAT, Answer(status=429, error_code="rate_limit_exceeded"))
    with pytest.raises(openai.RateLimitError):
        _client(openai_server).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert openai_server.exchanges[0].status == 429
    assert openai_server.exchanges[0].numbers is None


def test_unknown_route_is_404_and_not_billable(openai_server: FakeOpenAIServer) -> None:
    with pytest.raises(openai.NotFoundError):
        _client(openai_server).models.list()
    assert [(e.method, e.status) for e in openai_server.exchanges] == [("GET", 404)]
    assert billing_mismatches([], openai_server.exchanges) == []


# --- the billing check -----------------------------------------------------------------------------------


def _exchange(n: int, stream: bool = False, with_usage: bool = True) -> Exchange:
    ex = Exchange(
        "POST", "/v1/chat/completions", {}, b"{}", CHAT, status=200, stream=stream, model="m-2099-01-01"
    )
    if with_usage:
        ex.numbers = usage_numbers(n)
    return ex


def _event(n: int, **changes: Any) -> dict[str, Any]:
    inp, out, cached, reasoning = usage_numbers(n)
    event = {
        "api": "chat.completions",
        "customer_id": CUSTOMER,
        "model": "m-2099-01-01",
        "streaming": False,
        "usage_source": "reported",
        "input_tokens": inp,
        "output_tokens": out,
        "total_tokens": inp + out,
        "cached_input_tokens": cached,
        "reasoning_tokens": reasoning,
        "error_occurred": False,
    }
    event.update(changes)
    return event


def test_check_accepts_exact_events_in_any_order() -> None:
    assert billing_mismatches([_event(2), _event(1)], [_exchange(1), _exchange(2)]) == []


@pytest.mark.parametrize(
    "events",
    [
        pytest.param([_event(1)], id="missing"),
        pytest.param([_event(1), _event(2), _event(2)], id="extra"),
        pytest.param([_event(1), _event(1)], id="another-calls-numbers"),
        pytest.param([_event(1), _event(2, input_tokens=117 + 134)], id="running-total"),
        pytest.param([_event(1), _event(2, model="m")], id="requested-model"),
        pytest.param([_event(1), _event(2, customer_id=None)], id="no-customer"),
        pytest.param([_event(1), _event(2, usage_source="estimated")], id="estimate-for-reported"),
    ],
)
def test_check_rejects_wrong_billing(events: list[dict[str, Any]]) -> None:
    assert billing_mismatches(events, [_exchange(1), _exchange(2)]) != []


def test_check_wants_an_estimate_of_the_answered_model_for_a_stream_without_usage() -> None:
    ex = _exchange(1, stream=True, with_usage=False)
    estimate = _event(1, streaming=True, usage_source="estimated", input_tokens=3, output_tokens=4)
    assert billing_mismatches([estimate], [ex]) == []
    assert billing_mismatches([{**estimate, "model": "m"}], [ex]) != []


@needs_responses
def test_plain_and_patched_run_of_the_bare_sdk_passes_the_check() -> None:
    """End to end on the bare SDK (sync, async, chat, responses, embeddings): the check passes on calls the
    package is known to bill right, so a failure in a library test is about the library's path."""

    async def responses(server: FakeOpenAIServer) -> Any:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=FAKE_KEY, max_retries=0)
        return (await client.responses.create(model="gpt-4.1", input="hi")).output_text

    def scenario(server: FakeOpenAIServer) -> Any:
        client = _client(server)
        chat = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
        embedded = client.embeddings.create(model="text-embedding-3-small", input="x")
        return [chat.choices[0].message.content, len(embedded.data), asyncio.run(responses(server))]

    out = run_plain_and_patched(scenario)
    assert len(out.events) == 3


def test_unbilled_call_fails_the_check(openai_server: FakeOpenAIServer) -> None:
    """A call made without patch() leaves the exporter empty: the check must say so."""
    _client(openai_server).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(BillingMismatch, match="0 events for 1 HTTP calls"):
        assert_billed_exactly(cmdrdata.MemoryExporter(), openai_server)
