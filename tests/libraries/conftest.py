"""Fixtures for the real-library tests (issue 15): a loopback fake OpenAI, and a guard that nothing leaves
the machine.

Each test module `pytest.importorskip`s its library, so the default `pytest -q` passes without them
(`pip install -e '.[libs]'` or `nox -s libraries` runs them). Environment set here, before any library is
imported at collection: litellm reads its model cost map from the package instead of the internet and sends
no telemetry; openai-agents exports no traces; Hugging Face tokenizers stay offline.

The network guard replaces `socket.getaddrinfo` and `socket.socket.connect`: while a test of this folder runs
(and during collection, when the libraries are imported) any lookup of or connection to a host other than
loopback is refused and remembered, and the test fails naming it. Outside those times it passes through.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
from collections.abc import Iterator
from typing import Any, Callable, NamedTuple

import pytest

from cmdrdata_autopatch.targets import parse_version

from .checks import BillingMismatch
from .fake_server import FakeOpenAIServer

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LITELLM_TELEMETRY"] = "False"
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

FAKE_KEY = "sk-test-libraries-0123456789"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class _Guard:
    """Refuses non-loopback lookups and connections while `active`, and remembers each attempt."""

    active = True  # from this file's import to the end of collection: libraries are imported then
    attempts: list[str] = []


def _is_loopback(host: Any) -> bool:
    if host is None or host in ("", b""):
        return True  # binding a local socket
    name = host.decode() if isinstance(host, bytes) else str(host)
    return name in LOOPBACK or name.startswith("127.")


_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if _Guard.active and not _is_loopback(host):
        _Guard.attempts.append(f"DNS lookup of {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"tests/libraries: no network ({host!r} is not loopback)")
    return _real_getaddrinfo(host, *args, **kwargs)


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    inet = self.family in (socket.AF_INET, socket.AF_INET6)
    if _Guard.active and inet and not _is_loopback(address[0]):
        _Guard.attempts.append(f"connection to {address!r}")
        raise ConnectionRefusedError(f"tests/libraries: no network ({address!r} is not loopback)")
    return _real_connect(self, address)


socket.getaddrinfo = _guarded_getaddrinfo
socket.socket.connect = _guarded_connect  # type: ignore[method-assign,assignment]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Other test folders may test refusals of non-loopback hosts themselves: the guard is ours only."""
    _Guard.active = False


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if anything (the library, its telemetry, us) tried to reach a non-loopback host.
    Attempts made while the libraries were imported (collection) are reported by the first test."""
    for name in ("OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    _Guard.active = True
    try:
        yield
    finally:
        _Guard.active = False
    attempts, _Guard.attempts = _Guard.attempts, []
    assert not attempts, f"network outside loopback was attempted: {attempts}"


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI on 127.0.0.1 (free port); `.base_url` ends in /v1, `.exchanges` records every request."""
    with FakeOpenAIServer() as server:
        yield server


def _version(dist: str) -> tuple[int, ...]:
    try:
        return parse_version(importlib.metadata.version(dist))
    except importlib.metadata.PackageNotFoundError:
        return (0,)


def _litellm_posts() -> bool:
    """litellm sends chat and embeddings through `client.post(...)` from release 1.101.0 (1.100.5 and
    before call the resource methods' `with_raw_response`)."""
    return _version("litellm") >= (1, 101, 0)


class Known(NamedTuple):
    """A case that fails today by a known defect: why, on which releases (`when`), always or sometimes."""

    reason: str
    when: Callable[[], bool] = lambda: True
    strict: bool = True


DEFECT_1 = "defect 1: the estimate names the requested model, not the one the chunks name"
DEFECT_3 = "defect 3: instructor's running totals written into response.usage are billed"
DEFECT_4 = "defect 4: litellm sends client.post(...), never recorded"
# Cases that fail on the package as it is, by the defect of issue 15 that makes them fail (and, where it
# depends on the library's release, when). They are marked xfail(strict=True, raises=BillingMismatch): the
# assertion is the right behaviour, today's code misses it; the day a fix lands the case passes, strict
# turns that into a failure, and its line here must go. Any other failure (output changed, requests
# changed, a crash) fails as usual. A defect that shows only sometimes is `strict=False`.
# `LIBS_NO_XFAIL=1` runs them all as plain tests, to see observed vs expected events.
KNOWN_DEFECTS: dict[str, list[Known]] = {
    "test_langchain_openai.py::test_stream_without_stream_usage": [Known(DEFECT_1)],
    "test_openai_agents.py::test_runner_run_streamed_chat_completions_model": [Known(DEFECT_1)],
    "test_llama_index.py::test_stream_chat_without_usage": [Known(DEFECT_1)],
    "test_litellm.py::test_completion": [Known(DEFECT_4, _litellm_posts)],
    "test_litellm.py::test_acompletion": [Known(DEFECT_4, _litellm_posts)],
    "test_litellm.py::test_stream_with_usage": [Known(DEFECT_4, _litellm_posts)],
    "test_litellm.py::test_stream_without_usage": [Known(DEFECT_4, _litellm_posts), Known(DEFECT_1)],
    "test_litellm.py::test_async_stream_with_usage": [
        Known(DEFECT_4, _litellm_posts),
        # litellm < 1.101 calls the resource methods, and its async wrapper re-enters iteration of the SDK
        # stream on each `__anext__`; when the abandoned iterator is finalized the event ends with an
        # estimate. Seen on Python 3.11 in about 1 run of 3, not seen on 3.12: it depends on the collector.
        Known(
            "defect 2: litellm's wrapper re-enters the SDK stream; the event may end early",
            lambda: not _litellm_posts(),
            strict=False,
        ),
    ],
    "test_litellm.py::test_embeddings": [Known(DEFECT_4, _litellm_posts)],
    "test_litellm.py::test_aembedding": [Known(DEFECT_4, _litellm_posts)],
    "test_instructor.py::test_response_model_with_retries_bills_each_attempt": [Known(DEFECT_3)],
    "test_instructor.py::test_async_response_model_with_retries_bills_each_attempt": [Known(DEFECT_3)],
    "test_instructor.py::test_client_wrapped_before_patch_is_still_billed": [
        Known("defect 5: the create method instructor saved before patch() is never recorded"),
    ],
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("LIBS_NO_XFAIL"):
        return
    for item in items:
        applying = [k for k in KNOWN_DEFECTS.get(f"{item.path.name}::{item.name}", []) if k.when()]
        if applying:
            reason = "issue 15 " + " / ".join(k.reason for k in applying)
            strict = all(k.strict for k in applying)
            item.add_marker(pytest.mark.xfail(reason=reason, strict=strict, raises=BillingMismatch))
