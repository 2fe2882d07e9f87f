"""Deprecated SDK methods: their warning names the application's line, not our wrapper's frame.

The SDK marks deprecated methods with `@deprecated` (PEP 702 / typing_extensions), whose warning names the
frame that called the method: once the method is wrapped, that frame is ours. For every row kind,
`patching.py` passes the wrapper functions through `warn_at_callers`: a deprecated method's wrapper issues
the SDK's own warning at the application's line and then runs on the undecorated method, so the SDK does
not warn a second time. No global warning state is touched (thread-safe), and `-W error` still raises at
the caller, as without us.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable

from .targets import Target

Wrapper = Callable[..., Any]  # wrapt's (wrapped, instance, args, kwargs) -> result


def _deprecation(target: Target, class_name: str) -> tuple[str, type[Warning]] | None:
    """(message, category) when the SDK marks `class_name.method` deprecated with `@deprecated` (PEP 702,
    typing_extensions): its warning would name our wrapper's frame as the culprit, so we issue it instead."""
    module = sys.modules.get(target.module)
    cls = getattr(module, class_name, None) if module is not None else None
    method = getattr(cls, "__dict__", {}).get(target.method_name)
    code = getattr(method, "__code__", None)
    if getattr(method, "__deprecated__", None) is None or getattr(method, "__wrapped__", None) is None:
        return None
    closure = getattr(method, "__closure__", None) or ()
    cells = dict(zip(code.co_freevars, closure)) if code is not None else {}
    try:  # the decorator's closure: (msg, category, stacklevel, arg); anything else is not touched
        message, category = cells["msg"].cell_contents, cells["category"].cell_contents
    except (KeyError, ValueError):
        return None
    if not isinstance(message, str) or not (isinstance(category, type) and issubclass(category, Warning)):
        return None
    return message, category


def _caller_stacklevel() -> int:
    """The `stacklevel` that names the frame calling the patched method: 2 under wrapt's C extension; one
    more per frame of pure-Python wrapt (WRAPT_DISABLE_EXTENSIONS) between that caller and us."""
    frame: Any = sys._getframe(2)  # 0: here, 1: deprecated_wrapper, 2: whoever called it
    level = 2
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("wrapt"):
        frame = frame.f_back
        level += 1
    return level


def _warn_at_caller(wrapper: Wrapper, message: str, category: type[Warning]) -> Wrapper:
    """Issue the SDK's deprecation warning at the caller's line, then run `wrapper` on the undecorated
    method (so the SDK does not warn a second time from our frame). No global warning state is touched:
    safe with threads, and a `-W error` filter still raises at the caller, as without us."""

    def deprecated_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        inner = getattr(wrapped, "__wrapped__", None)
        if inner is None or instance is None:
            return wrapper(wrapped, instance, args, kwargs)
        warnings.warn(message, category, stacklevel=_caller_stacklevel())
        return wrapper(inner.__get__(instance, type(instance)), instance, args, kwargs)

    return deprecated_wrapper


def warn_at_callers(target: Target, sync_fn: Wrapper, async_fn: Wrapper) -> tuple[Wrapper, Wrapper]:
    """The row's (sync, async) wrappers, each re-issuing its method's deprecation warning, if it has one."""
    sync_dep = _deprecation(target, target.class_name)
    async_dep = _deprecation(target, "Async" + target.class_name)
    if sync_dep is not None:
        sync_fn = _warn_at_caller(sync_fn, *sync_dep)
    if async_dep is not None:
        async_fn = _warn_at_caller(async_fn, *async_dep)
    return sync_fn, async_fn
