"""`cmdrdata-autopatch report`: usage per customer and per model from the files the jsonl exporter writes.

Without an API key the jsonl exporter is the default, so this is how a developer sees what would be billed.
The input is whatever a writer left behind: a torn last line (a process killed mid-write) is expected and
skipped, an undecodable line elsewhere is skipped and said, and an event written twice (a replay, or two
files holding the same event) is counted once, by `event_id`, because CmdrData bills it once too.

Exit codes: 0 report printed (also when no events), 1 a file missing or unreadable, 2 bad option.
"""

from __future__ import annotations

import argparse
import csv
import errno
import io
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._cmdline import (
    EXIT_OK,
    EXIT_PROBLEM,
    ArgumentParser,
    describe_path_error,
    error,
    format_table,
    write_stdout,
)
from .totals import TOKEN_FIELDS, UsageTotals

STDIN = "-"
STDIN_NAME = "<stdin>"
FORMATS = ("table", "csv", "json")
SKIP_REASONS = ("torn_last_line", "bad_lines", "duplicates")
# text cells a spreadsheet would run as a formula (CSV injection): such customer ids get a leading quote
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Reading:
    """Everything read from the report's sources: unique events, what was skipped, which sources."""

    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    sources: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add_lines(self, raw: bytes) -> int:
        """Add one source's events; returns how many undecodable lines (other than a torn last one) it had."""
        lines = raw.split(b"\n")
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        bad = 0
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                item = None
            if isinstance(item, dict) and isinstance(item.get("event"), dict):
                item = item["event"]  # a spool-style record wrapping the wire event
            if not isinstance(item, dict):
                if index == last:
                    self.skipped["torn_last_line"] += 1
                else:
                    self.skipped["bad_lines"] += 1
                    bad += 1
                continue
            event_id = item.get("event_id")
            if isinstance(event_id, str):
                if event_id in self.seen:
                    self.skipped["duplicates"] += 1
                    continue
                self.seen.add(event_id)
            self.events.append(item)
        return bad


def read_events(path: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The events in one JSONL file, each `event_id` once, and the counts of what was skipped.

    Skipped: `torn_last_line` (writer killed mid-line), `bad_lines` (undecodable lines elsewhere),
    `duplicates` (an id seen before, e.g. written again after a replay).
    """
    reading = Reading()
    with open(path, "rb") as handle:
        reading.add_lines(handle.read())
    return reading.events, reading.skipped


def _parse_timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):  # fromisoformat accepts "Z" only from Python 3.11
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def time_range(events: Iterable[Mapping[str, Any]]) -> tuple[datetime | None, datetime | None]:
    """The earliest and latest call start (`timestamp`) among the events, in UTC; None when none has one."""
    moments = [m for m in (_parse_timestamp(e.get("timestamp")) for e in events) if m is not None]
    return (min(moments), max(moments)) if moments else (None, None)


def summarize(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Group events by customer and by model, with totals (the `report --json` body)."""
    by_customer: dict[str, UsageTotals] = {}
    by_model: dict[str, UsageTotals] = {}
    totals = UsageTotals()
    for event in events:
        customer = event.get("customer_id")
        model = event.get("model")
        by_customer.setdefault(customer if isinstance(customer, str) else "(none)", UsageTotals()).add(event)
        by_model.setdefault(model if isinstance(model, str) else "(unknown)", UsageTotals()).add(event)
        totals.add(event)

    def rows(groups: dict[str, UsageTotals], key: str) -> list[dict[str, Any]]:
        ordered = sorted(groups.items(), key=lambda kv: (-kv[1].total_tokens, -kv[1].calls, kv[0]))
        return [{key: name, **group.as_json()} for name, group in ordered]

    return {
        "by_customer": rows(by_customer, "customer_id"),
        "by_model": rows(by_model, "model"),
        "totals": totals.as_json(),
    }


def default_report_path(environ: Mapping[str, str] | None = None) -> str:
    """Where the jsonl exporter writes by default: `CMDRDATA_JSONL_PATH`, else ./cmdrdata-usage.jsonl."""
    from .config import DEFAULT_JSONL_PATH

    env = os.environ if environ is None else environ
    return env.get("CMDRDATA_JSONL_PATH", "").strip() or DEFAULT_JSONL_PATH


# ------------------------------------------------------------------------------------------------ output


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds")


def report_json(reading: Reading) -> dict[str, Any]:
    """The whole report as one JSON-ready dict (`--format json`)."""
    first, last = time_range(reading.events)
    return {
        "file": reading.sources[0] if len(reading.sources) == 1 else None,
        "files": list(reading.sources),
        "events": len(reading.events),
        "time_range": {"first": _iso(first), "last": _iso(last)},
        "skipped": dict(reading.skipped),
        **summarize(reading.events),
    }


def _usage_rows(key: str, rows: list[dict[str, Any]], totals: dict[str, Any]) -> list[list[Any]]:
    numbers = ("calls", "errors", *TOKEN_FIELDS)
    body = [[r[key], *(r[n] for n in numbers)] for r in rows]
    body.append(["TOTAL", *(totals[n] for n in numbers)])
    return body


def _header(reading: Reading) -> str:
    first, last = time_range(reading.events)
    where = ", ".join(reading.sources)
    line = f"usage from {where}: {len(reading.events)} event(s)"
    if first is not None and last is not None:
        line += f", {first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} UTC"
    return line


def render_table(reading: Reading) -> str:
    """The text report: a header with the sources, event count and time range, then two tables."""
    lines = [_header(reading)]
    if reading.skipped["torn_last_line"]:
        lines.append(
            "(an incomplete last line was skipped: the writer was still writing or was stopped mid-line)"
        )
    if reading.events:
        summary = summarize(reading.events)
        header = ["calls", "errors", "input", "output", "cached", "reasoning", "total"]
        for title, key, group in (("customer", "customer_id", "by_customer"), ("model", "model", "by_model")):
            lines.append(f"\nby {title}:")
            body = _usage_rows(key, summary[group], summary["totals"])
            lines.extend(format_table([title, *header], body, numeric_from=1))
        estimated = summary["totals"]["estimated"]
        if estimated:
            lines.append(
                f"\n{estimated} call(s) had no usage reported by OpenAI; their tokens are estimates."
            )
    return "\n".join(lines) + "\n"


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def render_csv(reading: Reading) -> str:
    """One sheet for a spreadsheet: a row per customer, per model and the total, told apart by `group`."""
    summary = summarize(reading.events)
    numbers = ("calls", "errors", "estimated", *TOKEN_FIELDS)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["group", "name", *numbers])
    for group, key in (("customer", "customer_id"), ("model", "model")):
        for row in summary[f"by_{group}"]:
            writer.writerow([group, _csv_cell(row[key]), *(row[n] for n in numbers)])
    writer.writerow(["total", "", *(summary["totals"][n] for n in numbers)])
    return out.getvalue()


