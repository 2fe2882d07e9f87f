"""The command line: `cmdrdata-run --info`, `cmdrdata-autopatch run|doctor`, help texts and exit codes.

Run as real commands (the console scripts of this interpreter) so what is tested is what a user types.
`doctor`'s endpoint check talks only to a server this test starts on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from .apps.harness import CHAT_APP, RecordingServer, clean_env, console_script, events, run

CLI = console_script("cmdrdata-autopatch")
CMDRDATA_RUN = console_script("cmdrdata-run")
SECRET = "tk-live-0123456789abcdefXYZW"


def doctor(env: dict[str, str], *args: str) -> tuple[int, dict]:
    result = run([*CLI, "doctor", "--json", *args], env)
    assert SECRET not in result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.parametrize(
    "command",
    [
        [*CLI, "--help"],
        [*CLI, "doctor", "--help"],
        [*CLI, "report", "--help"],
        [*CLI, "run", "--help"],
        [*CMDRDATA_RUN, "--help"],
    ],
)
def test_help(command: list[str], tmp_path: Path) -> None:
    result = run(command, clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    assert run([*CLI], env).returncode == 2
    assert run([*CLI, "frobnicate"], env).returncode == 2
    assert run([*CLI, "doctor", "--bogus"], env).returncode == 2
    assert run([*CMDRDATA_RUN, "--bogus", "python"], env).returncode == 2
    version = run([*CLI, "--version"], env)
    assert version.returncode == 0 and "cmdrdata-autopatch" in version.stdout


def test_run_subcommand_is_the_launcher(tmp_path: Path) -> None:
    result = run([*CLI, "run", sys.executable, str(CHAT_APP)], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "tracked=True" in result.stdout
    assert len(events(tmp_path)) == 1
    assert run([*CLI, "run", "no-such-command-cmdrdata-test"], clean_env(tmp_path)).returncode == 127


def test_info_masks_the_key_and_validates(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    del env["CMDRDATA_EXPORTER"]
    result = run(
        [*CMDRDATA_RUN, "--api-key", SECRET, "--customer-id", "acme", "--info", "python", "app.py"], env
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout and "****XYZW" in result.stdout
    assert "acme" in result.stdout and "http" in result.stdout  # a key makes the http exporter the default
    bad = run([*CMDRDATA_RUN, "--exporter", "carrier-pigeon", "--info"], env)
    assert bad.returncode == 1 and "CMDRDATA_EXPORTER" in bad.stdout


def test_doctor_offline_defaults(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    del env["CMDRDATA_EXPORTER"]
    code, data = doctor(env)
    assert code == 0, data["problems"]
    assert data["ok"] is True
    import openai

    from cmdrdata_autopatch.targets import VERIFIED_UP_TO

    assert data["openai"]["version"] == openai.__version__
    assert data["openai"]["verified_up_to"] == VERIFIED_UP_TO
    statuses = {row["status"] for row in data["targets"]}
    assert "patched" in statuses and statuses <= {"patched", "not in this version"}
    assert data["settings"]["exporter"] == "jsonl"
    assert data["exporter"] == {"name": "jsonl", "destination": str(tmp_path / "usage.jsonl")}
    assert data["endpoint_check"]["checked"] is False  # no key: no request at all
    text = run([*CLI, "doctor"], env)
    assert text.returncode == 0 and "OK: no problems found" in text.stdout


def test_doctor_checks_the_endpoint_without_sending_an_event(tmp_path: Path, server: RecordingServer) -> None:
    env = clean_env(tmp_path, CMDRDATA_API_KEY=SECRET, CMDRDATA_ENDPOINT=server.url, CMDRDATA_EXPORTER="http")
    code, data = doctor(env)
    assert code == 0, data["problems"]
    assert data["settings"]["api_key"] == "****XYZW"
    assert data["exporter"] == {"name": "http", "destination": server.url}
    assert data["endpoint_check"]["ok"] is True and data["endpoint_check"]["status"] == 200
    assert [r["method"] for r in server.requests] == ["GET"]  # one request, no event posted
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"

    server.status = 401
    code, data = doctor(env)
    assert code == 1
    assert data["endpoint_check"]["status"] == 401
    assert any("refuses the API key" in p for p in data["problems"])

    code, data = doctor(env, "--no-network")
    assert code == 0 and data["endpoint_check"]["detail"] == "skipped"


def test_doctor_unreachable_endpoint(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = clean_env(
        tmp_path,
        CMDRDATA_API_KEY=SECRET,
        CMDRDATA_ENDPOINT=f"http://127.0.0.1:{port}/api/events",
        CMDRDATA_EXPORTER="http",
    )
    code, data = doctor(env, "--timeout", "1")
    assert code == 1
    assert data["endpoint_check"]["ok"] is False and "no answer" in data["endpoint_check"]["detail"]


def test_doctor_reports_a_bad_setting(tmp_path: Path) -> None:
    code, data = doctor(clean_env(tmp_path, CMDRDATA_FLUSH_INTERVAL="soon"))
    assert code == 1
    assert data["settings"] is None
    assert any("CMDRDATA_FLUSH_INTERVAL" in p and "'soon'" in p for p in data["problems"])
