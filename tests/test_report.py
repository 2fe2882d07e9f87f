"""`cmdrdata-autopatch report`: per-customer and per-model usage from the local JSONL file.

The file is what the jsonl exporter writes (one wire event per line); these tests write such lines
themselves so each rule is visible: grouping, totals, a torn last line, duplicates, the default path and
the exit codes, several files and stdin, the time range, CSV and JSON. `test_report_of_a_real_run` closes
the loop with a file written by a tracked program.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from .apps.harness import CHAT_APP, REPO_ROOT, TIMEOUT, clean_env, console_script, run
from .cli_helpers import assert_quiet_exit, run_into_closed_pipe
from .report_helpers import REPORT, wire, without_prices, write_jsonl


def report_json(args: list[str], env: dict[str, str]) -> tuple[int, dict]:
    result = run([*REPORT, *args, "--json"], env)
    return result.returncode, (json.loads(result.stdout) if result.stdout.strip() else {})


def test_groups_by_customer_and_model_with_totals(tmp_path: Path) -> None:
    dup = wire("acme", "gpt-4o", 100, 10, cached=40)
    events = [
        wire("acme", "gpt-4o", 10, 5, cached=2, reasoning=1),
        dup,
        dup,  # the same event written twice (a replay): counted once
        wire("globex", "gpt-4o-mini", 7, 3, reasoning=4),
        wire(None, "text-embedding-3-small", 8, 0, api="embeddings"),
        wire("globex", "gpt-4o-mini", 0, 0, error_occurred=True, usage_source="none"),
    ]
    path = write_jsonl(tmp_path / "u.jsonl", events)
    code, data = report_json([str(path)], clean_env(tmp_path))
    assert code == 0
    assert data["events"] == 5 and data["skipped"]["duplicates"] == 1
    by_customer = {row["customer_id"]: row for row in data["by_customer"]}
    assert by_customer["acme"]["calls"] == 2
    assert by_customer["acme"]["input_tokens"] == 110 and by_customer["acme"]["output_tokens"] == 15
    assert by_customer["acme"]["cached_input_tokens"] == 42 and by_customer["acme"]["reasoning_tokens"] == 1
    assert by_customer["globex"]["calls"] == 2 and by_customer["globex"]["errors"] == 1
    assert by_customer["(none)"]["input_tokens"] == 8
    by_model = {row["model"]: row for row in data["by_model"]}
    assert by_model["gpt-4o-mini"]["reasoning_tokens"] == 4
    totals = data["totals"]
    assert totals["calls"] == 5
    assert (totals["input_tokens"], totals["output_tokens"]) == (125, 18)
    assert (totals["cached_input_tokens"], totals["reasoning_tokens"]) == (42, 5)
    assert totals["total_tokens"] == 143


def test_torn_last_line_is_tolerated(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "u.jsonl", [wire("acme", "gpt-4o", 1, 2)], tail='{"event_id": "x", "inp')
    code, data = report_json([str(path)], clean_env(tmp_path))
    assert code == 0
    assert (
        data["events"] == 1 and data["skipped"]["torn_last_line"] == 1 and data["skipped"]["bad_lines"] == 0
    )
    result = run([*REPORT, str(path)], clean_env(tmp_path))
    assert result.returncode == 0 and "incomplete last line" in result.stdout


def test_corrupt_line_in_the_middle_is_skipped_and_said(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    path.write_text(
        json.dumps(wire("a", "m", 1, 1)) + "\nnot json\n" + json.dumps(wire("b", "m", 2, 2)) + "\n"
    )
    result = run([*REPORT, str(path), "--json"], clean_env(tmp_path))
    assert result.returncode == 0
    assert json.loads(result.stdout)["events"] == 2
    assert "1 undecodable line" in result.stderr


def test_default_path_comes_from_the_environment(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "usage.jsonl", [wire("acme", "gpt-4o", 3, 4)])
    code, data = report_json([], clean_env(tmp_path))  # CMDRDATA_JSONL_PATH=<tmp>/usage.jsonl
    assert code == 0 and data["totals"]["calls"] == 1
    env = clean_env(tmp_path)
    del env["CMDRDATA_JSONL_PATH"]
    write_jsonl(tmp_path / "cmdrdata-usage.jsonl", [wire("x", "m", 1, 1), wire("y", "m", 1, 1)])
    result = run([*REPORT, "--json"], env, cwd=tmp_path)  # ./cmdrdata-usage.jsonl
    assert result.returncode == 0 and json.loads(result.stdout)["totals"]["calls"] == 2


def test_exit_codes(tmp_path: Path) -> None:
    missing = run([*REPORT, str(tmp_path / "nope.jsonl")], clean_env(tmp_path))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    code, data = report_json([str(empty)], clean_env(tmp_path))
    assert code == 0 and data["events"] == 0 and data["totals"]["calls"] == 0
    assert run([*REPORT, "--no-such-option"], clean_env(tmp_path)).returncode == 2
    help_ = run([*REPORT, "--help"], clean_env(tmp_path))
    assert help_.returncode == 0 and "Exit status" in help_.stdout


def test_text_table(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "u.jsonl", [wire("acme", "gpt-4o", 1200, 300, cached=100)])
    result = run([*REPORT, str(path)], clean_env(tmp_path))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["acme", "1"] and "1200" in line for line in lines)
    assert any(line.strip().startswith("TOTAL") and "1500" in line for line in lines)
    for heading in ("by customer:", "by model:", "cached", "reasoning"):
        assert heading in result.stdout


def test_report_of_a_real_run(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    ran = run([*console_script("cmdrdata-run"), sys.executable, str(CHAT_APP), "--spawn-child"], env)
    assert ran.returncode == 0, ran.stderr
    code, data = report_json([], env)
    assert code == 0
    assert {row["customer_id"] for row in data["by_customer"]} == {"env-customer", "child-customer"}
    assert data["totals"]["input_tokens"] == 22 and data["totals"]["output_tokens"] == 14


def run_with_stdin(args: list[str], env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REPORT, *args],
        env=env,
        cwd=str(REPO_ROOT),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_several_files_and_stdin_are_one_report(tmp_path: Path) -> None:
    shared = wire("acme", "gpt-4o", 100, 10)  # in two files (a replay wrote it again): counted once
    first = write_jsonl(tmp_path / "a.jsonl", [shared, wire("acme", "gpt-4o", 1, 1)])
    second = write_jsonl(tmp_path / "b.jsonl", [shared, wire("globex", "gpt-4o", 5, 5)])
    piped = json.dumps(wire("initech", "gpt-4o-mini", 7, 0)) + "\n" + json.dumps(shared) + "\n"
    result = run_with_stdin([str(first), "-", str(second), "--json"], clean_env(tmp_path), piped)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["files"] == [str(first), "<stdin>", str(second)] and data["file"] is None
    assert data["events"] == 4 and data["skipped"]["duplicates"] == 2
    assert {row["customer_id"] for row in data["by_customer"]} == {"acme", "globex", "initech"}
    assert data["totals"]["input_tokens"] == 113

    alone = run_with_stdin(["-", "--json"], clean_env(tmp_path), "garbage\n" + piped)
    assert alone.returncode == 0 and json.loads(alone.stdout)["file"] == "<stdin>"
    assert json.loads(alone.stdout)["events"] == 2
    assert "1 undecodable line(s) in <stdin>" in alone.stderr


def test_one_unreadable_file_fails_the_whole_report(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "a.jsonl", [wire("acme", "gpt-4o", 1, 1)])
    result = run([*REPORT, str(good), str(tmp_path / "missing.jsonl")], clean_env(tmp_path))
    assert result.returncode == 1 and result.stdout == ""  # no partial bill
    assert "missing.jsonl" in result.stderr


def test_header_has_the_event_count_and_time_range(tmp_path: Path) -> None:
    events = [
        wire("acme", "gpt-4o", 1, 1, timestamp="2026-12-01T02:00:00.250+00:00"),
        wire("acme", "gpt-4o", 1, 1, timestamp="2026-12-01T07:30:00+02:00"),  # 05:30 UTC, the latest
        wire("acme", "gpt-4o", 1, 1, timestamp="2026-11-30T23:59:59Z"),  # the earliest
        wire("acme", "gpt-4o", 1, 1, timestamp="yesterday"),  # not a time: counted, not in the range
        wire("acme", "gpt-4o", 1, 1),
    ]
    path = write_jsonl(tmp_path / "u.jsonl", events)
    result = run([*REPORT, str(path)], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0]
    assert header == f"usage from {path}: 5 event(s), 2026-11-30 23:59:59 to 2026-12-01 05:30:00 UTC"
    code, data = report_json([str(path)], clean_env(tmp_path))
    assert code == 0 and data["events"] == 5
    assert data["time_range"] == {
        "first": "2026-11-30T23:59:59.000+00:00",
        "last": "2026-12-01T05:30:00.000+00:00",
    }

    untimed = write_jsonl(tmp_path / "v.jsonl", [wire("acme", "gpt-4o", 1, 1)])
    header = run([*REPORT, str(untimed)], clean_env(tmp_path)).stdout.splitlines()[0]
    assert header == f"usage from {untimed}: 1 event(s)"


def test_format_json_is_the_json_flag(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "u.jsonl", [wire("acme", "gpt-4o", 3, 4)])
    env = clean_env(tmp_path)
    by_flag = run([*REPORT, str(path), "--json"], env)
    by_format = run([*REPORT, str(path), "--format", "json"], env)
    assert by_flag.returncode == by_format.returncode == 0
    assert json.loads(by_flag.stdout) == json.loads(by_format.stdout)
    assert run([*REPORT, str(path), "--json", "--format", "csv"], env).returncode == 2
    assert run([*REPORT, str(path), "--format", "xml"], env).returncode == 2


def test_csv_for_a_spreadsheet(tmp_path: Path) -> None:
    events = [
        wire("acme", "gpt-4o", 10, 5, cached=2, reasoning=1),
        wire("=HYPERLINK(1)", "gpt-4o-mini", 1, 1, usage_source="estimated"),
        wire(None, "gpt-4o-mini", 2, 0, error_occurred=True),
    ]
    path = write_jsonl(tmp_path / "u.jsonl", events)
    result = run([*REPORT, str(path), "--format", "csv"], without_prices(clean_env(tmp_path), tmp_path))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == [
        "group",
        "name",
        "calls",
        "errors",
        "estimated",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "reasoning_tokens",
        "total_tokens",
    ]
    by_key = {(r["group"], r["name"]): r for r in rows}
    assert by_key[("customer", "acme")]["cached_input_tokens"] == "2"
    assert by_key[("customer", "(none)")]["errors"] == "1"
    # a customer id a spreadsheet would run as a formula is written as text
    assert by_key[("customer", "'=HYPERLINK(1)")]["estimated"] == "1"
    assert by_key[("model", "gpt-4o-mini")]["calls"] == "2"
    total = by_key[("total", "")]
    assert (total["calls"], total["input_tokens"], total["total_tokens"]) == ("3", "13", "19")
    assert len(rows) == 3 + 2 + 1


def test_a_file_in_the_way_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("")
    env = clean_env(tmp_path, CMDRDATA_JSONL_PATH=str(blocker / "u.jsonl"))
    result = run([*REPORT], env)
    assert result.returncode == 1
    assert f"{blocker} is a file, not a directory" in result.stderr
    assert "File exists" not in result.stderr and "Not a directory" not in result.stderr
    assert "CMDRDATA_EXPORTER" not in result.stderr  # the hint is for a file not written yet, not this
    nothing_yet = run([*REPORT], clean_env(tmp_path))  # default path, no file: say how to get one
    assert nothing_yet.returncode == 1 and "CMDRDATA_EXPORTER=jsonl" in nothing_yet.stderr
    folder = run([*REPORT, str(tmp_path)], clean_env(tmp_path))
    assert folder.returncode == 1 and "it is a directory, not a file" in folder.stderr


def test_a_long_report_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    events = [wire(f"customer-{i:05d}", "gpt-4o", i, i) for i in range(3000)]
    path = write_jsonl(tmp_path / "u.jsonl", events)
    for fmt in ("table", "csv", "json"):
        result = run_into_closed_pipe([*REPORT, str(path), "--format", fmt], clean_env(tmp_path))
        assert result.returncode == 0, fmt
        assert_quiet_exit(result.stderr)
