"""`cmdrdata-autopatch report`: usage per customer and per model from the files the jsonl exporter writes.

Without an API key the jsonl exporter is the default, so this is how a developer sees what would be billed,
and how a billing person gets a sheet or a page: `--by customer,day`, `--since/--until`, `--format csv`,
`--html FILE`, and an estimated cost with the `prices` extra. This module runs the command;
report_model.py reads the sources and builds the report, report_query.py selects and groups, pricing.py
prices, report_text.py and report_html.py render.
The input is whatever a writer left behind: a torn last line (a process killed mid-write) is expected and
skipped, an undecodable line elsewhere is skipped and said, and an event written twice (a replay, or two
files holding the same event) is counted once, by `event_id`, because CmdrData bills it once too.

Exit codes: 0 report printed (also when no events), 1 a file missing or unreadable (or the --html page
not writable), 2 bad option.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ._cmdline import (
    EXIT_OK,
    EXIT_PROBLEM,
    ArgumentParser,
    describe_path_error,
    error,
    write_stdout,
)
from .pricing import load_prices
from .report_model import (
    STDIN,
    STDIN_NAME,
    Reading,
    Report,
    default_report_path,
    report_json,
)
from .report_query import DIMENSIONS, Window, parse_bound, parse_dimensions
from .report_text import render_csv, render_table

FORMATS = ("table", "csv", "json")


# ----------------------------------------------------------------------------------------------- command


def _dimensions(text: str) -> list[str]:
    try:
        return parse_dimensions(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bound(end: bool) -> Any:
    def parse(text: str) -> datetime:
        try:
            return parse_bound(text, end=end)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description=(
            "Summarize the local usage files written by the jsonl exporter: calls, estimated calls and "
            "input / output / cached / reasoning tokens per customer and per model (or grouped with --by), "
            "with totals and, with the 'prices' extra, an estimated cost. Several files are read as one (an "
            "event in two of them counts once); '-' reads standard input. Times are UTC."
        ),
        epilog="Exit status: 0 report printed (also when the files hold no events), "
        "1 a file missing or unreadable (or the --html page not writable), 2 bad option.",
    )
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="JSONL files, '-' for stdin (default: $CMDRDATA_JSONL_PATH, else ./cmdrdata-usage.jsonl)",
    )
    parser.add_argument(
        "--by",
        type=_dimensions,
        default=[],
        metavar="DIM[,DIM...]",
        help=f"group by these, in order: {', '.join(DIMENSIONS)} (e.g. --by customer,day)",
    )
    parser.add_argument(
        "--since", type=_bound(False), metavar="WHEN", help="calls from this date or ISO time on (UTC)"
    )
    parser.add_argument(
        "--until",
        type=_bound(True),
        metavar="WHEN",
        help="calls before this ISO time, or through this date / month (UTC)",
    )
    style = parser.add_mutually_exclusive_group()
    style.add_argument("--format", choices=FORMATS, default="table", help="output format (table)")
    style.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
    )
    parser.add_argument(
        "--html", metavar="FILE", help="also write a self-contained page with tables and charts to FILE"
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


def _write_html(prog: str, report: Report, path: str) -> bool:
    from .report_html import render_html

    page = render_html(report)
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(page)
    except OSError as exc:
        error(prog, f"cannot write {path}: {describe_path_error(path, exc)}")
        return False
    error(prog, f"wrote the HTML report to {os.path.abspath(path)}")
    return True


def report_main(argv: Sequence[str], prog: str) -> int:
    """`cmdrdata-autopatch report [FILE ...] [--by DIMS] [--since/--until WHEN] [--format F] [--html F]`."""
    parser = _parser(prog)
    args = parser.parse_args(list(argv))
    if args.since is not None and args.until is not None and args.since >= args.until:
        parser.error("--since must be before --until")
    paths = list(args.files) or [default_report_path()]
    reading = _read_all(prog, paths, defaulted=not args.files)
    if reading is None:
        return EXIT_PROBLEM
    report = Report.build(reading, Window(since=args.since, until=args.until), args.by, load_prices())
    if args.html and not _write_html(prog, report, args.html):
        return EXIT_PROBLEM

    if args.format == "json":
        write_stdout(json.dumps(report_json(report), indent=2) + "\n")
    elif args.format == "csv":
        write_stdout(render_csv(report))
    else:
        write_stdout(render_table(report))
    return EXIT_OK
