"""What the command-line tests share: the commands as a user types them, and a reader that leaves at once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from .apps.harness import REPO_ROOT, TIMEOUT, console_script

CLI = console_script("cmdrdata-autopatch")
CMDRDATA_RUN = console_script("cmdrdata-run")
PYTHON_M = [sys.executable, "-m", "cmdrdata_autopatch"]


def run_into_closed_pipe(args: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command whose stdout is a pipe nobody reads any more (`cmd | head -0`), deterministically.

    The read end is closed before the child starts, so its first write fails with EPIPE: no race with
    how much a real `head` would have read first.
    """
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            list(args),
            env=dict(env),
            cwd=str(REPO_ROOT),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
        )
    finally:
        os.close(write_end)


def assert_quiet_exit(stderr: str) -> None:
    """Nothing on stderr about the closed pipe: no traceback, no "Exception ignored" at interpreter exit."""
    for marker in ("Traceback", "BrokenPipeError", "Exception ignored", "Broken pipe"):
        assert marker not in stderr, stderr
