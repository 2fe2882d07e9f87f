"""One call per table row, as an application would make it, with what its event must say.

Used by the call tests (sync and async, every row) so that adding a row to the table and a line here is
all it takes to test a new endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from cmdrdata_autopatch.targets import parse_version

from .fake_openai import OPENAI_VERSION

AUDIO = ("speech.mp3", b"ID3" + b"\x00" * 64, "audio/mpeg")
PNG = ("img.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, "image/png")
MESSAGES = [{"role": "user", "content": "Say hello"}]


@dataclass
class Endpoint:
    name: str
    api: str
    first: str
    last: Optional[str]
    call: Callable[[Any], Any]  # client -> result (or awaitable on async clients)
    expect: dict[str, Any]
    consume: Callable[[Any], Any] | None = None  # what the app does with the result

    def available(self) -> bool:
        if parse_version(self.first) > OPENAI_VERSION:
            return False
        return self.last is None or parse_version(self.last) >= OPENAI_VERSION


CHAT_EXPECT = {
    "input_tokens": 11,
    "output_tokens": 7,
    "total_tokens": 18,
    "usage_source": "reported",
    "model": "gpt-4o-2024-08-06",
    # the details arrive as dicts on old SDKs and as models on new ones: both must be read
    "cached_input_tokens": 3,
    "reasoning_tokens": 2,
}

RESP_EXPECT = {
    "input_tokens": 21,
    "output_tokens": 9,
    "total_tokens": 30,
    "cached_input_tokens": 4,
    "reasoning_tokens": 5,
    "usage_source": "reported",
    "model": "gpt-4.1-2025-04-14",
}


ENDPOINTS = [
    Endpoint(
        "chat.create",
        "chat.completions",
        "1.0.0",
        None,
        lambda c: c.chat.completions.create(model="gpt-4o", messages=MESSAGES),
        CHAT_EXPECT,
    ),
    Endpoint(
        "chat.parse",
        "chat.completions",
        "1.92.0",
        None,
        lambda c: c.chat.completions.parse(model="gpt-4o", messages=MESSAGES),
        CHAT_EXPECT,
    ),
    Endpoint(
        "beta.chat.parse",
        "chat.completions",
        "1.40.0",
        "1.91.0",
        lambda c: c.beta.chat.completions.parse(model="gpt-4o", messages=MESSAGES),
        CHAT_EXPECT,
    ),
    Endpoint(
        "completions.create",
        "completions",
        "1.0.0",
        None,
        lambda c: c.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello"),
        {
            "input_tokens": 11,
            "output_tokens": 7,
            "model": "gpt-3.5-turbo-instruct",
            "usage_source": "reported",
        },
    ),
    Endpoint(
        "edits.create",
        "edits",
        "1.0.0",
        "1.7.1",
        lambda c: c.edits.create(model="text-davinci-edit-001", input="teh", instruction="fix"),
        {"input_tokens": 4, "output_tokens": 2, "usage_source": "reported"},
    ),
    Endpoint(
        "embeddings.create",
        "embeddings",
        "1.0.0",
        None,
        lambda c: c.embeddings.create(model="text-embedding-3-small", input="hello"),
        {"input_tokens": 6, "output_tokens": 0, "total_tokens": 6, "model": "text-embedding-3-small"},
    ),
    Endpoint(
        "responses.create",
        "responses",
        "1.66.0",
        None,
        lambda c: c.responses.create(model="gpt-4.1", input="Say hello"),
        RESP_EXPECT,
    ),
    Endpoint(
        "responses.parse",
        "responses",
        "1.66.0",
        None,
        lambda c: c.responses.parse(model="gpt-4.1", input="Say hello"),
        RESP_EXPECT,
    ),
    Endpoint(
        "beta.responses.create",
        "responses",
        "2.45.0",
        None,
        lambda c: c.beta.responses.create(model="gpt-4.1", input="Say hello"),
        RESP_EXPECT,
    ),
    Endpoint(
        "images.generate",
        "images",
        "1.0.0",
        None,
        lambda c: c.images.generate(prompt="a cat"),
        {"input_tokens": 50, "output_tokens": 4000, "usage_source": "reported", "units": {"images": 2}},
    ),
    Endpoint(
        "images.edit",
        "images",
        "1.0.0",
        None,
        lambda c: c.images.edit(image=PNG, prompt="add a hat"),
        {"input_tokens": 50, "output_tokens": 4000, "usage_source": "reported", "units": {"images": 2}},
    ),
    Endpoint(
        "images.create_variation",
        "images",
        "1.0.0",
        None,
        lambda c: c.images.create_variation(image=PNG),
        {"input_tokens": 0, "usage_source": "estimated", "units": {"images": 2}},
    ),
    Endpoint(
        "audio.transcriptions.create",
        "audio.transcriptions",
        "1.0.0",
        None,
        lambda c: c.audio.transcriptions.create(file=AUDIO, model="whisper-1"),
        {"usage_source": "reported", "units": {"audio_seconds": 7.5}, "model": "whisper-1"},
    ),
    Endpoint(
        "audio.translations.create",
        "audio.translations",
        "1.0.0",
        None,
        lambda c: c.audio.translations.create(file=AUDIO, model="whisper-1"),
        {"usage_source": "none", "input_tokens": 0, "model": "whisper-1"},
    ),
    Endpoint(
        "audio.speech.create",
        "audio.speech",
        "1.1.0",
        None,
        lambda c: c.audio.speech.create(model="tts-1", voice="alloy", input="Hello world, twenty chars"),
        {"usage_source": "estimated", "units": {"characters": 25}, "input_tokens": 7, "model": "tts-1"},
    ),
]


def available_endpoints() -> list[Endpoint]:
    return [e for e in ENDPOINTS if e.available()]
