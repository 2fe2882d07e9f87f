"""Shared test helpers: waiting without sleeping blindly, child Python processes, the accounting law.

Kept out of the package (the first release shipped `assert_invariant` inside it): nothing here is needed
by an application.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Optional

from cmdrdata_autopatch.events import UsageEvent

REPO = str(Path(__file__).resolve().parents[1])


def eventually(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll `predicate` until it is truthy or `timeout` passes; returns whether it became true.

    Generous timeouts are fine: a passing test returns as soon as the condition holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child Python: ours without CMDRDATA_*, the repo on the path, plus `env`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("CMDRDATA_")}
    full["PYTHONPATH"] = REPO + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env or {})
    return full


def run_python(
    code: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `code` (dedented) in a child Python with a hard timeout; capture its output."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_python(code: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `code` in a child Python (for tests that signal or kill it); stdout/stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def make_event(i: int = 0, customer: str = "c1", metadata: Optional[dict[str, Any]] = None) -> UsageEvent:
    """A chat event billed to `customer`, with `i` output tokens (tells events apart in assertions)."""
    event = UsageEvent("chat.completions", time.time(), 0.01, customer_id=customer, metadata=metadata)
    event.input_tokens = 5
    event.output_tokens = i
    return event


def assert_invariant(stats: dict[str, Any]) -> None:
    """Raise AssertionError unless the conservation law holds (call it at quiescent points)."""
    accounted = (
        stats["delivered"]
        + sum(stats["dropped"].values())
        + stats["queued"]
        + stats["in_flight"]
        + stats["spool_pending"]
    )
    if stats["recorded"] != accounted:
        raise AssertionError(f"recorded={stats['recorded']} but accounted={accounted}: {stats}")
