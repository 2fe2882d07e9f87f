"""The patching mechanism: wrap the table's resource methods in place, on the classes, and put them back.

`control.py` decides when (it owns `patch()` / `unpatch()`); this module knows how: post-import hooks,
wrapping and unwrapping rows, and the status of every row.

Patching the classes (not client instances) covers every client: made before or after `patch()`, sync and
async, Azure, the module-level `openai.chat...` client, and subclasses like the drop-in `TrackedOpenAI`.

Nothing is imported eagerly. `patch()` registers a wrapt post-import hook on `openai`; when `openai` is
imported (at once if it already is), the rows for its version are selected from the table and each target
module gets its own post-import hook. From openai 1.78 resource modules load lazily, so a module is patched
at the moment the application first touches that resource, and `patch()` never imports a resource module
the application does not use.

Below the resource methods, the safety net (`net.py`) wraps the SDK client's own `request` method on its
two base classes, so a billable request that no resource wrapper observed is still billed.

`uninstall()` puts back the exact objects that were in each class's `__dict__`. Both are idempotent and
thread-safe; install -> uninstall -> install works.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import wrapt

from .deprecation import warn_at_callers
from .diagnostics import report_internal_error
from .net import make_net_wrappers
from .objects import make_object_wrappers
from .runtime import RUNTIME
from .sessions import hook_connection_classes, make_connect_wrappers
from .targets import (
    NET_METHODS,
    NET_MODULE,
    TARGETS,
    Target,
    billable_paths,
    is_newer_than_verified,
    parse_version,
    targets_for,
)
from .wrappers import make_wrappers

logger = logging.getLogger("cmdrdata_autopatch")

_lock = threading.RLock()


@dataclass
class _Applied:
    cls: type
    name: str
    original: Any  # exactly what was in cls.__dict__ (or None when the method was inherited)
    wrapper: Any


class _Registry:
    """What is wrapped right now, and which hooks exist (hooks cannot be removed, so they check `active`)."""

    def __init__(self) -> None:
        self.active = False  # is the class-level instrumentation wanted?
        self.owners: weakref.WeakSet[Any] = weakref.WeakSet()  # live drop-in clients that need the wrappers
        self.applied: dict[str, _Applied] = {}  # "module:Class.method" -> what we did
        self.hooked_modules: set[str] = set()
        self.openai_hooked = False
        self.openai_version: str | None = None
        self.problems: dict[str, str] = {}  # row key -> why it is not patched


_registry = _Registry()


def _is_ours(obj: Any) -> bool:
    return isinstance(obj, wrapt.FunctionWrapper) and getattr(obj, "_self_cmdrdata", False)


def _wrap_method(cls: type, name: str, wrapper_fn: Any, key: str) -> bool:
    current = cls.__dict__.get(name)
    if current is None:
        inherited = getattr(cls, name, None)
        if inherited is None:
            return False
        original = None
        to_wrap = inherited
    else:
        if _is_ours(current):
            return True
        original = current
        to_wrap = current
    wrapper = wrapt.FunctionWrapper(to_wrap, wrapper_fn)
    setattr(wrapper, "_self_cmdrdata", True)  # noqa: B010 - a proxy attribute wrapt keeps on the wrapper
    setattr(cls, name, wrapper)
    _registry.applied[key] = _Applied(cls, name, original, wrapper)
    return True


def _apply_row(module: ModuleType, row: Target) -> None:
    if row.kind == "object":
        sync_fn, async_fn = make_object_wrappers(row, RUNTIME)
    else:
        sync_fn, async_fn = (
            make_connect_wrappers(row) if row.kind == "connect" else make_wrappers(row, RUNTIME)
        )
    sync_fn, async_fn = warn_at_callers(row, sync_fn, async_fn)
    problems = []
    for class_name, wrapper_fn in ((row.class_name, sync_fn), ("Async" + row.class_name, async_fn)):
        key = f"{row.module}:{class_name}.{row.method_name}"
        if key in _registry.applied:
            continue
        try:
            cls = getattr(module, class_name, None)
        except Exception as exc:  # a lazy export that fails to import
            cls = None
            problems.append(f"{class_name}: {type(exc).__name__}")
        if not isinstance(cls, type):
            problems.append(f"{class_name} not found")
            continue
        if not _wrap_method(cls, row.method_name, wrapper_fn, key):
            problems.append(f"{class_name}.{row.method_name} not found")
    if row.kind == "connect":
        problems += hook_connection_classes(module, row, _wrap_method)
    if problems:
        _registry.problems[row.key] = "; ".join(problems)
        logger.debug("cmdrdata-autopatch: %s not patched: %s", row.key, _registry.problems[row.key])
    else:
        _registry.problems.pop(row.key, None)


def _apply_net(version: str) -> None:
    """Wrap the SDK client's `request` on its sync and async base classes (the safety net)."""
    module = sys.modules.get(NET_MODULE)
    if module is None:  # imported by `import openai` in every release; never imported by us otherwise
        _registry.problems[NET_MODULE] = "module not imported"
        return
    sync_fn, async_fn = make_net_wrappers(RUNTIME, billable_paths(version))
    for (class_name, method), wrapper_fn in zip(NET_METHODS, (sync_fn, async_fn)):
        key = f"{NET_MODULE}:{class_name}.{method}"
        cls = getattr(module, class_name, None)
        if key in _registry.applied:
            continue
        if not isinstance(cls, type) or not _wrap_method(cls, method, wrapper_fn, key):
            _registry.problems[key] = f"{class_name}.{method} not found"
            logger.debug("cmdrdata-autopatch: safety net %s not installed", key)


