"""Command line: the `cmdrdata-run` launcher and `cmdrdata-autopatch` (`run`, `doctor`, `report`).

`cmdrdata-run [options] COMMAND ARGS...` works like `ddtrace-run` / `opentelemetry-instrument`: it puts
`cmdrdata_autopatch/_bootstrap` (which holds a `sitecustomize.py`) first on `PYTHONPATH`, sets
`CMDRDATA_AUTOPATCH=1` and `exec`s the command. Every Python process started from there on (the command, a
`python -m` module, gunicorn and its workers, the program's own subprocesses) runs that `sitecustomize` at
start-up and tracks its OpenAI calls. The launcher replaces itself with the command (no extra parent process,
signals and the exit status are the program's own), so it adds nothing at run time.

Exit codes, for scripts:

- `cmdrdata-run`: the program's own status; 127 no command or command not found, 126 not executable,
  2 bad option; with `--info`, 0 when the configuration is valid, 1 when it is not.
- `cmdrdata-autopatch doctor`: 0 no problem found (warnings allowed), 1 at least one problem, 2 bad option.
- `cmdrdata-autopatch report`: 0 report printed (also for an empty file), 1 file missing or unreadable,
  2 bad option.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import site
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._version import __version__

PTH_NAME = "cmdrdata_autopatch.pth"
EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127

# launcher option -> environment variable it sets for the command
RUN_OPTIONS = {
    "api_key": "CMDRDATA_API_KEY",
    "endpoint": "CMDRDATA_ENDPOINT",
    "customer_id": "CMDRDATA_CUSTOMER_ID",
    "exporter": "CMDRDATA_EXPORTER",
    "jsonl_path": "CMDRDATA_JSONL_PATH",
}


def bootstrap_dir() -> str:
    """The directory holding our `sitecustomize.py`: on the path, it turns tracking on in a Python process."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")


def _error(prog: str, message: str) -> None:
    sys.stderr.write(f"{prog}: {message}\n")


# --------------------------------------------------------------------------------------------- cmdrdata-run


def _run_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run COMMAND with every OpenAI call of every Python process it starts tracked per customer, "
            "with no code change. Options set the matching CMDRDATA_* environment variables."
        ),
        epilog=(
            "examples:  cmdrdata-run python app.py  |  cmdrdata-run python -m mypkg  |  "
            "cmdrdata-run gunicorn app:app.  Exit status: the command's own; 127 when the command is "
            "missing or not found, 126 when it cannot be executed, 2 for a bad option."
        ),
    )
    parser.add_argument("--api-key", dest="api_key", help="CmdrData API key (CMDRDATA_API_KEY)")
    parser.add_argument("--endpoint", help="CmdrData events endpoint (CMDRDATA_ENDPOINT)")
    parser.add_argument("--customer-id", dest="customer_id", help="default customer (CMDRDATA_CUSTOMER_ID)")
    parser.add_argument("--exporter", help="http | jsonl | console | memory | none (CMDRDATA_EXPORTER)")
    parser.add_argument("--jsonl-path", dest="jsonl_path", help="local usage file (CMDRDATA_JSONL_PATH)")
    parser.add_argument(
        "--info", action="store_true", help="print the resolved configuration (key masked) and exit"
    )
    parser.add_argument("--version", action="version", version=f"cmdrdata-autopatch {__version__}")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, with its arguments")
    return parser


