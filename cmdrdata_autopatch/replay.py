"""`cmdrdata-autopatch replay`: deliver the spool now, and `spool_backlog()`: what waits in it (for `doctor`).

For cron jobs, CI steps and container `preStop` hooks: the events a process could not deliver (the backend
was down, the process was killed) wait in the spool until some process delivers them. Any process that
delivers drains the spool by itself; this command does it on demand, within `--timeout`, and says what it
sent, what is left and why. It replays only segments no running process holds (a live process delivers
its own).

Exit codes:

    0  the spool is empty (everything delivered, or there was nothing to deliver)
    1  events are left: the time ran out or the backend kept failing (the reason is printed)
    2  usage or configuration error (no API key, bad setting)
    3  CmdrData rejected the API key (401/403); nothing more was sent
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from collections.abc import Sequence
from typing import Any, Optional

from .config import ConfigError, Settings, load_settings

EXIT_EMPTY = 0
EXIT_LEFT = 1
EXIT_USAGE = 2
EXIT_AUTH = 3


def spool_directory(settings: Settings) -> Optional[str]:
    """The spool partition the http exporter uses with these settings, or None when it has none."""
    if "http" not in settings.exporters or not settings.api_key:  # (`http,otlp` has the http spool too)
        return None
    from .exporter import make_spool

    spool = make_spool(settings)
    return spool.directory if spool is not None else None


def spool_backlog(settings: Settings) -> dict[str, Any]:
    """What waits in the spool for these settings: pure, read-only (claims nothing, sends nothing).

    Keys: `directory` (None when there is no spool), `segments`, `events` (not yet acknowledged), `bytes`,
    `held` (segments a running process owns), `oldest` (timestamp of the oldest waiting event) and
    `last_delivery` (unix time of the last successful delivery from this machine, or None).
    """
    from .spoolfs import scan_backlog

    directory = spool_directory(settings)
    if directory is None:
        empty: dict[str, Any] = {"directory": None, "segments": 0, "events": 0, "bytes": 0, "held": 0}
        empty.update(oldest=None, last_delivery=None)
        return empty
    return scan_backlog(directory)


def _when(unix: Optional[float]) -> str:
    if unix is None:
        return "never (on this machine)"
    stamp = datetime.datetime.fromtimestamp(unix, tz=datetime.timezone.utc)
    return stamp.isoformat(timespec="seconds")


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Deliver the usage events waiting in the spool now (for cron jobs and preStop hooks).",
        epilog="Exit codes: 0 spool empty, 1 events left, 2 usage/configuration error, 3 API key rejected.",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to deliver for (default 30)")
    parser.add_argument("--api-key", help="CmdrData API key (default: CMDRDATA_API_KEY)")
    parser.add_argument("--endpoint", help="events endpoint (default: CMDRDATA_ENDPOINT)")
    parser.add_argument("--spool-dir", help="spool root (default: CMDRDATA_SPOOL_DIR or the cache directory)")
    return parser


def replay_main(argv: Sequence[str], prog: str = "cmdrdata-autopatch replay") -> int:
    """Run the replay command; returns its exit code (see the module docstring)."""
    args = _parser(prog).parse_args(list(argv))
    try:
        if args.timeout is None or not (0 <= args.timeout < float("inf")):
            raise ConfigError(f"--timeout={args.timeout!r} must be a finite number of seconds, zero or more")
        settings = load_settings(
            api_key=args.api_key, endpoint=args.endpoint, spool_dir=args.spool_dir, exporter="http"
        )
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    directory = spool_directory(settings)
    if directory is None:
        print(f"{prog}: the spool is off (CMDRDATA_SPOOL_DIR=off): nothing to replay")
        return EXIT_EMPTY
    before = spool_backlog(settings)
    if before["events"] == 0:
        print(f"nothing to replay in {directory} (last delivery: {_when(before['last_delivery'])})")
        return EXIT_EMPTY
    outcome = _deliver(settings, args.timeout)
    after = spool_backlog(settings)
    left = after["events"]
    print(f"sent {outcome['sent']} event(s) from {directory}; {left} left")
    if outcome["rejected"]:
        print(f"{outcome['rejected']} event(s) were rejected by CmdrData for good (see the log)")
    if after["held"]:
        print(f"{after['held']} segment(s) belong to running processes, which deliver them themselves")
    if outcome["auth_failed"]:
        print(f"why: CmdrData rejected the API key ({outcome['last_error']}); check CMDRDATA_API_KEY")
        return EXIT_AUTH
    if left:
        why = outcome["last_error"] or f"the {args.timeout:g} s timeout ran out"
        print(f"why: {why}")
        return EXIT_LEFT
    return EXIT_EMPTY


def _deliver(settings: Settings, timeout: float) -> dict[str, Any]:
    from .exporter import build_exporter

    pipeline = build_exporter(dataclasses.replace(settings, exporter="http"))  # only http has a spool
    try:
        result: dict[str, Any] = pipeline.replay_spool(timeout)
    finally:
        pipeline.shutdown(0.5)
    return result
