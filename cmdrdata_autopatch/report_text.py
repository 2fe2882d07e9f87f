"""The text and CSV forms of `report`: aligned tables with the notes a reader needs, and a spreadsheet sheet.

Apart from report.py (reading and the command) so each stays small; both render the same `Report`, the
same groups, so the table, the CSV, the JSON and the HTML page never disagree on a number.
"""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Sequence
from typing import Any

from ._cmdline import format_table
from .pricing import EXTRA_HINT, format_cost
from .report_model import STDIN_NAME, Report, time_range
from .report_query import Group
from .totals import TOKEN_FIELDS

# text cells a spreadsheet would run as a formula (CSV injection): such customer ids get a leading quote
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cost_cell(group: Group) -> str:
    if group.cost is None:
        return "?" if group.unpriced else "0"
    return format_cost(group.cost) + ("*" if group.unpriced else "")


def _table(report: Report, names: Sequence[str], rows: list[Group], total: Group) -> list[str]:
    priced = report.prices is not None
    with_units = bool(total.totals.units)  # images, audio seconds, web searches...: shown when billed
    numbers = ["calls", "errors", "estimated", "input", "output", "cached", "reasoning", "total"]
    header = [*names, *numbers, *(["units"] if with_units else []), *(["cost USD (est.)"] if priced else [])]

    def cells(key: Sequence[str], group: Group) -> list[Any]:
        t = group.totals
        values = [t.calls, t.errors, t.estimated, *t.tokens().values()]
        units = [t.units_text()] if with_units else []
        return [*key, *values, *units, *([_cost_cell(group)] if priced else [])]

    body = [cells(row.key, row) for row in rows]
    body.append(cells(["TOTAL", *[""] * (len(names) - 1)], total))
    return format_table(header, body, numeric_from=len(names))


def _header(report: Report) -> list[str]:
    first, last = time_range(report.events)
    where = ", ".join(report.reading.sources)
    line = f"usage from {where}: {len(report.events)} event(s)"
    if first is not None and last is not None:
        line += f", {first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} UTC"
    return [line, *selection_note(report)]


def selection_note(report: Report) -> list[str]:
    """The --since/--until line: which period was asked for and what it left out (none without them)."""
    lines = []
    window = report.window
    if window.active:
        parts = [] if window.since is None else [f"from {window.since:%Y-%m-%d %H:%M:%S}"]
        parts += [] if window.until is None else [f"before {window.until:%Y-%m-%d %H:%M:%S}"]
        note = f"selected: calls {' and '.join(parts)} UTC"
        left = [f"{window.outside} outside"] if window.outside else []
        left += [f"{window.untimed} without a time"] if window.untimed else []
        lines.append(note + (f"; left out {' and '.join(left)}" if left else ""))
    return lines


def _estimated_notes(report: Report) -> list[str]:
    """Which calls are estimates, and the setting that turns the streamed ones into reported usage."""
    hosts: dict[str, int] = {}
    others = 0
    for event in report.events:
        if event.get("usage_source") != "estimated":
            continue
        if event.get("streaming") is True:
            host = str(event.get("provider") or "unknown host")
            hosts[host] = hosts.get(host, 0) + 1
        else:
            others += 1
    notes = []
    if hosts:
        named = sorted(h for h in hosts if h not in ("openai", "azure", "unknown host"))
        fixes = []
        if named:
            fixes.append(
                f"if {'that host accepts' if len(named) == 1 else 'those hosts accept'} stream_options, "
                f"set CMDRDATA_STREAM_USAGE_HOSTS={','.join(named)} (or CMDRDATA_STREAM_USAGE=always)"
            )
        if "azure" in hosts:
            fixes.append("for Azure OpenAI, use api-version 2024-09-01 or later")
        if "openai" in hosts or "unknown host" in hosts:
            fixes.append("a stream closed before its end, or your own stream_options, also leave no usage")
        listed = ", ".join(f"{host} ({n})" for host, n in sorted(hosts.items()))
        notes.append(
            f"{sum(hosts.values())} streamed call(s) had no usage reported (column 'estimated': tokens are "
            f"estimates) through {listed}. To get real numbers: {'; '.join(fixes)}."
        )
    if others:
        notes.append(
            f"{others} {'other ' if hosts else ''}call(s) had no usage reported (column 'estimated'): "
            "their tokens are estimates."
        )
    return notes


