"""Command line: the `cmdrdata-run` launcher and the `cmdrdata-autopatch` dispatcher.

`cmdrdata-run [options] COMMAND ARGS...` works like `ddtrace-run` / `opentelemetry-instrument`: it puts
`cmdrdata_autopatch/_bootstrap` (which holds a `sitecustomize.py`) first on `PYTHONPATH`, sets
`CMDRDATA_AUTOPATCH=1` and `exec`s the command. Every Python process started from there on (the command, a
`python -m` module, gunicorn and its workers, the program's own subprocesses) runs that `sitecustomize` at
start-up and tracks its OpenAI calls. The launcher replaces itself with the command (no extra parent process,
signals and the exit status are the program's own), so it adds nothing at run time.

`cmdrdata-autopatch COMMAND` (also `python -m cmdrdata_autopatch COMMAND`) runs one of `SUBCOMMANDS`; each
lives in its own module (`doctor.py`, `report.py`, ...) and is imported only when it is the one asked for.

Exit codes, for scripts:

- `cmdrdata-run`: the program's own status; 127 no command or command not found, 126 not executable,
  2 bad option (an option's value is checked like the variable it sets, before the command starts);
  with `--info`, 0 when the configuration is valid, 1 when it is not.
- `cmdrdata-autopatch doctor`: 0 no problem found (warnings allowed), 1 at least one problem, 2 bad option.
- `cmdrdata-autopatch report`: 0 report printed (also for an empty file), 1 file missing or unreadable,
  2 bad option.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Callable, NamedTuple

from ._cmdline import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    PTH_NAME,
    ArgumentParser,
    bootstrap_dir,
    error,
    installed_pth_files,
    silence_stdout,
    write_stdout,
)
from ._version import __version__

__all__ = [
    "EXIT_NOT_EXECUTABLE",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "EXIT_USAGE",
    "PTH_NAME",
    "SUBCOMMANDS",
    "bootstrap_dir",
    "installed_pth_files",
    "launch_env",
    "main",
    "run_main",
]

# launcher option -> environment variable it sets for the command
RUN_OPTIONS = {
    "api_key": "CMDRDATA_API_KEY",
    "endpoint": "CMDRDATA_ENDPOINT",
    "customer_id": "CMDRDATA_CUSTOMER_ID",
    "exporter": "CMDRDATA_EXPORTER",
    "jsonl_path": "CMDRDATA_JSONL_PATH",
}


# --------------------------------------------------------------------------------------------- cmdrdata-run


def _run_parser(prog: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(
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
    parser.add_argument(
        "--exporter",
        help="http | jsonl | console | otlp | memory | none, or a list: http,otlp (CMDRDATA_EXPORTER)",
    )
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


def check_options(options: Mapping[str, str | None]) -> str | None:
    """The launcher's own options, checked with the same rules as the variables they set, before anything
    runs: a bad one is the launcher's usage error (exit 2), never a program started untracked."""
    from .config import SETTINGS_TABLE, ConfigError, check_jsonl_path

    for row in SETTINGS_TABLE:
        value = options.get(row.key)
        if row.key not in RUN_OPTIONS or value is None:
            continue
        source = "--" + row.key.replace("_", "-")
        try:
            row.parse(source, value)
            if row.key == "jsonl_path":
                check_jsonl_path(value, source)
        except ConfigError as exc:
            return str(exc)
    return None


def _info(env: Mapping[str, str], command: Sequence[str]) -> int:
    """`--info`: what the command would run with (key masked); 1 when the configuration is invalid."""
    from .config import ConfigError, env_flag, load_settings

    lines = [
        f"cmdrdata-autopatch {__version__}",
        f"command:     {' '.join(command) if command else '(none)'}",
        f"PYTHONPATH:  {env['PYTHONPATH']}",
    ]
    if env_flag("CMDRDATA_DISABLED", env):
        lines.append("CMDRDATA_DISABLED is set: the command would run untracked")
    code = EXIT_OK
    try:
        settings = load_settings(environ=env)
    except ConfigError as exc:
        lines.append(f"configuration error: {exc}")
        code = EXIT_PROBLEM
    else:
        lines.extend(f"  {key:<15} {value}" for key, value in settings.describe().items())
        lines.extend(f"warning: {note}" for note in settings.notes)
    write_stdout("\n".join(lines) + "\n")
    return code


