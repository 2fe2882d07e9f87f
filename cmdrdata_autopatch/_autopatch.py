"""Start-up activation shared by every zero-code route.

Two routes end here: the one line in `cmdrdata_autopatch.pth` (site-packages, only when
`CMDRDATA_AUTOPATCH` is set) and the `sitecustomize` that `cmdrdata-run` puts on `PYTHONPATH`. Under
`cmdrdata-run` both fire in the same process, so `activate()` runs once per process and later calls only
report what the first one did. (A site-wide `sitecustomize` copied from `sitecustomize_example/` does not
come here: it calls `cmdrdata_autopatch.patch()` itself, with its own warning line.)

Start-up code must never stop the program it instruments: any failure (a bad `CMDRDATA_*` value, a broken
install) becomes one warning line on stderr naming the problem, and the program runs untracked.
`CMDRDATA_DISABLED=1` wins over everything, checked before anything else is imported.
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


def activate(route: str) -> bool:
    """Turn tracking on for this process, once. Returns True when tracking is on.

    `route` names the mechanism ("pth", "cmdrdata-run", "sitecustomize") for the warning line only.
    """
    if _outcome[0] is not None:
        return _outcome[0]
    _outcome[0] = False
    if _flag("CMDRDATA_DISABLED"):
        return False
    try:
        from .control import is_patched, patch, switch

        switch.at_startup = True
        patch()
        _outcome[0] = is_patched()
    except Exception as exc:
        warn(
            f"usage tracking is OFF in this process (started by {route}): {exc} "
            f"[{type(exc).__name__}]; the program continues untracked"
        )
    return bool(_outcome[0])
