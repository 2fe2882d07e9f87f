"""`customer(None)` / `customer("")`: "no customer" is unattributed, never an exception (issue 13, item 3)."""

from __future__ import annotations

from typing import Any

import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch import context

from ..endpoints import MESSAGES
from ..fake_openai import FakeOpenAI


@pytest.mark.parametrize("nobody", [None, "", "   ", "\t\n"])
def test_no_customer_block_is_unattributed(
    nobody: Any, fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.client()
    with cmdrdata.customer(nobody, plan="free"):
        assert context.current() == (None, {"plan": "free"})
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    [event] = memory.wire()
    assert event["customer_id"] is None
    assert event["metadata"] == {"plan": "free"}


def test_no_customer_goes_to_the_default_customer(fake: FakeOpenAI) -> None:
    cmdrdata.patch(exporter="memory", customer_id="house")
    try:
        client = fake.client()
        with cmdrdata.customer(None):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        with cmdrdata.customer(""):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert [e["customer_id"] for e in cmdrdata.get_exporter().wire()] == ["house", "house"]
    finally:
        cmdrdata.unpatch()


def test_no_customer_inside_a_block_keeps_the_outer_customer_like_customer_id_none(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.client()
    with cmdrdata.customer("acme", plan="pro"), cmdrdata.customer(None, route="/chat"):
        assert context.current() == ("acme", {"plan": "pro", "route": "/chat"})
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id=None)
    assert [e["customer_id"] for e in memory.wire()] == ["acme", "acme"]
    assert context.current() == (None, None)


def test_no_customer_as_a_decorator() -> None:
    @cmdrdata.customer(None)
    def work() -> Any:
        return context.current().customer_id

    assert work() is None


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (7, "must be a string, got int 7; pass str"),
        ({"id": 1}, "must be a string, got dict"),
        (b"acme", "must be a string, got bytes"),
        ("x" * 300, "1 to 256 printable characters"),
        ("acme\x00", "printable characters"),
    ],
)
def test_invalid_types_still_raise_at_the_with_line(bad: Any, words: str) -> None:
    with pytest.raises(ValueError, match="customer_id") as info, cmdrdata.customer(bad):
        pytest.fail("the block must not be entered")
    assert words in str(info.value)