def launch_env(options: Mapping[str, str | None], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the command runs in: ours first on PYTHONPATH (once), autopatch on, options applied."""
    env = dict(os.environ if environ is None else environ)
    ours = bootstrap_dir()
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != ours]
    env["PYTHONPATH"] = os.pathsep.join([ours, *rest])
    env["CMDRDATA_AUTOPATCH"] = "1"
    for key, var in RUN_OPTIONS.items():
        value = options.get(key)
        if value is not None:
            env[var] = value
    return env


def _print_info(env: Mapping[str, str], command: Sequence[str]) -> int:
    from .config import ConfigError, load_settings

    print(f"cmdrdata-autopatch {__version__}")
    print(f"command:     {' '.join(command) if command else '(none)'}")
    print(f"PYTHONPATH:  {env['PYTHONPATH']}")
    if env.get("CMDRDATA_DISABLED", "").strip().lower() in ("1", "true", "yes", "on"):
        print("CMDRDATA_DISABLED is set: the command would run untracked")
    try:
        settings = load_settings(environ=env)
    except ConfigError as exc:
        print(f"configuration error: {exc}")
        return EXIT_PROBLEM
    for key, value in settings.describe().items():
        print(f"  {key:<15} {value}")
    return EXIT_OK


def _exec(prog: str, command: Sequence[str], env: dict[str, str]) -> int:
    """Replace this process with `command` (like a shell: 127 not found, 126 not executable)."""
    name = command[0]
    if os.sep in name or (os.altsep and os.altsep in name):
        if not os.path.exists(name):
            _error(prog, f"{name}: no such file or directory")
            return EXIT_NOT_FOUND
        path = name
    else:
        found = shutil.which(name, path=env.get("PATH", os.defpath))
        if found is None:
            _error(prog, f"{name}: command not found")
            return EXIT_NOT_FOUND
        path = found
    if not os.access(path, os.X_OK) or os.path.isdir(path):
        _error(prog, f"{name}: permission denied (not an executable file)")
        return EXIT_NOT_EXECUTABLE
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if os.name == "nt":  # no real exec on Windows: run it and hand back its status
            import subprocess

            return subprocess.call([path, *command[1:]], env=env)
        os.execve(path, list(command), env)
    except OSError as exc:
        _error(prog, f"{name}: {exc.strerror or exc}")
        return EXIT_NOT_EXECUTABLE if exc.errno == 13 else EXIT_NOT_FOUND
    return EXIT_OK  # pragma: no cover - execve does not return


def run_main(argv: Sequence[str] | None = None, prog: str = "cmdrdata-run") -> int:
    """`cmdrdata-run [options] COMMAND ARGS...` (console script). Returns only on error or `--info`."""
    args = _run_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    command: list[str] = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    env = launch_env({key: getattr(args, key) for key in RUN_OPTIONS})
    if args.info:
        return _print_info(env, command)
    if not command:
        _error(prog, "no command given; usage: cmdrdata-run [options] COMMAND ARGS... (e.g. python app.py)")
        return EXIT_NOT_FOUND
    return _exec(prog, command, env)


# ------------------------------------------------------------------------------------------------- doctor


@dataclass
class Diagnosis:
    """What `doctor` found. `problems` decide the exit code; `warnings` are worth reading but not fatal."""

    data: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"ok": not self.problems, "problems": self.problems, "warnings": self.warnings, **self.data}


def installed_pth_files() -> list[str]:
    """Every `cmdrdata_autopatch.pth` in this interpreter's site-packages directories (wheel or editable)."""
    dirs: list[str] = []
    try:
        dirs.extend(site.getsitepackages())
    except AttributeError:  # pragma: no cover - old virtualenv's site.py
        pass
    user = getattr(site, "getusersitepackages", None)
    if callable(user) and site.ENABLE_USER_SITE:
        dirs.append(user())
    found = []
    for directory in dict.fromkeys(dirs):
        candidate = os.path.join(directory, PTH_NAME)
        if os.path.isfile(candidate):
            found.append(candidate)
    return found


def _openai_facts(diag: Diagnosis) -> str | None:
    """Record the installed openai release and how it relates to the table; return its version if usable."""
    from .targets import OLDEST_SUPPORTED, VERIFIED_UP_TO, is_newer_than_verified, parse_version

    fix = f"pip install -U 'openai>={OLDEST_SUPPORTED}'"
    facts: dict[str, Any] = {"version": None, "verified_up_to": VERIFIED_UP_TO, "newer_than_verified": False}
    diag.data["openai"] = facts
    try:
        import openai
    except Exception as exc:
        diag.problems.append(f"openai cannot be imported ({type(exc).__name__}: {exc}); fix: {fix}")
        return None
    version = str(getattr(openai, "__version__", "0"))
    facts["version"] = version
    if parse_version(version) < parse_version(OLDEST_SUPPORTED):
        diag.problems.append(
            f"openai {version} is older than {OLDEST_SUPPORTED}; nothing is tracked; fix: {fix}"
        )
        return None
    if is_newer_than_verified(version):
        facts["newer_than_verified"] = True
        diag.warnings.append(
            f"openai {version} is newer than {VERIFIED_UP_TO}, the newest release the table was verified on; "
            "rows still open are tried, and any that did not resolve is listed below"
        )
    return version


def _target_facts(diag: Diagnosis) -> None:
    from . import patching

    rows: list[dict[str, Any]] = []
    try:
        if not patching.is_patched():
            patching.install()  # wrap the classes without a recorder: nothing is sent, the status is real
        patching.resolve_all_targets()
        rows = patching.patch_status()
    except Exception as exc:
        diag.problems.append(f"resolving the patch table failed: {type(exc).__name__}: {exc}")
    diag.data["targets"] = rows
    for row in rows:
        if row["status"] == "missing":
            diag.problems.append(f"{row['module']}:{row['method']} is not patched: {row['detail']}")


def _settings_facts(diag: Diagnosis) -> Any:
    from .config import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        diag.data["settings"] = None
        diag.problems.append(f"configuration: {exc}")
        return None
    diag.data["settings"] = settings.describe()
    return settings


def _exporter_facts(diag: Diagnosis, settings: Any) -> None:
    if settings is None:
        diag.data["exporter"] = None
        return
    name = settings.exporter
    info: dict[str, Any] = {"name": name}
    if name == "http":
        info["destination"] = settings.endpoint
    elif name == "jsonl":
        info["destination"] = os.path.abspath(settings.jsonl_path)
        parent = os.path.dirname(info["destination"]) or os.curdir
        if not os.access(parent, os.W_OK):
            diag.problems.append(f"the jsonl exporter cannot write to {parent} (not writable)")
        if not settings.api_key:
            diag.warnings.append(
                "no CMDRDATA_API_KEY: events are kept locally in the JSONL file "
                "(see `cmdrdata-autopatch report`)"
            )
    elif name == "console":
        info["destination"] = "stderr"
    else:
        info["destination"] = None
        diag.warnings.append(f"exporter {name!r}: events are not delivered anywhere")
    diag.data["exporter"] = info


def check_endpoint(endpoint: str, api_key: str, timeout: float) -> dict[str, Any]:
    """One GET to the events endpoint with the key: does it answer, and does it accept the key?

    A GET carries no event, so nothing is recorded or billed. Any HTTP answer proves the endpoint is
    reachable; 401/403 mean the key is refused, 5xx that the service is failing.
    """
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        endpoint,
        method="GET",
        headers={
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"cmdrdata-autopatch/{__version__} doctor",
        },
    )
    status: int | None = None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
    except Exception as exc:
        from .diagnostics import redact

        reason = getattr(exc, "reason", exc)
        return {"checked": True, "ok": False, "status": None, "detail": redact(f"no answer: {reason}")}
    if status in (401, 403):
        return {
            "checked": True,
            "ok": False,
            "status": status,
            "detail": f"answers, but refuses the API key ({status})",
        }
    if status >= 500:
        return {
            "checked": True,
            "ok": False,
            "status": status,
            "detail": f"answers with a server error ({status})",
        }
    return {"checked": True, "ok": True, "status": status, "detail": f"answers ({status})"}