def _exec(prog: str, command: Sequence[str], env: dict[str, str]) -> int:
    """Replace this process with `command` (like a shell: 127 not found, 126 not executable)."""
    name = command[0]
    if os.sep in name or (os.altsep and os.altsep in name):
        if not os.path.exists(name):
            error(prog, f"{name}: no such file or directory")
            return EXIT_NOT_FOUND
        path = name
    else:
        found = shutil.which(name, path=env.get("PATH", os.defpath))
        if found is None:
            error(prog, f"{name}: command not found")
            return EXIT_NOT_FOUND
        path = found
    if not os.access(path, os.X_OK) or os.path.isdir(path):
        error(prog, f"{name}: permission denied (not an executable file)")
        return EXIT_NOT_EXECUTABLE
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if os.name == "nt":  # no real exec on Windows: run it and hand back its status
            import subprocess

            return subprocess.call([path, *command[1:]], env=env)
        os.execve(path, list(command), env)
    except OSError as exc:
        error(prog, f"{name}: {exc.strerror or exc}")
        return EXIT_NOT_EXECUTABLE if exc.errno == 13 else EXIT_NOT_FOUND
    return EXIT_OK  # pragma: no cover - execve does not return


def run_main(argv: Sequence[str] | None = None, prog: str = "cmdrdata-run") -> int:
    """`cmdrdata-run [options] COMMAND ARGS...` (console script). Returns only on error or `--info`."""
    args = _run_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    command: list[str] = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    options = {key: getattr(args, key) for key in RUN_OPTIONS}
    problem = check_options(options)
    if problem is not None:
        error(prog, problem)
        return EXIT_USAGE
    env = launch_env(options)
    if args.info:
        return _info(env, command)
    if not command:
        error(prog, "no command given; usage: cmdrdata-run [options] COMMAND ARGS... (e.g. python app.py)")
        return EXIT_NOT_FOUND
    return _exec(prog, command, env)


# --------------------------------------------------------------------------------------------------- main


class Subcommand(NamedTuple):
    """Where `cmdrdata-autopatch NAME` lives: `function(argv, prog) -> exit status` in `module`."""

    module: str  # relative to this package, imported only when the subcommand is run
    function: str
    summary: str


# Adding a command is adding a row (the module is imported only when its command runs).
SUBCOMMANDS: dict[str, Subcommand] = {
    "run": Subcommand("cli", "run_main", "same as cmdrdata-run"),
    "doctor": Subcommand("doctor", "doctor_main", "check the installation"),
    "replay": Subcommand("replay", "replay_main", "deliver the spool now"),
    "report": Subcommand("report", "report_main", "usage per customer and model from the local file"),
}


def _main_parser(prog: str) -> argparse.ArgumentParser:
    listing = ", ".join(f"{name} ({row.summary})" for name, row in SUBCOMMANDS.items())
    parser = ArgumentParser(
        prog=prog,
        description="Per-customer usage metering for every OpenAI call in a process.",
        epilog=f"commands: {listing}. '{prog} COMMAND --help' for each.",
    )
    parser.add_argument("--version", action="version", version=f"cmdrdata-autopatch {__version__}")
    parser.add_argument("command", choices=list(SUBCOMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _load(row: Subcommand) -> Callable[[Sequence[str], str], int]:
    module = importlib.import_module(f"{__package__}.{row.module}")
    function: Callable[[Sequence[str], str], int] = getattr(module, row.function)
    return function


def main(argv: Sequence[str] | None = None, prog: str = "cmdrdata-autopatch") -> int:
    """`cmdrdata-autopatch COMMAND ...` (console script and `python -m cmdrdata_autopatch`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if not args or args[0] not in SUBCOMMANDS:
            _main_parser(prog).parse_args(args)  # prints help / version / the error, and exits
            return EXIT_USAGE  # pragma: no cover
        return _load(SUBCOMMANDS[args[0]])(args[1:], f"{prog} {args[0]}")
    except BrokenPipeError:  # a command's own print() into `| head`: the reader left; no traceback for it
        silence_stdout()
        return EXIT_PROBLEM


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
