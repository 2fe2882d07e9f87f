"""Subprocess helpers for the activation, CLI and report tests.

Every route is tested in a real child process: start-up hooks (`sitecustomize`, `.pth` lines) only run when
an interpreter starts, so an in-process test could not tell whether they work. Children get a clean
environment: no `CMDRDATA_*` from the developer's shell, the jsonl exporter writing to a temporary file,
the spool in a temporary directory, and no network (the apps answer from an in-memory transport).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

APPS_DIR = Path(__file__).resolve().parent
REPO_ROOT = APPS_DIR.parent.parent
CHAT_APP = APPS_DIR / "chat_app.py"
BIN_DIR = Path(sys.executable).parent
TIMEOUT = 60


def console_script(name: str) -> list[str]:
    """The installed console script, or the same entry point through `python -m` when it is not installed."""
    for candidate in (BIN_DIR / name, BIN_DIR / f"{name}.exe"):
        if candidate.exists():
            return [str(candidate)]
    function = "run_main" if name == "cmdrdata-run" else "main"
    return [
        sys.executable,
        "-c",
        f"import sys; from cmdrdata_autopatch.cli import {function}; sys.exit({function}())",
    ]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The parent's environment without CMDRDATA_* / PYTHONPATH, plus local jsonl delivery into tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMDRDATA_") and k != "PYTHONPATH"}
    env.update(
        CMDRDATA_EXPORTER="jsonl",
        CMDRDATA_JSONL_PATH=str(tmp_path / "usage.jsonl"),
        CMDRDATA_SPOOL_DIR=str(tmp_path / "spool"),
        CMDRDATA_CUSTOMER_ID="env-customer",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


def run(
    args: Sequence[str], env: Mapping[str, str], cwd: Path | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), env=dict(env), cwd=str(cwd or REPO_ROOT), capture_output=True, text=True, timeout=timeout
    )


def events(tmp_path: Path) -> list[dict[str, Any]]:
    """The events the children wrote to the jsonl file (none if it does not exist)."""
    path = tmp_path / "usage.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("cmdrdata-autopatch: warning")]


class RecordingServer:
    """A CmdrData stand-in on 127.0.0.1 (never any other address): records each request, answers `status`."""

    def __init__(self, status: int = 200) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.status = status
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                payload = b'{"ok": true}'
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/api/events"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def events(self) -> list[dict[str, Any]]:
        """The JSON bodies that were POSTed."""
        return [json.loads(r["body"]) for r in self.requests if r["method"] == "POST" and r["body"]]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