def _endpoint_facts(diag: Diagnosis, settings: Any, timeout: float, skip: bool) -> None:
    if settings is None or settings.exporter != "http" or not settings.api_key:
        diag.data["endpoint_check"] = {
            "checked": False,
            "ok": None,
            "status": None,
            "detail": "no http exporter",
        }
        return
    if skip:
        diag.data["endpoint_check"] = {"checked": False, "ok": None, "status": None, "detail": "skipped"}
        return
    result = check_endpoint(settings.endpoint, settings.api_key, timeout)
    diag.data["endpoint_check"] = result
    if not result["ok"]:
        diag.problems.append(f"endpoint {settings.endpoint}: {result['detail']}")


def _activation_facts(diag: Diagnosis) -> None:
    from .patching import is_patched

    pth = installed_pth_files()
    diag.data["activation"] = {
        "pth_files": pth,
        "bootstrap_dir": bootstrap_dir(),
        "CMDRDATA_AUTOPATCH": os.environ.get("CMDRDATA_AUTOPATCH"),
        "CMDRDATA_DISABLED": os.environ.get("CMDRDATA_DISABLED"),
        "patched_in_this_process": is_patched(),
    }
    if not pth:
        diag.warnings.append(
            f"{PTH_NAME} is not in this Python's site-packages: CMDRDATA_AUTOPATCH=1 alone does nothing here "
            "(use cmdrdata-run or patch(); reinstall the package to restore it)"
        )


def diagnose(timeout: float = 3.0, skip_endpoint: bool = False) -> Diagnosis:
    """Everything `doctor` reports, as data (used by `--json` and by the text output)."""
    diag = Diagnosis()
    diag.data["cmdrdata_autopatch"] = __version__
    diag.data["python"] = f"{sys.version.split()[0]} ({sys.executable})"
    if _openai_facts(diag) is not None:
        _target_facts(diag)
    else:
        diag.data["targets"] = []
    settings = _settings_facts(diag)
    _exporter_facts(diag, settings)
    _endpoint_facts(diag, settings, timeout, skip_endpoint)
    _activation_facts(diag)
    return diag


