"""`cmdrdata-autopatch doctor`: versions, the patch table, configuration, destinations, the endpoint check.

Run as a real command (the console script of this interpreter) so what is tested is what a user types; the
endpoint check talks only to a server the test starts on 127.0.0.1. The pure parts (the jsonl path check,
the spool seam) are also called in-process, where a case is easier to build than through the environment.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from cmdrdata_autopatch import doctor as doc
from cmdrdata_autopatch.config import load_settings

from .apps.harness import RecordingServer, clean_env, run
from .cli_helpers import CLI, assert_quiet_exit, run_into_closed_pipe

SECRET = "tk-live-0123456789abcdefXYZW"


def doctor(env: dict[str, str], *args: str) -> tuple[int, dict]:
    result = run([*CLI, "doctor", "--json", *args], env)
    assert SECRET not in result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


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


def test_doctor_reports_a_bad_billing_setting_as_a_problem(tmp_path: Path) -> None:
    code, data = doctor(clean_env(tmp_path, CMDRDATA_EXPORTER="kafak"), "--no-network")
    assert code == 1
    assert data["settings"] is None
    assert any("CMDRDATA_EXPORTER='kafak'" in p and "none" in p for p in data["problems"]), data["problems"]


def test_doctor_lists_cosmetic_values_unknown_names_and_flag_typos(tmp_path: Path) -> None:
    env = clean_env(tmp_path, CMDRDATA_FLUSH_INTERVAL="soon", CMDRDATA_APIKEY="x", CMDRDATA_AUTOPATCH="ture")
    code, data = doctor(env, "--no-network")
    assert code == 0, data["problems"]  # tracking would stay on: warnings, not problems
    assert data["settings"]["flush_interval"] == 0.1  # the default, used instead
    notes = data["settings_notes"]
    assert any("CMDRDATA_FLUSH_INTERVAL='soon'" in n and "using the default (0.1)" in n for n in notes)
    assert any("CMDRDATA_APIKEY" in n and "did you mean CMDRDATA_API_KEY?" in n for n in notes), notes
    assert any("CMDRDATA_AUTOPATCH='ture'" in n and "did you mean 'true'?" in n for n in notes), notes
    assert set(notes) <= set(data["warnings"])
    text = run([*CLI, "doctor", "--no-network"], env).stdout
    assert "did you mean CMDRDATA_API_KEY?" in text


def test_doctor_shows_service_and_environment(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path, OTEL_SERVICE_NAME="billing-api", OTEL_RESOURCE_ATTRIBUTES="deployment.environment=prod"
    )
    code, data = doctor(env, "--no-network")
    assert code == 0, data["problems"]
    assert (data["settings"]["service"], data["settings"]["environment"]) == ("billing-api", "prod")
    text = run([*CLI, "doctor", "--no-network"], clean_env(tmp_path, CMDRDATA_SERVICE="svc")).stdout
    assert "service         svc" in text


def test_json_into_a_closed_pipe_is_quiet_and_keeps_the_verdict(tmp_path: Path) -> None:
    # `doctor --json | head`: the reader leaves before the (large) output is written.
    env = clean_env(tmp_path)
    result = run_into_closed_pipe([*CLI, "doctor", "--json", "--no-network"], env)
    assert result.returncode == 0
    assert_quiet_exit(result.stderr)
    bad = run_into_closed_pipe([*CLI, "doctor", "--no-network"], clean_env(tmp_path, CMDRDATA_EXPORTER="x"))
    assert bad.returncode == 1  # the findings decide the status, not the reader
    assert_quiet_exit(bad.stderr)


def test_a_file_where_the_jsonl_directory_should_be_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    env = clean_env(tmp_path, CMDRDATA_JSONL_PATH=str(blocker / "usage" / "u.jsonl"))
    code, data = doctor(env, "--no-network")
    assert code == 1
    assert any(f"{blocker} is a file, not a directory" in p for p in data["problems"]), data["problems"]
    assert not any("File exists" in p or "Not a directory" in p for p in data["problems"])


def test_jsonl_path_problem(tmp_path: Path) -> None:
    assert doc.jsonl_path_problem(str(tmp_path / "u.jsonl")) is None
    missing = doc.jsonl_path_problem(str(tmp_path / "new" / "deeper" / "u.jsonl"))  # never created for it
    assert missing is not None and f"the directory {tmp_path / 'new' / 'deeper'} does not exist" in missing
    (tmp_path / "u.jsonl").write_text("")
    assert doc.jsonl_path_problem(str(tmp_path / "u.jsonl")) is None
    problem = doc.jsonl_path_problem(str(tmp_path))
    assert problem is not None and "is a directory, not a file" in problem
    problem = doc.jsonl_path_problem(str(tmp_path / "u.jsonl" / "x.jsonl"))
    assert problem is not None and f"{tmp_path / 'u.jsonl'} is a file, not a directory" in problem


def test_jsonl_path_problem_unwritable_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated: as root (CI containers) a read-only directory is writable, so chmod could not show it.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(path: Any, mode: int, **kw: Any) -> bool:
        return False if os.fspath(path) == str(locked) else real_access(path, mode, **kw)

    monkeypatch.setattr(doc.os, "access", access)
    problem = doc.jsonl_path_problem(str(locked / "u.jsonl"))
    assert problem == f"the jsonl exporter cannot write to {locked} (not writable)"
    assert doc.jsonl_path_problem(str(tmp_path / "u.jsonl")) is None


def fake_replay(monkeypatch: pytest.MonkeyPatch, backlog: Any) -> list[Any]:
    """Stand in for the delivery rebuild's `cmdrdata_autopatch.replay` (the seam doctor asks)."""
    calls: list[Any] = []

    def spool_backlog(settings: Any) -> Any:
        calls.append(settings)
        if isinstance(backlog, BaseException):
            raise backlog
        return backlog

    module = types.ModuleType("cmdrdata_autopatch.replay")
    module.spool_backlog = spool_backlog  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cmdrdata_autopatch.replay", module)
    return calls