# ----------------------------------------------------------------------------------------------- command


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description=(
            "Summarize the local usage files written by the jsonl exporter: calls and input / output / "
            "cached / reasoning tokens per customer and per model, with totals. Several files are read as "
            "one (an event in two of them counts once); '-' reads standard input."
        ),
        epilog="Exit status: 0 report printed (also when the files hold no events), "
        "1 a file missing or unreadable, 2 bad option.",
    )
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="JSONL files, '-' for stdin (default: $CMDRDATA_JSONL_PATH, else ./cmdrdata-usage.jsonl)",
    )
    style = parser.add_mutually_exclusive_group()
    style.add_argument("--format", choices=FORMATS, default="table", help="output format (table)")
    style.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
    )
    return parser


def _read_all(prog: str, paths: Sequence[str], defaulted: bool) -> Reading | None:
    """Read every source into one Reading; None (after saying why) when one of them cannot be read."""
    reading = Reading()
    for path in paths:
        name = STDIN_NAME if path == STDIN else os.path.abspath(path)
        try:
            if path == STDIN:
                raw = sys.stdin.buffer.read()
            else:
                with open(path, "rb") as handle:
                    raw = handle.read()
        except OSError as exc:
            hint = ""
            if defaulted and exc.errno == errno.ENOENT:  # nothing written yet: say how to get a file
                hint = " (run your program with CMDRDATA_EXPORTER=jsonl, the default without an API key)"
            error(prog, f"cannot read {path}: {describe_path_error(path, exc)}{hint}")
            return None
        reading.sources.append(name)
        bad = reading.add_lines(raw)
        if bad:
            shown = STDIN_NAME if path == STDIN else path
            error(prog, f"warning: {bad} undecodable line(s) in {shown} were skipped")
    return reading


def report_main(argv: Sequence[str], prog: str) -> int:
    """`cmdrdata-autopatch report [FILE ...] [--format table|csv|json]`."""
    args = _parser(prog).parse_args(list(argv))
    paths = list(args.files) or [default_report_path()]
    reading = _read_all(prog, paths, defaulted=not args.files)
    if reading is None:
        return EXIT_PROBLEM
    if args.format == "json":
        write_stdout(json.dumps(report_json(reading), indent=2) + "\n")
    elif args.format == "csv":
        write_stdout(render_csv(reading))
    else:
        write_stdout(render_table(reading))
    return EXIT_OK