def _print_diagnosis(diag: Diagnosis) -> None:
    data = diag.data
    openai_info = data["openai"]
    print(f"cmdrdata-autopatch {data['cmdrdata_autopatch']} on Python {data['python']}")
    newer = " (newer than verified)" if openai_info["newer_than_verified"] else ""
    version = openai_info["version"] or "not usable"
    print(f"openai: {version}{newer}; table verified up to {openai_info['verified_up_to']}")
    if data["targets"]:
        print("\npatch table:")
        _print_table(
            ["target", "api", "status", "detail"],
            [[f"{r['module']}:{r['method']}", r["api"], r["status"], r["detail"]] for r in data["targets"]],
        )
    print("\nconfiguration:")
    if data["settings"] is None:
        print("  (invalid, see problems)")
    else:
        for key, value in data["settings"].items():
            print(f"  {key:<15} {value}")
    exporter = data["exporter"]
    if exporter is not None:
        print(f"\nexporter: {exporter['name']} -> {exporter['destination']}")
    check = data["endpoint_check"]
    print(f"endpoint check: {check['detail']}")
    activation = data["activation"]
    print(f"zero-code .pth: {', '.join(activation['pth_files']) or 'not installed'}")
    for warning in diag.warnings:
        print(f"\nwarning: {warning}")
    for problem in diag.problems:
        print(f"\nPROBLEM: {problem}")
    print("\nOK: no problems found" if not diag.problems else f"\n{len(diag.problems)} problem(s) found")


def doctor_main(argv: Sequence[str], prog: str) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Check the installation: openai version, patch table, configuration, exporter, endpoint.",
        epilog="Exit status: 0 no problem found (warnings allowed), 1 problems found, 2 bad option.",
    )
    parser.add_argument("--json", action="store_true", help="print the findings as one JSON object")
    parser.add_argument("--timeout", type=float, default=3.0, help="endpoint check timeout in seconds (3)")
    parser.add_argument("--no-network", action="store_true", help="skip the endpoint check")
    args = parser.parse_args(list(argv))
    diag = diagnose(timeout=args.timeout, skip_endpoint=args.no_network)
    if args.json:
        print(json.dumps(diag.as_json(), indent=2, default=str))
    else:
        _print_diagnosis(diag)
    return EXIT_OK if not diag.problems else EXIT_PROBLEM


# ------------------------------------------------------------------------------------------------- report

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "total_tokens")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass
class UsageTotals:
    """Calls and tokens of one group (a customer, a model, or everything)."""

    calls: int = 0
    errors: int = 0
    estimated: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_FIELDS, 0))

    def add(self, event: Mapping[str, Any]) -> None:
        self.calls += 1
        self.errors += 1 if event.get("error_occurred") else 0
        self.estimated += 1 if event.get("usage_source") == "estimated" else 0
        for name in TOKEN_FIELDS:
            self.tokens[name] += _int(event.get(name))

    def as_json(self) -> dict[str, Any]:
        return {"calls": self.calls, "errors": self.errors, "estimated": self.estimated, **self.tokens}