def footer_notes(report: Report) -> list[str]:
    """What a reader must know to trust the numbers: estimates, prices, and why a run can count twice."""
    notes = []
    _, total = report.grouped([])
    if total.totals.estimated:
        notes.extend(_estimated_notes(report))
    prices = report.prices
    if prices is None:
        notes.append(f"no cost column: {EXTRA_HINT}.")
    else:
        notes.append(
            f"cost USD (est.) is an estimate, not an invoice: {prices.describe()}, at the prices in force "
            "at each call's time, with cached-input, service-tier (flex/priority), batch and tool-fee rates "
            "where the table has them."
        )
        if prices.unknown_models:
            listed = ", ".join(f"{name} ({n})" for name, n in sorted(prices.unknown_models.items()))
            notes.append(
                f"no price for {total.unpriced} call(s), left out of the cost ('?' or '*' in the cost "
                f"column): model not in genai-prices' table: {listed}."
            )
        if prices.errors:
            notes.append(
                f"{prices.errors} call(s) could not be priced (unreadable usage); left out of the cost."
            )
    notes.extend(_runs_note(report))
    return notes


def _runs_note(report: Report) -> list[str]:
    """Why a demo run twice shows its calls twice: the file is appended to, never rewritten."""
    files = [source for source in report.reading.sources if source != STDIN_NAME]
    if not files or not report.events:
        return []
    runs = report.burst_count()
    seen = f"these calls came in {runs} separate bursts (pauses of 30 s or more). " if runs > 1 else ""
    return [
        f"{seen}Every tracked run appends to the usage file, so a program run twice is counted twice. To "
        "start fresh, move the file away (or give each run its own CMDRDATA_JSONL_PATH); to report one "
        "period, use --since/--until."
    ]


def render_table(report: Report) -> str:
    """The text report: a header with the sources, event count and time range, the tables, the notes."""
    lines = _header(report)
    if report.reading.skipped["torn_last_line"]:
        lines.append(
            "(an incomplete last line was skipped: the writer was still writing or was stopped mid-line)"
        )
    if report.events:
        if report.by:
            rows, total = report.grouped(report.by)
            lines.append(f"\nby {', '.join(report.by)}:")
            lines.extend(_table(report, report.by, rows, total))
        else:
            for names in report.default_views():
                rows, total = report.grouped(names)
                lines.append(f"\nby {', '.join(names)}:")
                lines.extend(_table(report, names, rows, total))
    notes = footer_notes(report)
    if notes and report.events:
        lines.append("")
        lines.extend(textwrap.fill(note, width=110, break_on_hyphens=False) for note in notes)
    return "\n".join(lines) + "\n"


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_numbers(group: Group, priced: bool, units: Sequence[str]) -> list[Any]:
    t = group.totals
    values: list[Any] = [t.calls, t.errors, t.estimated, *t.tokens().values()]
    values += [t.units.get(name, 0) for name in units]
    if priced:
        values += ["" if group.cost is None else f"{group.cost:.8f}", group.unpriced]
    return values


def render_csv(report: Report) -> str:
    """One sheet for a spreadsheet.

    Without --by: a row per customer, per model and the total, told apart by `group`. With --by: one column
    per dimension and no total row, so a pivot table or SUM() over the sheet adds up right.
    """
    priced = report.prices is not None
    units = sorted(report.grouped([])[1].totals.units)  # a column per billed unit, e.g. `units.images`
    numbers = ["calls", "errors", "estimated", *TOKEN_FIELDS, *(f"units.{name}" for name in units)]
    numbers += ["cost_usd", "unpriced"] if priced else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if report.by:
        writer.writerow([*report.by, *numbers])
        rows, _ = report.grouped(report.by)
        for row in rows:
            writer.writerow([*(_csv_cell(k) for k in row.key), *_csv_numbers(row, priced, units)])
        return out.getvalue()
    writer.writerow(["group", "name", *numbers])
    for name in ("customer", "model"):
        rows, _ = report.grouped([name])
        for row in rows:
            writer.writerow([name, _csv_cell(row.key[0]), *_csv_numbers(row, priced, units)])
    _, total = report.grouped([])
    writer.writerow(["total", "", *_csv_numbers(total, priced, units)])
    return out.getvalue()
