"""Run by Python at start-up in every process launched under `cmdrdata-run` (it is first on PYTHONPATH).

Two jobs, in this order, neither allowed to stop the program:
1. turn tracking on (`cmdrdata_autopatch._autopatch.activate`, which honours `CMDRDATA_DISABLED`);
2. run the user's own `sitecustomize`, if there is one, which ours would otherwise hide: our directory is
   taken off `sys.path` (for good, in this process; `PYTHONPATH` keeps it for child processes), our module
   leaves `sys.modules`, and `import sitecustomize` then finds the next one. Our directory is gone from
   `sys.path`, so the search cannot find this file again: no recursion, even when `cmdrdata-run` is nested.

Only the standard library is imported here before the activation call, so a Python that does not have
cmdrdata-autopatch installed (a different interpreter started by the program) just prints one warning.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _same_dir(entry: str) -> bool:
    try:
        return os.path.abspath(entry or os.curdir) == _HERE
    except Exception:
        return False


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"cmdrdata-autopatch: warning: {message}\n")
    except Exception:
        pass


def _activate() -> None:
    if os.environ.get("CMDRDATA_DISABLED", "").strip().lower() in ("1", "true", "yes", "on"):
        return
    try:
        from cmdrdata_autopatch._autopatch import activate
    except Exception as exc:
        _warn(
            f"cmdrdata-autopatch cannot be imported in this Python ({sys.executable}): "
            f"{type(exc).__name__}: {exc}; this process is not tracked"
        )
        return
    activate("cmdrdata-run")


def _chain_user_sitecustomize() -> None:
    ours = sys.modules.get(__name__)
    sys.path[:] = [entry for entry in sys.path if not _same_dir(entry)]
    if sys.modules.get("sitecustomize") is ours:
        del sys.modules["sitecustomize"]
    try:
        import sitecustomize  # noqa: F401  # the user's, now that ours is out of the way
    except ImportError as exc:
        if exc.name != "sitecustomize":  # theirs exists but failed inside: say so, as site.py would
            _warn(f"error in your sitecustomize: {type(exc).__name__}: {exc}")
        elif ours is not None:
            sys.modules["sitecustomize"] = ours  # there is none: leave ours where site.py put it
    except Exception as exc:
        _warn(f"error in your sitecustomize: {type(exc).__name__}: {exc}")


if __name__ == "sitecustomize":  # not when imported by name as cmdrdata_autopatch._bootstrap.sitecustomize
    _activate()
    _chain_user_sitecustomize()
