"""What every library test asserts: the app saw the same thing with and without us, and what we billed is
exactly what the fake server sent, one event per HTTP call.

`run_plain_and_patched(scenario)` runs a scenario (a function of the server's base URL that drives a real
library and returns a plain summary of what the app got) twice, each against a fresh server: once without
`patch()`, once with `patch(exporter="memory")` inside `customer("acme")`. It asserts equal summaries and
equal request bodies (instrumentation changes neither what the app sees nor what is sent), then matches the
events against the server's exchanges with `assert_billed_exactly`.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.diagnostics import internal_errors, reset_internal_errors

from .fake_server import BILLABLE_ROUTES, Answer, Exchange, FakeOpenAIServer

CUSTOMER = "acme"
Scenario = Callable[[FakeOpenAIServer], Any]
CustomerOf = Callable[[Exchange], str]


def _acme(ex: Exchange) -> str:
    return CUSTOMER


TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")


@contextlib.contextmanager
def patched() -> Iterator[cmdrdata.MemoryExporter]:
    """patch() with the in-memory exporter for the duration; unpatch() after, whatever happens."""
    reset_internal_errors()
    cmdrdata.patch(exporter="memory")
    exporter = cmdrdata.get_exporter()
    assert isinstance(exporter, cmdrdata.MemoryExporter)
    try:
        yield exporter
    finally:
        cmdrdata.unpatch()


def expected_event(ex: Exchange, customer_of: CustomerOf = _acme) -> dict[str, Any]:
    """The facts the event for this exchange must carry (only the keys that can be known exactly)."""
    want: dict[str, Any] = {"api": BILLABLE_ROUTES[ex.route], "customer_id": customer_of(ex)}
    if ex.status >= 400:
        want.update(error_occurred=True, http_status=ex.status)
        return want
    want.update(error_occurred=False, model=ex.model, streaming=ex.stream)
    if ex.numbers is None:  # a stream that did not ask for usage: an estimate, but of this call's model
        want["usage_source"] = "estimated"
        return want
    inp, out, cached, reasoning = ex.numbers
    want.update(usage_source="reported", input_tokens=inp, output_tokens=out, total_tokens=inp + out)
    want.update(cached_input_tokens=cached, reasoning_tokens=reasoning)
    return want


def _short(event: dict[str, Any]) -> dict[str, Any]:
    keys = ("api", "model", "customer_id", "streaming", "usage_source", *TOKEN_FIELDS, "total_tokens")
    return {k: event.get(k) for k in (*keys, "error_occurred", "http_status")}


def billing_mismatches(
    events: list[dict[str, Any]], exchanges: list[Exchange], customer_of: CustomerOf = _acme
) -> list[str]:
    """Pair each billable exchange with one event that carries its facts; describe what does not pair."""
    left = list(events)
    problems = []
    for ex in exchanges:
        if ex.route not in BILLABLE_ROUTES:
            continue
        want = expected_event(ex, customer_of)
        match = next((e for e in left if all(e.get(k) == v for k, v in want.items())), None)
        if match is None:
            problems.append(f"HTTP {ex.route} (status {ex.status}): expected an event {want}")
        else:
            left.remove(match)
    problems += [f"unexpected or wrong event: {_short(e)}" for e in left]
    return problems


class BillingMismatch(AssertionError):
    """The events do not match the HTTP calls (the failure the known defects of issue 15 produce)."""


def assert_billed_exactly(
    memory: cmdrdata.MemoryExporter, server: FakeOpenAIServer, customer_of: CustomerOf = _acme
) -> list[dict[str, Any]]:
    """One event per billable HTTP call, each with that call's exact numbers and model, and no other."""
    assert not server.server_errors, f"the fake server failed: {server.server_errors}"
    gc.collect()  # a stream proxy the library dropped unfinished is finalized by garbage collection
    events = memory.wire()
    problems = billing_mismatches(events, server.exchanges, customer_of)
    if problems:
        observed = "\n  ".join(str(_short(e)) for e in events)
        raise BillingMismatch(
            f"{len(events)} events for {len(server.calls())} HTTP calls:\n  "
            + "\n  ".join(problems)
            + f"\nobserved events:\n  {observed}"
        )
    assert internal_errors() == {}, f"internal errors while instrumenting: {internal_errors()}"
    return events


@dataclass
class Outcome:
    plain: Any
    patched: Any
    server: FakeOpenAIServer
    events: list[dict[str, Any]]


def _bodies(server: FakeOpenAIServer) -> list[Any]:
    out = []
    for ex in server.exchanges:
        try:
            out.append((ex.method, ex.route, ex.json()))
        except ValueError:
            out.append((ex.method, ex.route, ex.body))
    return sorted(out, key=lambda item: json.dumps(item, sort_keys=True, default=str))


def run_plain_and_patched(
    scenario: Scenario, *scripts: tuple[str, list[Answer]], customer_of: CustomerOf = _acme
) -> Outcome:
    """Run `scenario` without and then with patch(); the same scripted answers are queued for each run.
    The patched run is inside `customer("acme")`; a scenario that sets its own customers per call says
    which call is whose with `customer_of`."""
    with FakeOpenAIServer() as plain_server:
        for route, answers in scripts:
            plain_server.script(route, *answers)
        plain = scenario(plain_server)
    with FakeOpenAIServer() as server:
        for route, answers in scripts:
            server.script(route, *answers)
        with patched() as memory:
            with cmdrdata.customer(CUSTOMER):
                observed = scenario(server)
            assert observed == plain, "the library's output changed under patch()"
            assert _bodies(server) == _bodies(plain_server), "the requests sent changed under patch()"
            events = assert_billed_exactly(memory, server, customer_of)
    return Outcome(plain, observed, server, events)


def expect_exchanges(server: FakeOpenAIServer, route: str, count: int, stream: Optional[bool] = None) -> None:
    """Guard the scenario itself: the library made the HTTP calls the test is about (and no others)."""
    calls = server.calls()
    assert [e.route for e in calls] == [route] * count, [(e.route, e.status) for e in calls]
    if stream is not None:
        assert all(e.stream is stream for e in calls), [e.stream for e in calls]
