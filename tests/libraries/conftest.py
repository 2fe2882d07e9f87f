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

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

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