def read_events(path: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The events in a JSONL file, each `event_id` once; a torn last line (writer killed mid-line) is skipped.

    Returns the events and counts of what was skipped: `torn_last_line`, `bad_lines` (undecodable lines
    elsewhere), `duplicates` (an id seen before, e.g. written again after a replay).
    """
    with open(path, "rb") as handle:
        raw = handle.read()
    lines = raw.split(b"\n")
    skipped = {"torn_last_line": 0, "bad_lines": 0, "duplicates": 0}
    events: list[dict[str, Any]] = []
    seen: set[str] = set()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            item = None
        if isinstance(item, dict) and isinstance(item.get("event"), dict):
            item = item["event"]
        if not isinstance(item, dict):
            skipped["torn_last_line" if index == last else "bad_lines"] += 1
            continue
        event_id = item.get("event_id")
        if isinstance(event_id, str):
            if event_id in seen:
                skipped["duplicates"] += 1
                continue
            seen.add(event_id)
        events.append(item)
    return events, skipped


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
        ordered = sorted(groups.items(), key=lambda kv: (-kv[1].tokens["total_tokens"], -kv[1].calls, kv[0]))
        return [{key: name, **group.as_json()} for name, group in ordered]

    return {
        "by_customer": rows(by_customer, "customer_id"),
        "by_model": rows(by_model, "model"),
        "totals": totals.as_json(),
    }


def _print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 99) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        parts = [
            cell.rjust(widths[i]) if i >= numeric_from else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        print("  " + "  ".join(parts).rstrip())
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _print_usage(title: str, key: str, rows: list[dict[str, Any]], totals: dict[str, Any]) -> None:
    header = [title, "calls", "errors", "input", "output", "cached", "reasoning", "total"]
    body = [
        [
            r[key],
            r["calls"],
            r["errors"],
            r["input_tokens"],
            r["output_tokens"],
            r["cached_input_tokens"],
            r["reasoning_tokens"],
            r["total_tokens"],
        ]
        for r in rows
    ]
    body.append(
        [
            "TOTAL",
            totals["calls"],
            totals["errors"],
            totals["input_tokens"],
            totals["output_tokens"],
            totals["cached_input_tokens"],
            totals["reasoning_tokens"],
            totals["total_tokens"],
        ]
    )
    _print_table(header, body, numeric_from=1)


def default_report_path(environ: Mapping[str, str] | None = None) -> str:
    """Where the jsonl exporter writes by default: `CMDRDATA_JSONL_PATH`, else ./cmdrdata-usage.jsonl."""
    from .config import DEFAULT_JSONL_PATH

    env = os.environ if environ is None else environ
    return env.get("CMDRDATA_JSONL_PATH", "").strip() or DEFAULT_JSONL_PATH


def report_main(argv: Sequence[str], prog: str) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Summarize the local usage file written by the jsonl exporter: calls and input / output / "
            "cached / reasoning tokens per customer and per model, with totals."
        ),
        epilog="Exit status: 0 report printed (also when the file holds no events), "
        "1 file missing or unreadable, 2 bad option.",
    )
    parser.add_argument(
        "file", nargs="?", help="the JSONL file (default: $CMDRDATA_JSONL_PATH, else ./cmdrdata-usage.jsonl)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(list(argv))
    path = args.file or default_report_path()
    try:
        events, skipped = read_events(path)
    except OSError as exc:
        hint = (
            ""
            if args.file
            else " (run your program with CMDRDATA_EXPORTER=jsonl, the default without an API key)"
        )
        _error(prog, f"cannot read {path}: {exc.strerror or exc}{hint}")
        return EXIT_PROBLEM
    summary = summarize(events)
    if skipped["bad_lines"]:
        _error(prog, f"warning: {skipped['bad_lines']} undecodable line(s) in {path} were skipped")
    if args.json:
        print(
            json.dumps(
                {"file": os.path.abspath(path), "events": len(events), "skipped": skipped, **summary},
                indent=2,
            )
        )
        return EXIT_OK
    print(f"usage from {os.path.abspath(path)}: {len(events)} event(s)")
    if skipped["torn_last_line"]:
        print("(an incomplete last line was skipped: the writer was still writing or was stopped mid-line)")
    if not events:
        return EXIT_OK
    print("\nby customer:")
    _print_usage("customer", "customer_id", summary["by_customer"], summary["totals"])
    print("\nby model:")
    _print_usage("model", "model", summary["by_model"], summary["totals"])
    estimated = summary["totals"]["estimated"]
    if estimated:
        print(f"\n{estimated} call(s) had no usage reported by OpenAI; their tokens are estimates.")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """`cmdrdata-autopatch {run,doctor,report}` (console script)."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="cmdrdata-autopatch",
        description="Per-customer usage metering for every OpenAI call in a process.",
        epilog=(
            "commands: run (same as cmdrdata-run), doctor (check the installation), "
            "report (summarize the local usage file). 'cmdrdata-autopatch COMMAND --help' for each."
        ),
    )
    parser.add_argument("--version", action="version", version=f"cmdrdata-autopatch {__version__}")
    parser.add_argument("command", choices=["run", "doctor", "report"])
    parser.add_argument("args", nargs=argparse.REMAINDER)
    if not args or args[0] not in ("run", "doctor", "report"):
        parser.parse_args(args)  # prints help / version / the error, and exits
        return EXIT_USAGE  # pragma: no cover
    command, rest = args[0], args[1:]
    prog = f"cmdrdata-autopatch {command}"
    if command == "run":
        return run_main(rest, prog=prog)
    if command == "doctor":
        return doctor_main(rest, prog)
    return report_main(rest, prog)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
