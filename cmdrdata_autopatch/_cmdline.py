"""What the commands (`cmdrdata-run`, `doctor`, `report`) share: exit codes, output, tables, path messages.

It lives apart from `cli.py` so that `doctor` and `report` can use it without importing the dispatcher that
loads them (no import cycle), and it imports nothing from the package: any command can use it.
"""

from __future__ import annotations

import argparse
import errno
import os
import site
import sys
from collections.abc import Sequence
from typing import IO, Any

PTH_NAME = "cmdrdata_autopatch.pth"
EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


def bootstrap_dir() -> str:
    """The directory holding our `sitecustomize.py`: on the path, it turns tracking on in a Python process."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")


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


def error(prog: str, message: str) -> None:
    """One line on stderr, prefixed with the command's name (what `grep` and a person both expect)."""
    try:
        sys.stderr.write(f"{prog}: {message}\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # stderr closed too: nothing left to tell anyone
        pass


def silence_stdout(stream: IO[str] | None = None) -> None:
    """Point stdout (or `stream`) at /dev/null, so the flush at exit cannot hit the closed pipe again."""
    try:
        target = (stream or sys.stdout).fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):  # pragma: no cover - a stream without a descriptor
        return
    try:
        os.dup2(devnull, target)
    except OSError:  # pragma: no cover - nothing else to try; the message is lost either way
        pass
    finally:
        os.close(devnull)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose help, version and usage messages survive a reader that has gone (`--help | head -1`).

    Python 3.11+ argparse already drops such a message; earlier ones raise BrokenPipeError out of
    `parse_args`. Either way the exit status stays argparse's own (0 for help, 2 for a usage error).
    """

    def _print_message(self, message: str, file: Any = None) -> None:  # typeshed: SupportsWrite[str]
        try:
            super()._print_message(message, file)
        except BrokenPipeError:
            silence_stdout(file)


def write_stdout(text: str) -> bool:
    """Write the command's output at once; a reader that stopped early (`| head`) is not an error.

    Returns False when the reader had gone: the command keeps the exit status it decided on, prints no
    traceback, and the rest of its output is dropped.
    """
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        return False
    return True


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 99) -> list[str]:
    """Aligned text columns under a dashed rule; columns from `numeric_from` on are right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        parts = [
            cell.rjust(widths[i]) if i >= numeric_from else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  " + "  ".join(parts).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def blocking_ancestor(path: str) -> str | None:
    """The nearest existing ancestor of `path` when it is not a directory (a file in the way), else None.

    `open()` and `os.makedirs()` explain such a path as "Not a directory" or, worse, "File exists"; naming
    the file that is in the way tells the person what to move.
    """
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        if os.path.lexists(parent):
            return None if os.path.isdir(parent) else parent
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up


def describe_path_error(path: str, exc: OSError) -> str:
    """Why `path` cannot be used, in words that name the culprit (never just "File exists")."""
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = blocking_ancestor(path)
        if blocker is not None:
            return f"{blocker} is a file, not a directory"
    if exc.errno == errno.EISDIR or os.path.isdir(path):
        return "it is a directory, not a file"
    return str(exc.strerror or exc)
