"""Start-up activation shared by every zero-code route.

Two routes end here: the one line in `cmdrdata_autopatch.pth` (site-packages, only when
`CMDRDATA_AUTOPATCH` is set) and the `sitecustomize` that `cmdrdata-run` puts on `PYTHONPATH`. Under
`cmdrdata-run` both fire in the same process, so `activate()` runs once per process and later calls only
report what the first one did. (A site-wide `sitecustomize` copied from `sitecustomize_example/` does not
come here: it calls `cmdrdata_autopatch.patch()` itself, with its own warning line.)

Start-up code must never stop the program it instruments: any failure (a bad `CMDRDATA_*` value, a broken
install) becomes one warning line on stderr naming the problem, and the program runs untracked.
`CMDRDATA_DISABLED=1` wins over everything, checked before anything else is imported.

The `.pth` line also calls in when `CMDRDATA_AUTOPATCH` holds something that is neither yes nor no
(`ture`): that costs an import only for such a value, and the user learns why nothing is tracked.
"""

from __future__ import annotations

import os
import sys

_TRUE = ("1", "true", "yes", "on")

# None: not attempted yet in this process; True / False: the outcome of the first attempt.
_outcome: list[bool | None] = [None]


def _flag(name: str) -> bool:
    # The same rule as config.env_flag, repeated so the kill switch needs no import of ours.
    return os.environ.get(name, "").strip().lower() in _TRUE


def warn(message: str) -> None:
    """Write one warning line on stderr (secrets masked). Start-up code has no logging set up yet."""
    try:
        from .diagnostics import redact

        message = redact(message)
    except Exception:  # a broken install must not hide the warning itself
        pass
    try:
        sys.stderr.write(f"cmdrdata-autopatch: warning: {' '.join(message.split())}\n")
        sys.stderr.flush()
    except Exception:  # no usable stderr (pythonw, closed pipe): stay silent rather than fail start-up
        pass


def _launched_by_cmdrdata_run() -> bool:
    # the launcher puts our _bootstrap directory first on PYTHONPATH; the .pth fires before its
    # sitecustomize does, so the route that calls first is not always the one the user chose
    ours = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    return any(entry and os.path.abspath(entry) == ours for entry in entries)


def describe_route(route: str) -> str:
    """What the user did to switch tracking on, in their words (never "pth")."""
    if route == "cmdrdata-run" or _launched_by_cmdrdata_run():
        return "started with the cmdrdata-run launcher"
    if route == "pth":
        return f"switched on by CMDRDATA_AUTOPATCH={os.environ.get('CMDRDATA_AUTOPATCH', '').strip()}"
    return "switched on by sitecustomize"


def _bad_autopatch_value() -> bool:
    """`CMDRDATA_AUTOPATCH` is set to something that is neither yes nor no: warn (once) and stay off."""
    if _flag("CMDRDATA_AUTOPATCH"):
        return False
    try:
        from .config import NOTED, environment_notes

        for note in environment_notes({"CMDRDATA_AUTOPATCH": os.environ.get("CMDRDATA_AUTOPATCH", "")}):
            NOTED.add(note)
            warn(note)
    except Exception as exc:  # a broken install must not stop the program
        warn(f"CMDRDATA_AUTOPATCH is not a yes/no value ({type(exc).__name__}); tracking is off")
    return True


def activate(route: str) -> bool:
    """Turn tracking on for this process, once. Returns True when tracking is on.

    `route` names the mechanism ("pth", "cmdrdata-run", "sitecustomize"); the warning line says what the
    user did instead (`describe_route`).
    """
    if _outcome[0] is not None:
        return _outcome[0]
    _outcome[0] = False
    if _flag("CMDRDATA_DISABLED"):
        return False
    if route == "pth" and not _launched_by_cmdrdata_run() and _bad_autopatch_value():
        return False
    try:
        from .control import is_patched, patch, switch

        switch.at_startup = True
        patch()
        _outcome[0] = is_patched()
    except Exception as exc:
        warn(
            f"usage tracking is OFF in this process ({describe_route(route)}): {exc} "
            f"[{type(exc).__name__}]; the program continues untracked"
        )
    return bool(_outcome[0])
