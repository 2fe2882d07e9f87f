"""`report --by/--since/--until` from the command line, in all three formats, and the notes under the table.

A billing person asks "per customer per day, between these dates" and pastes the CSV into a sheet: each
test runs the real command on a file written here and reads its output back the way that person's tools
would (the csv module, json). Cost is tested in test_report_cost.py; these run without genai-prices so
the columns are the same on every Python.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .apps.harness import clean_env, run
from .report_helpers import REPORT, prose, wire, without_prices, write_jsonl

NUMBERS = [
    "calls",
    "errors",
    "estimated",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "total_tokens",
]


def month_of_events(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "u.jsonl",
        [
            wire("acme", "gpt-4o", 100, 10, timestamp="2026-10-31T23:59:59.999Z"),
            wire("acme", "gpt-4o", 200, 20, timestamp="2026-11-01T00:00:00.000Z", service="web"),
            wire("acme", "gpt-4o-mini", 300, 30, timestamp="2026-11-01T08:00:00Z", environment="prod"),
            wire("globex", "gpt-4o", 400, 40, timestamp="2026-11-15T12:00:00Z", usage_source="estimated"),
            wire("globex", "gpt-4o", 500, 50, timestamp="2026-11-30T23:59:59.999Z", service_tier="flex"),
            wire("initech", "gpt-4o", 600, 60, timestamp="2026-12-01T00:00:00.000Z", api="responses"),
        ],
    )


def report(tmp_path: Path, *args: str) -> Any:
    result = run([*REPORT, *args], without_prices(clean_env(tmp_path), tmp_path))
    assert result.returncode == 0, result.stderr
    return result


def csv_rows(tmp_path: Path, *args: str) -> tuple[list[str], list[dict[str, str]]]:
    out = report(tmp_path, *args, "--format", "csv").stdout
    reader = csv.DictReader(io.StringIO(out))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def test_by_customer_and_day_as_csv_for_a_month(tmp_path: Path) -> None:
    path = month_of_events(tmp_path)
    columns, rows = csv_rows(
        tmp_path, str(path), "--by", "customer,day", "--since", "2026-11-01", "--until", "2026-11-30"
    )
    assert columns == ["customer", "day", *NUMBERS]  # no cost columns without genai-prices
    got = {(r["customer"], r["day"]): r for r in rows}
    assert list(got) == [("acme", "2026-11-01"), ("globex", "2026-11-15"), ("globex", "2026-11-30")]
    assert (got[("acme", "2026-11-01")]["calls"], got[("acme", "2026-11-01")]["input_tokens"]) == ("2", "500")
    assert got[("globex", "2026-11-15")]["estimated"] == "1"
    # no total row in a --by sheet: a SUM() over the column is the total
    assert sum(int(r["total_tokens"]) for r in rows) == 550 + 440 + 550


def test_by_every_dimension_in_json(tmp_path: Path) -> None:
    path = month_of_events(tmp_path)
    dims = "customer,model,api,service,environment,service_tier,month"
    data = json.loads(report(tmp_path, str(path), "--by", dims, "--json").stdout)
    assert data["by"] == dims.split(",") and data["prices"] is None
    keys = {tuple(row[d] for d in data["by"]) for row in data["rows"]}
    assert ("acme", "gpt-4o", "chat.completions", "web", "(none)", "(none)", "2026-11") in keys
    assert ("acme", "gpt-4o-mini", "chat.completions", "(none)", "prod", "(none)", "2026-11") in keys
    assert ("globex", "gpt-4o", "chat.completions", "(none)", "(none)", "flex", "2026-11") in keys
    assert ("initech", "gpt-4o", "responses", "(none)", "(none)", "(none)", "2026-12") in keys
    assert sum(row["calls"] for row in data["rows"]) == data["totals"]["calls"] == 6
    assert all("cost_usd" not in row for row in data["rows"])


def test_hourly_table_and_the_filter_line(tmp_path: Path) -> None:
    path = month_of_events(tmp_path)
    out = report(
        tmp_path, str(path), "--by", "hour", "--since", "2026-11-01T00:00:00Z", "--until", "2026-11-02"
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"usage from {path}: 2 event(s), 2026-11-01 00:00:00 to 2026-11-01 08:00:00")
    assert lines[1] == (
        "selected: calls from 2026-11-01 00:00:00 and before 2026-11-03 00:00:00 UTC; left out 4 outside"
    )
    table = [line.split() for line in lines if line.strip().startswith("2026-")]
    assert [row[:3] for row in table] == [["2026-11-01", "00:00", "1"], ["2026-11-01", "08:00", "1"]]
    header = next(line for line in lines if line.strip().startswith("hour")).split()
    columns = ["calls", "errors", "estimated", "input", "output", "cached", "reasoning", "total"]
    assert header == ["hour", *columns]
    assert "no cost column: pip install 'cmdrdata-autopatch[prices]'" in prose(out.stdout)


def test_until_a_timestamp_leaves_that_instant_out(tmp_path: Path) -> None:
    path = month_of_events(tmp_path)
    data = json.loads(report(tmp_path, str(path), "--until", "2026-12-01T00:00:00Z", "--json").stdout)
    assert data["events"] == 5 and data["filter"]["left_out"] == 1
    assert data["filter"]["until"] == "2026-12-01T00:00:00.000+00:00"
    assert data["time_range"]["last"] == "2026-11-30T23:59:59.999+00:00"
    data = json.loads(report(tmp_path, str(path), "--since", "2026-12-01T00:00:00Z", "--json").stdout)
    assert data["events"] == 1 and data["by_customer"][0]["customer_id"] == "initech"


def test_estimated_column_in_every_format(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "u.jsonl",
        [wire("acme", "gpt-4o", 5, 5, usage_source="estimated"), wire("acme", "gpt-4o", 5, 5)],
    )
    table = report(tmp_path, str(path)).stdout
    acme = next(line.split() for line in table.splitlines() if line.strip().startswith("acme"))
    assert acme[:4] == ["acme", "2", "0", "1"]  # calls, errors, estimated
    assert "1 call(s) had no usage reported (column 'estimated')" in prose(table)
    _, rows = csv_rows(tmp_path, str(path), "--by", "customer")
    assert rows[0]["estimated"] == "1"
    data = json.loads(report(tmp_path, str(path), "--json").stdout)
    assert data["by_customer"][0]["estimated"] == 1 and data["totals"]["estimated"] == 1


def test_two_runs_of_a_demo_are_explained(tmp_path: Path) -> None:
    run_one = [wire(f"c{i}", "gpt-4o-mini", 1, 1, timestamp=f"2026-12-01T03:00:0{i}.000Z") for i in range(4)]
    run_two = [wire(f"c{i}", "gpt-4o-mini", 1, 1, timestamp=f"2026-12-01T03:02:0{i}.000Z") for i in range(4)]
    path = write_jsonl(tmp_path / "u.jsonl", run_one + run_two)
    out = report(tmp_path, str(path)).stdout
    assert "8 event(s)" in out.splitlines()[0]
    out = prose(out)
    assert "these calls came in 2 separate bursts" in out and "a program run twice is counted twice" in out
    assert json.loads(report(tmp_path, str(path), "--json").stdout)["bursts"] == 2
    once = write_jsonl(tmp_path / "once.jsonl", run_one)
    alone = prose(report(tmp_path, str(once)).stdout)
    assert "bursts" not in alone and "Every tracked run appends to the usage file" in alone


def test_bad_options_exit_2(tmp_path: Path) -> None:
    path = month_of_events(tmp_path)
    env = without_prices(clean_env(tmp_path), tmp_path)
    for args, words in (
        (["--by", "customer,weekday"], "unknown --by value 'weekday'"),
        (["--by", "day,hour"], "one of hour, day, month"),
        (["--since", "yesterday"], "not a date or ISO timestamp"),
        (["--since", "2026-11-30", "--until", "2026-11-29"], "--since must be before --until"),
    ):
        result = run([*REPORT, str(path), *args], env)
        assert result.returncode == 2, args
        assert words in result.stderr and result.stdout == ""


def test_deployments_get_their_own_table_when_events_name_them(tmp_path: Path) -> None:
    path = month_of_events(tmp_path)  # two events name a service or an environment, four are older
    text = report(tmp_path, str(path)).stdout
    assert "\nby service, environment:" in text
    rows = [line.split() for line in text.split("by service, environment:")[1].splitlines()[3:7]]
    assert ["web", "(none)", "1"] in [row[:3] for row in rows]
    assert ["(none)", "prod", "1"] in [row[:3] for row in rows]
    assert ["(none)", "(none)", "4"] in [row[:3] for row in rows]
    data = json.loads(report(tmp_path, str(path), "--json").stdout)
    pairs = {(r["service"], r["environment"]): r["calls"] for r in data["by_service_environment"]}
    assert pairs == {("web", "(none)"): 1, ("(none)", "prod"): 1, ("(none)", "(none)"): 4}

    old = write_jsonl(tmp_path / "old.jsonl", [wire("acme", "gpt-4o", 1, 1)])
    assert "service" not in report(tmp_path, str(old)).stdout
    assert "by_service_environment" not in json.loads(report(tmp_path, str(old), "--json").stdout)


def test_units_are_reported_in_every_format(tmp_path: Path) -> None:
    """Billed quantities that are not tokens (images, audio seconds, web searches, Live session seconds)
    appear as a column of the table, one CSV column per unit, and a `units` object in JSON."""
    path = write_jsonl(
        tmp_path / "u.jsonl",
        [
            wire("acme", "gpt-image-1", 10, 0, api="images", units={"images": 2}),
            wire("acme", "gpt-4o", 10, 5, units={"web_searches": 3}),
            wire("globex", "gpt-realtime", 0, 0, api="live", units={"session_seconds": 90.5}),
            wire("globex", "gpt-4o", 10, 5),
        ],
    )

    def header(text: str) -> list[str]:
        return next(line.split() for line in text.splitlines() if " calls " in line)

    table = report(tmp_path, str(path), "--by", "customer").stdout
    assert "units" in header(table)
    assert "images=2 web_searches=3" in table and "session_seconds=90.50" in table
    columns, rows = csv_rows(tmp_path, str(path), "--by", "customer")
    assert columns == ["customer", *NUMBERS, "units.images", "units.session_seconds", "units.web_searches"]
    got = {r["customer"]: r for r in rows}
    assert (got["acme"]["units.images"], got["acme"]["units.web_searches"]) == ("2", "3")
    assert (got["globex"]["units.session_seconds"], got["globex"]["units.images"]) == ("90.5", "0")
    data = json.loads(report(tmp_path, str(path), "--by", "customer", "--json").stdout)
    by = {row["customer"]: row["units"] for row in data["rows"]}
    assert by == {"acme": {"images": 2, "web_searches": 3}, "globex": {"session_seconds": 90.5}}
    assert data["totals"]["units"] == {"images": 2, "session_seconds": 90.5, "web_searches": 3}
    plain = report(tmp_path, write_jsonl(tmp_path / "p.jsonl", [wire("a", "m", 1, 1)]).as_posix()).stdout
    assert "units" not in header(plain)  # no column when nothing but tokens was billed