def _on_target_module(module: ModuleType) -> None:
    """Post-import hook of one target module: wrap its rows (if patching is on)."""
    with _lock:
        if not _registry.active or _registry.openai_version is None:
            return
        for row in targets_for(_registry.openai_version):
            if row.module == module.__name__:
                try:
                    _apply_row(module, row)
                except Exception as exc:
                    report_internal_error(f"patch {row.key}", exc)


def _on_openai(module: ModuleType) -> None:
    """Post-import hook of `openai` itself: learn the version, then hook each target module."""
    with _lock:
        if not _registry.active:
            return
        try:
            version = str(getattr(module, "__version__", "0"))
            if parse_version(version) < (1, 0, 0):
                logger.warning(
                    "cmdrdata-autopatch: openai %s is too old; nothing is tracked. "
                    "Fix: pip install -U 'openai>=1.0.0'",
                    version,
                )
                return
            if _registry.openai_version is None:
                RUNTIME.configure_openai_types(version)
                _registry.openai_version = version
                if is_newer_than_verified(version):
                    logger.debug("cmdrdata-autopatch: openai %s is newer than the verified table", version)
            modules = sorted({row.module for row in targets_for(version)})
            _apply_net(version)
        except Exception as exc:
            report_internal_error("openai import hook", exc)
            return
    for name in modules:
        if name in sys.modules:
            _on_target_module(sys.modules[name])
        if name not in _registry.hooked_modules:
            _registry.hooked_modules.add(name)
            wrapt.register_post_import_hook(_on_target_module, name)


def install(owner: Any = None) -> None:
    """Wrap the resource classes (idempotent). Events go to `RUNTIME.recorder` or a client's own recorder.

    A drop-in client passes itself as `owner`: while it lives, `unpatch()` keeps the wrappers in place
    (its calls still need them) and only turns process-wide tracking off.
    """
    with _lock:
        if owner is not None:
            _registry.owners.add(owner)
            RUNTIME.dropins = True  # from now on each call checks its client for its own tracker
        _registry.active = True
        if not _registry.openai_hooked:
            _registry.openai_hooked = True
            wrapt.register_post_import_hook(_on_openai, "openai")
        elif "openai" in sys.modules:
            _on_openai(sys.modules["openai"])


def uninstall() -> bool:
    """Restore every wrapped method to the exact original object; False (nothing restored) while a
    drop-in `TrackedOpenAI` client is alive, because its calls still need the wrappers."""
    with _lock:
        if len(_registry.owners):
            import gc

            gc.collect()  # drop-in clients that are only waiting for the cycle collector do not count
        if len(_registry.owners):
            logger.debug("cmdrdata-autopatch: unpatch() keeps the wrappers for live drop-in clients")
            return False
        _registry.active = False
        for applied in _registry.applied.values():
            current = applied.cls.__dict__.get(applied.name)
            if current is not applied.wrapper:
                # someone wrapped on top of us: leave their wrapper, ours passes through (recorder None)
                logger.debug(
                    "cmdrdata-autopatch: %s.%s was re-wrapped by another library", applied.cls, applied.name
                )
                continue
            if applied.original is None:
                delattr(applied.cls, applied.name)
            else:
                setattr(applied.cls, applied.name, applied.original)
        _registry.applied.clear()
        _registry.problems.clear()
        return True


def is_patched() -> bool:
    """True while process-wide tracking (`patch()`) is in force: the wrappers have a global recorder."""
    return RUNTIME.recorder is not None


def patch_status() -> list[dict[str, Any]]:
    """Every table row and what happened to it on the installed `openai` (for `doctor` and tests).

    status: `patched`, `pending` (in range; its module is not imported yet: patched when it is),
    `not in this version` (outside the row's range), `missing` (in range but not found: see `detail`),
    or `openai not imported`.
    """
    version = _registry.openai_version
    if version is None and "openai" in sys.modules:
        version = str(getattr(sys.modules["openai"], "__version__", "")) or None
    rows = []
    for row in TARGETS:
        keys = [f"{row.module}:{row.attr}", f"{row.module}:{row.async_attr}"]
        if version is None:
            status, detail = "openai not imported", ""
        elif not row.covers(version):
            status, detail = "not in this version", f"{row.first} .. {row.last or 'current'}"
        elif all(k in _registry.applied for k in keys):
            status, detail = "patched", ""
        elif row.key in _registry.problems:
            status, detail = "missing", _registry.problems[row.key]
        else:
            status, detail = "pending", "module not imported yet"
        rows.append(
            {
                "module": row.module,
                "method": row.attr,
                "api": row.api,
                "first": row.first,
                "last": row.last,
                "status": status,
                "detail": detail,
            }
        )
    return rows


def resolve_all_targets() -> None:
    """Import every in-range target module now, so `patch_status()` is definitive (used by `doctor`)."""
    import importlib

    if "openai" not in sys.modules:
        importlib.import_module("openai")
    version = _registry.openai_version or str(getattr(sys.modules["openai"], "__version__", "0"))
    for name in sorted({row.module for row in targets_for(version)}):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            for row in targets_for(version):
                if row.module == name:
                    _registry.problems[row.key] = f"module not importable ({exc})"