def test_spool_backlog_is_shown_with_a_warning_when_events_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(environ={"CMDRDATA_SPOOL_DIR": "/nonexistent/spool"})
    backlog = {doc.BACKLOG_COUNT_KEY: 3, "bytes": 900, "last_delivery": "2026-12-01T02:00:00.000+00:00"}
    calls = fake_replay(monkeypatch, backlog)
    diag = doc.Diagnosis()
    doc.delivery_facts(diag, settings)
    assert calls == [settings]
    assert diag.data["spool"] == backlog
    assert any("3 event(s) wait in the spool" in w for w in diag.warnings)
    assert not diag.problems  # a backlog is delivery's business, not a broken installation


def test_empty_spool_and_failing_spool_read(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(environ={})
    fake_replay(monkeypatch, {doc.BACKLOG_COUNT_KEY: 0})
    diag = doc.Diagnosis()
    doc.delivery_facts(diag, settings)
    assert diag.data["spool"] == {doc.BACKLOG_COUNT_KEY: 0} and not diag.warnings

    fake_replay(monkeypatch, OSError(f"permission denied reading Bearer {SECRET}"))
    diag = doc.Diagnosis()
    doc.delivery_facts(diag, settings)
    assert diag.data["spool"] is None and not diag.problems
    assert len(diag.warnings) == 1 and "the spool could not be read: OSError" in diag.warnings[0]
    assert SECRET not in diag.warnings[0]


def test_without_settings_the_spool_is_not_checked() -> None:
    diag = doc.Diagnosis()
    doc.delivery_facts(diag, None)  # invalid settings: nothing to ask
    assert diag.data["spool"] is None


def test_text_output_lists_every_section(tmp_path: Path) -> None:
    result = run([*CLI, "doctor", "--no-network"], clean_env(tmp_path))
    assert result.returncode == 0, result.stdout
    for heading in ("openai: ", "patch table:", "configuration:", "exporter: jsonl ->", "spool: ", ".pth"):
        assert heading in result.stdout
