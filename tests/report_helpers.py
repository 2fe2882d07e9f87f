"""What the report tests share: wire events as the exporter writes them, and a child without genai-prices.

The report is a separate process reading files, so the tests drive it the way a person does: write a JSONL
file, run `cmdrdata-autopatch report`, read what it printed. `without_prices` gives that child a
`genai_prices` that cannot be imported, the state of a machine without the `prices` extra (or on
Python < 3.11), whatever the test's own environment has installed.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from .apps.harness import console_script

REPORT = [*console_script("cmdrdata-autopatch"), "report"]


def wire(
    customer: str | None, model: str, inp: int, out: int, cached: int = 0, reasoning: int = 0, **kw: Any
) -> dict[str, Any]:
    """One wire event (DESIGN.md section 4) with the fields the report reads; `kw` adds or overrides."""
    return {
        "event_id": str(uuid.uuid4()),
        "customer_id": customer,
        "provider": "openai",
        "model": model,
        "api": "chat.completions",
        "input_tokens": inp,
        "output_tokens": out,
        "total_tokens": inp + out,
        "cached_input_tokens": cached,
        "reasoning_tokens": reasoning,
        "usage_source": "reported",
        "error_occurred": False,
        **kw,
    }


def write_jsonl(path: Path, events: list[dict[str, Any]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + tail)
    return path


def without_prices(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """`env` for a child in which `import genai_prices` fails, as when the extra is not installed."""
    shim = tmp_path / "no-genai-prices" / "genai_prices"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text("raise ImportError('genai-prices is not installed (test shim)')\n")
    return {**env, "PYTHONPATH": str(shim.parent)}


def prose(text: str) -> str:
    """The report's output with its notes unwrapped (filled to 110 columns), to search it for phrases."""
    return " ".join(text.split())
