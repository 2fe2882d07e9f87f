"""Quickstart: a small multi-customer app whose OpenAI usage is metered per customer.

Two ways to run it (the app is the same; only how tracking is switched on differs):

    cmdrdata-run python examples/quickstart.py     # no code change: the launcher patches the process
    python examples/quickstart.py --patch          # or the app calls cmdrdata.patch() itself

With OPENAI_API_KEY set it calls OpenAI. Without it, the client answers from a canned local transport, so the
whole flow (chat, a streamed chat, an embedding, four customers) runs offline on a fresh machine and nothing
leaves it. Without a CMDRDATA_API_KEY the events go to ./cmdrdata-usage.jsonl; summarize them with

    cmdrdata-autopatch report
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import openai

import cmdrdata_autopatch as cmdrdata

CHAT_MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"


# ------------------------------------------------------------------------ the offline stand-in for OpenAI


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)  # roughly OpenAI's ratio for English; good enough for a demo


def _canned(request: Any, response_cls: Any) -> Any:
    """Answer like the OpenAI API: chat (plain or streamed, usage included when asked) and embeddings."""
    body = json.loads(request.content or b"{}")
    path = request.url.path
    if path.endswith("/embeddings"):
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        n = sum(_tokens(str(text)) for text in inputs)
        return response_cls(
            200,
            json={
                "object": "list",
                "model": body["model"],
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.01] * 8} for i in range(len(inputs))
                ],
                "usage": {"prompt_tokens": n, "total_tokens": n},
            },
        )
    if not path.endswith("/chat/completions"):
        return response_cls(404, json={"error": {"message": f"{path} is not canned", "type": "not_found"}})
    prompt = " ".join(str(m.get("content", "")) for m in body["messages"])
    answer = f"(canned answer) You asked: {prompt[:60]}"
    usage = {
        "prompt_tokens": _tokens(prompt) + 7,
        "completion_tokens": _tokens(answer),
        "total_tokens": _tokens(prompt) + 7 + _tokens(answer),
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    base = {"id": "chatcmpl-quickstart", "created": 1700000000, "model": "gpt-4o-mini-2024-07-18"}
    if not body.get("stream"):
        message = {"role": "assistant", "content": answer}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return response_cls(
            200, json={**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        )
    chunk = {**base, "object": "chat.completion.chunk"}
    events = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    events += [{**chunk, "choices": [{"index": 0, "delta": {"content": w + " "}}]} for w in answer.split()]
    events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({**chunk, "choices": [], "usage": usage})
    sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return response_cls(200, headers={"content-type": "text/event-stream"}, content=sse.encode())


def make_client() -> openai.OpenAI:
    """The real OpenAI with OPENAI_API_KEY; otherwise the same SDK client over the canned transport."""
    if os.environ.get("OPENAI_API_KEY"):
        print("OPENAI_API_KEY is set: calling the OpenAI API.")
        return openai.OpenAI()
    if int(openai.__version__.split(".")[0]) >= 3:  # openai >= 3 speaks httpx2, older releases httpx
        import httpx2 as httpx_mod
    else:
        import httpx as httpx_mod  # type: ignore[no-redef]
    print("OPENAI_API_KEY is not set: answering from a canned local transport (offline demo, no network).")
    transport = httpx_mod.MockTransport(lambda request: _canned(request, httpx_mod.Response))
    return openai.OpenAI(api_key="sk-offline-demo", http_client=httpx_mod.Client(transport=transport))


# --------------------------------------------------------------------------------------------- the app


def summarize_ticket(client: openai.OpenAI, ticket: str) -> str:
    reply = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": f"Summarize this support ticket: {ticket}"}]
    )
    return reply.choices[0].message.content or ""


def draft_reply_streamed(client: openai.OpenAI, question: str) -> str:
    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": question}], stream=True
    )
    parts = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts).strip()


def index_documents(client: openai.OpenAI, documents: list[str]) -> int:
    result = client.embeddings.create(model=EMBEDDING_MODEL, input=documents)
    return len(result.data)


def main(argv: list[str]) -> int:
    if "--patch" in argv and not cmdrdata.is_patched():
        cmdrdata.patch()  # the in-code route; under cmdrdata-run the process is already patched
    tracked = cmdrdata.is_patched()
    client = make_client()

    # Each customer's work runs inside `with cmdrdata.customer(...)`: every call in the block is billed to it.
    with cmdrdata.customer("acme-corp", plan="pro"):
        print("acme-corp  summary:", summarize_ticket(client, "Invoice 1042 was charged twice."))
    with cmdrdata.customer("globex", plan="starter"):
        print("globex     stream: ", draft_reply_streamed(client, "How do I rotate my API key?"))
    with cmdrdata.customer("initech", plan="enterprise"):
        print(
            "initech    indexed:",
            index_documents(client, ["TPS report cover sheets", "Stapler policy"]),
            "docs",
        )
    if tracked:  # per call, without a block (the keyword exists only when tracking is on; the SDK's type
        # stubs do not know it, hence the ignore for type checkers)
        reply = client.chat.completions.create(  # type: ignore[call-overload]
            model=CHAT_MODEL, messages=[{"role": "user", "content": "Say hi"}], customer_id="umbrella"
        )
        print("umbrella   reply:  ", reply.choices[0].message.content)

    if not tracked:
        print(
            "\nTracking is OFF for this run. Run it as `cmdrdata-run python examples/quickstart.py` "
            "(no code change) or `python examples/quickstart.py --patch`."
        )
        return 0
    cmdrdata.flush()
    settings = cmdrdata.current_settings()
    where = {"jsonl": getattr(settings, "jsonl_path", ""), "http": getattr(settings, "endpoint", "")}
    exporter = getattr(settings, "exporter", "?")
    print(f"\nTracked: 4 calls for 4 customers -> {exporter} {where.get(exporter, '')}".rstrip())
    if exporter == "jsonl":
        print("See the usage per customer and model with: cmdrdata-autopatch report")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
