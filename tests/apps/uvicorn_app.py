"""An unmodified FastAPI app (it never imports cmdrdata_autopatch): each request makes one OpenAI call.

Run by the signal tests as `cmdrdata-run python -m uvicorn uvicorn_app:app --uds <socket>`: uvicorn installs
its own SIGTERM handler, shuts down gracefully, restores the handler it found and re-raises the signal.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _mock
from fastapi import FastAPI

app = FastAPI()
_client = _mock.client()


@app.get("/chat")
def chat() -> dict[str, str]:
    reply = _client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    return {"answer": str(reply.choices[0].message.content)}
