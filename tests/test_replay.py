"""`cmdrdata-autopatch replay` (`replay_main`) and `spool_backlog()` (what `doctor` shows)."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cmdrdata_autopatch.config import load_settings
from cmdrdata_autopatch.replay import EXIT_AUTH, EXIT_EMPTY, EXIT_LEFT, EXIT_USAGE, replay_main, spool_backlog
from cmdrdata_autopatch.spool import partition_name

from .cmdrdata_server import FakeCmdrData, Reply

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the spool needs fcntl.flock")
KEY = "tk-replay-test-key-0001"


@pytest.fixture
def server() -> Iterator[FakeCmdrData]:
    with FakeCmdrData(latency=0.05) as fake:
        yield fake


def orphan_segment(root: Path, url: str, n: int, acked: int = 0) -> list[str]:
    """A dead process's segment of `n` events, the first `acked` of them already acknowledged."""
    directory = root / partition_name(url, KEY)
    directory.mkdir(parents=True, exist_ok=True)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    lines = [
        json.dumps({"event_id": i, "timestamp": f"2026-01-01T00:00:{k % 60:02d}.000+00:00"})
        for k, i in enumerate(ids)
    ]
    segment = directory / "deadhost-1-1-00001.jsonl"
    segment.write_text("".join(line + "\n" for line in lines))
    if acked:
        (directory / "deadhost-1-1-00001.jsonl.acks").write_text("".join(i + "\n" for i in ids[:acked]))
    return ids


def args(server: FakeCmdrData, root: Path, timeout: float = 20) -> list[str]:
    return ["--api-key", KEY, "--endpoint", server.url, "--spool-dir", str(root), "--timeout", str(timeout)]


def test_backlog_counts_unacknowledged_events_read_only(server: FakeCmdrData, tmp_path: Path) -> None:
    orphan_segment(tmp_path, server.url, 30, acked=10)
    settings = load_settings(api_key=KEY, endpoint=server.url, spool_dir=str(tmp_path))
    backlog = spool_backlog(settings)
    assert backlog["events"] == 20 and backlog["segments"] == 1 and backlog["held"] == 0
    assert backlog["oldest"] == "2026-01-01T00:00:10.000+00:00"
    assert backlog["last_delivery"] is None
    assert spool_backlog(settings)["events"] == 20  # reading changed nothing
    assert spool_backlog(load_settings(exporter="jsonl"))["directory"] is None


def test_replay_sends_what_is_left_and_never_the_acknowledged(
    server: FakeCmdrData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = orphan_segment(tmp_path, server.url, 300, acked=100)
    assert replay_main(args(server, tmp_path), "replay") == EXIT_EMPTY
    out = capsys.readouterr().out
    assert "sent 200 event(s)" in out and "0 left" in out
    assert set(server.stored) == set(ids[100:])  # the acknowledged 100 were not sent again
    assert not list(tmp_path.rglob("*.jsonl"))
    settings = load_settings(api_key=KEY, endpoint=server.url, spool_dir=str(tmp_path))
    assert spool_backlog(settings)["last_delivery"] is not None
    assert replay_main(args(server, tmp_path), "replay") == EXIT_EMPTY
    assert "nothing to replay" in capsys.readouterr().out


def test_replay_with_a_rejected_key_says_so(
    server: FakeCmdrData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orphan_segment(tmp_path, server.url, 5)
    server.set_default(Reply(401))
    assert replay_main(args(server, tmp_path), "replay") == EXIT_AUTH
    out = capsys.readouterr().out
    assert "rejected the API key" in out and "5 left" in out
    assert len(list(tmp_path.rglob("*.jsonl"))) == 1  # kept for later


def test_replay_that_runs_out_of_time_reports_what_is_left(
    server: FakeCmdrData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orphan_segment(tmp_path, server.url, 20)
    server.set_default(Reply(503))
    assert replay_main(args(server, tmp_path, timeout=1), "replay") == EXIT_LEFT
    out = capsys.readouterr().out
    assert "20 left" in out and "why: HTTP 503" in out


def test_replay_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CMDRDATA_API_KEY", raising=False)
    assert replay_main(["--spool-dir", str(tmp_path)], "replay") == EXIT_USAGE
    assert "API key" in capsys.readouterr().err
    assert replay_main(["--api-key", KEY, "--timeout", "inf"], "replay") == EXIT_USAGE


def test_the_command_line_replays_and_doctor_shows_the_backlog(
    server: FakeCmdrData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the real dispatcher: `doctor --json` shows the orphaned backlog, `replay` sends it, and
    `doctor` then shows an empty spool with the time of that delivery."""
    from cmdrdata_autopatch.cli import main

    ids = orphan_segment(tmp_path, server.url, 12, acked=2)
    for name, value in (("API_KEY", KEY), ("ENDPOINT", server.url), ("SPOOL_DIR", str(tmp_path))):
        monkeypatch.setenv(f"CMDRDATA_{name}", value)
    main(["doctor", "--json", "--no-network"])
    before = json.loads(capsys.readouterr().out)["spool"]
    assert before["events"] == 10 and before["last_delivery"] is None
    assert main(["replay", "--timeout", "20"]) == EXIT_EMPTY
    assert "sent 10 event(s)" in capsys.readouterr().out
    assert set(server.stored) == set(ids[2:])
    main(["doctor", "--json", "--no-network"])
    after = json.loads(capsys.readouterr().out)["spool"]
    assert after["events"] == 0 and after["last_delivery"] is not None
